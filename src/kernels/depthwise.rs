//! Depthwise conv2d forward (float32): one input channel per group
//! (`groups == C_in`, `C_out = C_in × multiplier`). The padding and the
//! strides are handled outside the inner loop: each input plane is copied
//! into a zero-bordered buffer split into stride phases (see [`Geometry`]),
//! after which every kernel tap is one long contiguous multiply-add over the
//! whole plane. One parallel region over (image × output channel).

use super::conv::Conv2dShape;
use crate::error::{Error, Result};
use crate::signal::Scalar;
use crate::simd::Isa;
use rayon::prelude::*;

/// `y = depthwise_conv2d(x, w) + bias`; the shape must have one input
/// channel per group. Same results as
/// [`forward_ref`](super::conv::forward_ref) up to rounding.
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    forward_isa(s, x, w, bias, y, Isa::best())
}

/// [`forward`] with the inner loops compiled for `isa`.
fn forward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    isa: Isa,
) -> Result<()> {
    check_depthwise(s)?;
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    let geo = Geometry::new(s);
    let taps = s.kernel[0] * s.kernel[1];
    let mult = s.group_out();
    let plane_in = s.input[0] * s.input[1];
    y.par_chunks_mut(geo.out_h * geo.out_w)
        .enumerate()
        .for_each_init(
            || vec![0f32; geo.scratch_len()],
            |scratch, (plane, out)| {
                let (n, o) = (plane / s.out_channels, plane % s.out_channels);
                let src = &x[(n * s.in_channels + o / mult) * plane_in..][..plane_in];
                let kernel = &w[o * taps..][..taps];
                plane_isa(
                    isa,
                    &geo,
                    src,
                    kernel,
                    bias.map_or(0.0, |b| b[o]),
                    scratch,
                    out,
                );
            },
        );
    Ok(())
}

fn check_depthwise(s: &Conv2dShape) -> Result<()> {
    if s.group_in() != 1 {
        return Err(Error::invalid(format!(
            "depthwise conv2d needs groups = in_channels, got groups = {} for {} channels",
            s.groups, s.in_channels
        )));
    }
    Ok(())
}

/// Gradients of `Σ dy · depthwise_conv2d(x, w)`, each computed only when
/// its buffer is given (and overwritten): `dx` with one parallel task per
/// input plane (it gathers the `multiplier` output planes it feeds), `dw`
/// with one task per output channel summing over the images in order
/// (deterministic for any thread count), and `db`.
pub fn backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    backward_isa(s, x, w, dy, [dx, dw, db], Isa::best())
}

/// [`backward`] with the inner loops compiled for `isa`.
fn backward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
    isa: Isa,
) -> Result<()> {
    check_depthwise(s)?;
    s.check_grad_lens(x, w, dy, [dx.as_deref(), dw.as_deref(), db.as_deref()])?;
    let geo = Geometry::new(s);
    let taps = s.kernel[0] * s.kernel[1];
    let mult = s.group_out();
    let plane_in = s.input[0] * s.input[1];
    let plane_out = geo.out_h * geo.out_w;
    if let Some(dx) = dx {
        dx.par_chunks_mut(plane_in).enumerate().for_each_init(
            || vec![0f32; geo.scratch_len()],
            |scratch, (plane, dx)| {
                // Input plane (n, c) feeds output channels c·mult .. (c + 1)·mult.
                let c = plane % s.in_channels;
                let dys = &dy[plane * mult * plane_out..][..mult * plane_out];
                let kernels = &w[c * mult * taps..][..mult * taps];
                plane_input_grad_isa(isa, &geo, dys, kernels, scratch, dx);
            },
        );
    }
    if let Some(dw) = dw {
        dw.par_chunks_mut(taps).enumerate().for_each_init(
            || vec![0f32; geo.scratch_len()],
            |scratch, (o, dw)| {
                dw.fill(0.0);
                for n in 0..s.batch {
                    let xp = &x[(n * s.in_channels + o / mult) * plane_in..][..plane_in];
                    let dyp = &dy[(n * s.out_channels + o) * plane_out..][..plane_out];
                    plane_weight_grad_isa(isa, &geo, xp, dyp, scratch, dw);
                }
            },
        );
    }
    if let Some(db) = db {
        super::conv::bias_grad(s, dy, db);
    }
    Ok(())
}

/// Sizes of one depthwise plane and of its padded, phase-split copy.
///
/// The copy splits padded rows and columns by their remainder modulo the
/// stride into `stride_h × stride_w` blocks of `phase_rows × phase_len`:
/// padded element `(r, c)` lives in block `(r % stride_h, c % stride_w)` at
/// row `r / stride_h`, column `c / stride_w`. Then output `(oy, ox)` reads,
/// for every tap, the element at `oy · phase_len + ox` plus a fixed offset:
/// the whole plane is one long multiply-add per tap, and only the
/// `phase_len − W_out` columns at the end of each row are computed in vain.
pub(crate) struct Geometry {
    w: usize,
    out_h: usize,
    out_w: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    /// Rows in one block.
    phase_rows: usize,
    /// Columns in one block: the accumulator's row pitch.
    phase_len: usize,
    /// Offset of each kernel tap (row-major taps) from output position 0.
    taps: Vec<usize>,
}

