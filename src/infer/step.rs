//! The steps of an inference plan and how each runs: one parallel region
//! per step, reading and writing whole buffers of the plan.

use crate::error::Result;
use crate::kernels::linear::{self, LinearShape};
use crate::kernels::pointwise::{
    self, Epilogue, PackedWeights, Placement, PointwiseShape, Residual,
};
use crate::kernels::pool::{self, PoolShape};
use crate::kernels::{self, Conv2dShape};
use crate::simd::relu_value;
use rayon::prelude::*;

/// One fused operation. `src`, `dst` and `residual` are value ids of the
/// plan; every buffer is NCHW for the plan's batch.
pub(super) enum Step {
    /// A 1×1 stride-1 convolution with its epilogue (bias, residual, ReLU)
    /// and output placement (concatenation part, folded shuffle).
    Pointwise {
        shape: PointwiseShape,
        weight: PackedWeights,
        bias: Vec<f32>,
        relu: bool,
        place: Placement,
        residual: Option<usize>,
        /// Whether `residual` lives in `dst`'s buffer (its last use): the
        /// kernel adds each output to the value it overwrites.
        in_place: bool,
        src: usize,
        dst: usize,
    },
    /// A spatial or strided convolution with several input channels per
    /// group: the pointwise kernel over its im2col matrix with the
    /// epilogue fused (`dst` whole), see [`pointwise::forward_unfolded`]
    /// (`cols`: its buffer for the matrix of a strided 1×1).
    Unfolded {
        shape: Conv2dShape,
        weight: PackedWeights,
        bias: Vec<f32>,
        relu: bool,
        residual: Option<usize>,
        cols: Vec<f32>,
        src: usize,
        dst: usize,
    },
    /// Any other convolution (depthwise, narrow groups, or enough images ×
    /// groups for their parallelism) through the training kernels, bias
    /// folded in, then residual and ReLU in one pass over its output, which
    /// fills `dst`.
    Conv {
        shape: Conv2dShape,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
        residual: Option<usize>,
        src: usize,
        dst: usize,
    },
    /// Max pooling of every plane.
    MaxPool {
        shape: PoolShape,
        src: usize,
        dst: usize,
    },
    /// Average pooling of one image's planes at a time (`shape.planes` is
    /// the channels of `src`) into channels `offset..` of `dst`, which has
    /// `channels` channels; ReLU after it when `relu`.
    AvgPool {
        shape: PoolShape,
        relu: bool,
        channels: usize,
        offset: usize,
        src: usize,
        dst: usize,
    },
    /// Global average pooling of `[N, C, P]` into `pooled` (`[N, C]`), then
    /// the linear classifier `[N, C] → [N, classes]`.
    Head {
        shape: LinearShape,
        plane: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        pooled: Vec<f32>,
        src: usize,
        dst: usize,
    },
}

impl Step {
    /// The value the step writes.
    pub(super) fn dst(&self) -> usize {
        match self {
            Step::Pointwise { dst, .. }
            | Step::Unfolded { dst, .. }
            | Step::Conv { dst, .. }
            | Step::MaxPool { dst, .. }
            | Step::AvgPool { dst, .. }
            | Step::Head { dst, .. } => *dst,
        }
    }

    /// The residual this step may compute in place, in the residual's
    /// buffer: a pointwise step's, unless it is also the step's input.
    pub(super) fn in_place_candidate(&self) -> Option<usize> {
        match self {
            Step::Pointwise {
                residual: Some(r),
                src,
                ..
            } if r != src => Some(*r),
            _ => None,
        }
    }

    /// Marks a [`in_place_candidate`](Self::in_place_candidate) as given
    /// the residual's buffer.
    pub(super) fn set_in_place(&mut self, yes: bool) {
        if let Step::Pointwise { in_place, .. } = self {
            *in_place = yes;
        }
    }

    /// The values the step reads.
    pub(super) fn reads(&self) -> Vec<usize> {
        match self {
            Step::Pointwise { src, residual, .. }
            | Step::Unfolded { src, residual, .. }
            | Step::Conv { src, residual, .. } => std::iter::once(*src).chain(*residual).collect(),
            Step::MaxPool { src, .. } | Step::AvgPool { src, .. } | Step::Head { src, .. } => {
                vec![*src]
            }
        }
    }