impl Geometry {
    fn new(s: &Conv2dShape) -> Self {
        let [out_h, out_w] = s.output();
        let [sh, sw] = s.stride;
        let phase_rows = (s.input[0] + 2 * s.padding[0]).div_ceil(sh);
        let phase_len = (s.input[1] + 2 * s.padding[1]).div_ceil(sw);
        let taps = (0..s.kernel[0] * s.kernel[1])
            .map(|t| {
                let (dy, dx) = (
                    (t / s.kernel[1]) * s.dilation[0],
                    (t % s.kernel[1]) * s.dilation[1],
                );
                ((dy % sh) * sw + dx % sw) * phase_rows * phase_len
                    + (dy / sh) * phase_len
                    + dx / sw
            })
            .collect();
        Geometry {
            w: s.input[1],
            out_h,
            out_w,
            stride: s.stride,
            padding: s.padding,
            phase_rows,
            phase_len,
            taps,
        }
    }

    /// Elements of the padded, phase-split plane.
    fn padded_len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.phase_rows * self.phase_len
    }

    /// Elements of the accumulator: outputs at the row pitch `phase_len`,
    /// up to the last one needed.
    fn acc_len(&self) -> usize {
        (self.out_h - 1) * self.phase_len + self.out_w
    }

    fn scratch_len(&self) -> usize {
        self.padded_len() + self.acc_len()
    }
}

impl Geometry {
    /// Calls `f(src, step, dst, count)` for runs of one input plane: input
    /// elements `src + i · step` (`i < count`) go to padded positions
    /// `dst + i`. Together the runs cover the plane once.
    #[inline(always)]
    fn each_run(&self, rows: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let ([sh, sw], [ph, pw]) = (self.stride, self.padding);
        let (w, pl) = (self.w, self.phase_len);
        let block = self.phase_rows * pl;
        for r in 0..rows {
            let pr = r + ph;
            let row = (pr % sh) * sw * block + (pr / sh) * pl;
            // Padded column c = input column + pw sits in block column c % sw at c / sw.
            for q in 0..sw {
                let x0 = (q + sw - pw % sw) % sw;
                if x0 < w {
                    f(
                        r * w + x0,
                        sw,
                        row + q * block + (x0 + pw) / sw,
                        (w - x0).div_ceil(sw),
                    );
                }
            }
        }
    }

    /// Copies an input plane into the zeroed padded, phase-split layout.
    #[inline(always)]
    fn pad<T: Scalar>(&self, src: &[T], padded: &mut [T]) {
        padded.fill(T::zero());
        self.each_run(src.len() / self.w, |s, step, d, count| {
            let dst = &mut padded[d..][..count];
            let src = &src[s..][..(count - 1) * step + 1];
            match step {
                1 => dst.copy_from_slice(src),
                // A constant stride lets the compiler vectorise the gather.
                2 => {
                    let pairs = src.chunks_exact(2);
                    dst[count - 1] = pairs.remainder()[0];
                    dst.iter_mut().zip(pairs).for_each(|(d, p)| *d = p[0]);
                }
                _ => (0..count).for_each(|i| dst[i] = src[i * step]),
            }
        });
    }

    /// The inverse of [`pad`](Self::pad) on the interior: writes the
    /// padded layout's input positions back to a plane.
    #[inline(always)]
    fn unpad<T: Scalar>(&self, padded: &[T], dst: &mut [T]) {
        self.each_run(dst.len() / self.w, |s, step, d, count| {
            let src = &padded[d..][..count];
            let dst = &mut dst[s..][..(count - 1) * step + 1];
            match step {
                1 => dst.copy_from_slice(src),
                2 => {
                    let pairs = dst.chunks_exact_mut(2);
                    pairs.into_remainder()[0] = src[count - 1];
                    let pairs = dst.chunks_exact_mut(2);
                    pairs.zip(src).for_each(|(p, &v)| p[0] = v);
                }
                _ => (0..count).for_each(|i| dst[i * step] = src[i]),
            }
        });
    }

    /// Spreads an output plane (or its gradient) to the accumulator's row
    /// pitch, zero between rows.
    #[inline(always)]
    fn spread<T: Scalar>(&self, plane: &[T], acc: &mut [T]) {
        acc.fill(T::zero());
        for (oy, row) in plane.chunks_exact(self.out_w).enumerate() {
            acc[oy * self.phase_len..][..self.out_w].copy_from_slice(row);
        }
    }
}

/// One output plane: copies the input plane into the zero-bordered,
/// phase-split layout of [`Geometry`], then adds each tap's contribution to
/// all outputs in one long run (the columns between the output width and the
/// row pitch are computed and discarded), then copies the outputs out.
#[inline(always)]
fn plane<T: Scalar>(
    g: &Geometry,
    src: &[T],
    kernel: &[T],
    bias: T,
    scratch: &mut [T],
    out: &mut [T],
) {
    let (padded, acc) = scratch.split_at_mut(g.padded_len());
    g.pad(src, padded);
    // Every read stays inside `padded`: the last output needed reads valid
    // padded positions, and all others come before it.
    let acc = &mut acc[..g.acc_len()];
    acc.fill(bias);
    let len = acc.len();
    for (&kv, &offset) in kernel.iter().zip(&g.taps) {
        for (a, &v) in acc.iter_mut().zip(&padded[offset..offset + len]) {
            *a = *a + kv * v;
        }
    }
    for (oy, row) in out.chunks_exact_mut(g.out_w).enumerate() {
        row.copy_from_slice(&acc[oy * g.phase_len..][..g.out_w]);
    }
}

/// Input gradient of one input plane: the adjoint of [`plane`]. Each of the
/// `multiplier` output-gradient planes `dys` is spread to the row pitch and
/// added, tap by tap, onto the padded layout, which is then cut back to the
/// plane.
#[inline(always)]
fn plane_input_grad<T: Scalar>(
    g: &Geometry,
    dys: &[T],
    kernels: &[T],
    scratch: &mut [T],
    dx: &mut [T],
) {
    let (padded, acc) = scratch.split_at_mut(g.padded_len());
    let acc = &mut acc[..g.acc_len()];
    let len = acc.len();
    padded.fill(T::zero());
    let taps = g.taps.len();
    for (dy, kernel) in dys
        .chunks_exact(g.out_h * g.out_w)
        .zip(kernels.chunks_exact(taps))
    {
        g.spread(dy, acc);
        for (&kv, &offset) in kernel.iter().zip(&g.taps) {
            for (p, &a) in padded[offset..offset + len].iter_mut().zip(acc.iter()) {
                *p = *p + kv * a;
            }
        }
    }
    g.unpad(padded, dx);
}

/// Weight gradient of one output channel from one image: adds
/// `Σ dy · x` under each tap `t` to `dw[t]`.
#[inline(always)]
fn plane_weight_grad<T: Scalar>(g: &Geometry, x: &[T], dy: &[T], scratch: &mut [T], dw: &mut [T]) {
    let (padded, acc) = scratch.split_at_mut(g.padded_len());
    let acc = &mut acc[..g.acc_len()];
    let len = acc.len();
    g.pad(x, padded);
    g.spread(dy, acc);
    for (d, &offset) in dw.iter_mut().zip(&g.taps) {
        *d = *d + crate::simd::dot(acc, &padded[offset..offset + len]);
    }
}

crate::dispatch!(fn plane_isa<T: Scalar>(g: &Geometry, src: &[T], kernel: &[T], bias: T, scratch: &mut [T], out: &mut [T]) => plane);
crate::dispatch!(fn plane_weight_grad_isa<T: Scalar>(g: &Geometry, x: &[T], dy: &[T], scratch: &mut [T], dw: &mut [T]) => plane_weight_grad);
crate::dispatch!(fn plane_input_grad_isa<T: Scalar>(g: &Geometry, dys: &[T], kernels: &[T], scratch: &mut [T], dx: &mut [T]) => plane_input_grad);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{
        assert_backward_matches_reference, assert_forward_matches_reference,
    };

    #[test]
    fn matches_the_reference() {
        // (batch, channels, multiplier, h, w, k, stride, pad, dilation, bias)
        let cases = [
            (2, 12, 1, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (1, 12, 1, 11, 9, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (2, 8, 1, 9, 9, [3, 3], [1, 1], [2, 2], [2, 2], true),
            (3, 6, 1, 9, 8, [5, 5], [2, 2], [2, 2], [1, 1], false),
            (1, 4, 2, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 5, 1, 6, 13, [3, 5], [2, 1], [0, 2], [1, 2], false),
            (1, 3, 1, 4, 4, [3, 3], [2, 2], [1, 1], [1, 1], true),
            (3, 5, 3, 10, 7, [3, 3], [2, 2], [1, 1], [2, 1], false),
            (2, 4, 1, 8, 9, [3, 3], [3, 2], [0, 1], [1, 1], true),
            (4, 2, 1, 5, 5, [1, 1], [1, 1], [0, 0], [1, 1], false),
        ];
        for (i, &(batch, c, mult, h, w, k, stride, pad, dil, bias)) in cases.iter().enumerate() {
            let s = Conv2dShape {
                stride,
                padding: pad,
                dilation: dil,
                ..Conv2dShape::new(batch, c, c * mult, [h, w], k, c)
            }
            .validate()
            .unwrap();
            for isa in Isa::available() {
                assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                    forward_isa(&s, x, w, b, y, isa)
                });
                assert_backward_matches_reference(&s, i as u64, |x, w, dy, dx, dw, db| {
                    backward_isa(&s, x, w, dy, [Some(dx), Some(dw), Some(db)], isa)
                });
            }
        }
    }

    #[test]
    fn refuses_grouped_shapes() {
        let s = Conv2dShape {
            padding: [1, 1],
            ..Conv2dShape::new(1, 4, 4, [3, 3], [3, 3], 2)
        };
        assert!(forward(&s, &[0.0; 36], &[0.0; 72], None, &mut [0.0; 36]).is_err());
    }
}