    /// What the step computes, for profiles: e.g. `pointwise 240→60 g3
    /// ×784 relu shuffled` (×784: positions per channel).
    pub(super) fn describe(&self) -> String {
        match self {
            Step::Pointwise {
                shape: s,
                relu,
                place,
                residual,
                ..
            } => {
                format!(
                    "pointwise {}→{} g{} ×{}{}{}{}",
                    s.in_channels,
                    s.out_channels,
                    s.groups,
                    s.plane,
                    if residual.is_some() { " +residual" } else { "" },
                    if *relu { " relu" } else { "" },
                    if place.row_step > 1 {
                        " shuffled"
                    } else if place.channels > s.out_channels {
                        " into concat"
                    } else {
                        ""
                    }
                )
            }
            Step::Unfolded {
                shape: s,
                relu,
                residual,
                ..
            }
            | Step::Conv {
                shape: s,
                relu,
                residual,
                ..
            } => format!(
                "conv {}×{}/{} {}→{} g{} {}×{}{}{}",
                s.kernel[0],
                s.kernel[1],
                s.stride[0],
                s.in_channels,
                s.out_channels,
                s.groups,
                s.input[0],
                s.input[1],
                if residual.is_some() { " +residual" } else { "" },
                if *relu { " relu" } else { "" }
            ),
            Step::MaxPool { shape: s, .. } => {
                format!("max_pool {}×{} {:?}", s.kernel[0], s.kernel[1], s.input)
            }
            Step::AvgPool { shape: s, .. } => format!(
                "avg_pool {}×{} {} ch {:?} into concat",
                s.kernel[0], s.kernel[1], s.planes, s.input
            ),
            Step::Head {
                shape: s, plane, ..
            } => format!(
                "global pool {plane} + linear {}→{}",
                s.in_features, s.out_features
            ),
        }
    }

    /// Runs the step: `read(id)` gives a value's data, `out` is the
    /// destination value's data.
    pub(super) fn run<'a>(
        &mut self,
        read: impl Fn(usize) -> &'a [f32],
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Step::Pointwise {
                shape,
                weight,
                bias,
                relu,
                place,
                residual,
                in_place,
                src,
                ..
            } => {
                let residual = match residual {
                    Some(_) if *in_place => Residual::InPlace,
                    Some(r) => Residual::Separate(read(*r)),
                    None => Residual::None,
                };
                let ep = Epilogue {
                    bias,
                    residual,
                    relu: *relu,
                };
                pointwise::forward(shape, read(*src), weight, ep, *place, out)
            }
            Step::Unfolded {
                shape,
                weight,
                bias,
                relu,
                residual,
                cols,
                src,
                ..
            } => {
                let ep = Epilogue {
                    bias,
                    residual: residual.map_or(Residual::None, |r| Residual::Separate(read(r))),
                    relu: *relu,
                };
                pointwise::forward_unfolded(shape, read(*src), weight, ep, out, cols)
            }
            Step::Conv {
                shape,
                weight,
                bias,
                relu,
                residual,
                src,
                ..
            } => {
                kernels::conv2d_forward(shape, read(*src), weight, Some(bias), out)?;
                finish(out, residual.map(&read), *relu);
                Ok(())
            }
            Step::MaxPool { shape, src, .. } => pool::max_forward(shape, read(*src), out, None),
            Step::AvgPool {
                shape,
                relu,
                channels,
                offset,
                src,
                ..
            } => {
                let [oh, ow] = shape.output();
                let (ip, op) = (shape.input[0] * shape.input[1], oh * ow);
                let x = read(*src);
                let per_image = shape.planes;
                for (n, image) in out.chunks_exact_mut(*channels * op).enumerate() {
                    let part = &mut image[*offset * op..][..per_image * op];
                    pool::avg_values(shape, &x[n * per_image * ip..][..per_image * ip], part)?;
                    finish(part, None, *relu);
                }
                Ok(())
            }
            Step::Head {
                shape,
                plane,
                weight,
                bias,
                pooled,
                src,
                ..
            } => {
                let x = read(*src);
                let scale = 1.0 / *plane as f32;
                pooled
                    .par_iter_mut()
                    .zip(x.par_chunks_exact(*plane))
                    .for_each(|(p, values)| *p = values.iter().sum::<f32>() * scale);
                linear::forward(shape, pooled, weight, Some(bias), out)
            }
        }
    }
}

/// `out = relu(out + residual)` (each part when asked for), in parallel.
fn finish(out: &mut [f32], residual: Option<&[f32]>, relu: bool) {
    const CHUNK: usize = 1 << 14;
    match residual {
        Some(res) => out
            .par_chunks_mut(CHUNK)
            .zip(res.par_chunks(CHUNK))
            .for_each(|(o, r)| {
                for (v, &a) in o.iter_mut().zip(r) {
                    let s = *v + a;
                    *v = if relu { relu_value(s) } else { s };
                }
            }),
        None if relu => out
            .par_chunks_mut(CHUNK)
            .for_each(|o| o.iter_mut().for_each(|v| *v = relu_value(*v))),
        None => {}
    }
}
