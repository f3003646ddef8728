//! Inference plans: a model lowered once, for one input shape, into a short
//! list of fused steps over buffers that are allocated once and shared by
//! values whose lifetimes do not overlap.
//!
//! Lowering (the models' [`Module::lower`](crate::nn::Module::lower))
//! folds each batch norm into the convolution before it, and the
//! [`Builder`] fuses the rest into the producing step's output pass:
//! ReLU, residual additions, concatenations (each part is written in
//! place) and channel shuffles (a grouped 1×1 convolution writes its rows
//! interleaved; a dense one gets its weight rows permuted). Each step of
//! [`Plan::run`] is one parallel region.
//!
//! ```
//! use gconv::infer::Plan;
//! use gconv::nn::Module;
//! use rand::SeedableRng;
//!
//! # fn main() -> gconv::Result<()> {
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let mut net = gconv::models::build("shufflenet_g3_wd4_cifar", &mut rng)?;
//! net.set_training(false);
//! let x = gconv::Tensor::randn(&[2, 3, 32, 32], &mut rng);
//! let mut plan = Plan::new([2, 3, 32, 32], |b, x| net.lower(b, x))?;
//! let logits = plan.run(&x.to_vec())?.to_vec(); // [2, 10]
//! let want = gconv::no_grad(|| net.forward(&x))?.to_vec();
//! let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
//! for (a, b) in logits.iter().zip(&want) {
//!     assert!((a - b).abs() <= 1e-5 * scale);
//! }
//! # Ok(())
//! # }
//! ```

mod step;

use crate::error::{Error, Result};
use crate::kernels::Conv2dShape;
use crate::kernels::linear::LinearShape;
use crate::kernels::pointwise::{self, PackedWeights, Placement, PointwiseShape};
use crate::kernels::pool::PoolShape;
use crate::ops::Pool2dArgs;
use step::Step;

/// A tensor of a plan being built: per image `[channels, H, W]` (the batch
/// is the plan's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    id: usize,
    pub channels: usize,
    /// Height and width.
    pub size: [usize; 2],
}

/// A convolution with its bias, batch norm already folded in: weight
/// `[out_channels, in_channels / groups, kH, kW]`, bias `[out_channels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// What follows a convolution, fused into its output pass, in this order:
/// `relu(conv(x) + residual)`, then `channel_shuffle(·, shuffle)`, stored
/// into channels `offset..` of `into` (a value made by
/// [`Builder::parts`]) or into a new value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    pub relu: bool,
    /// Added before the ReLU; shaped like the destination.
    pub residual: Option<Value>,
    /// Groups of a channel shuffle after the convolution.
    pub shuffle: Option<usize>,
    /// `(value, channel offset)`: a part of a concatenation.
    pub into: Option<(Value, usize)>,
}

/// What the builder knows of a value.
struct Slot {
    channels: usize,
    size: [usize; 2],
    /// Every element is ≥ 0 (a ReLU or a pool of such values made it), so
    /// a ReLU on it is the identity.
    nonneg: bool,
    /// The channel ranges written so far (a value is read only once whole).
    written: Vec<std::ops::Range<usize>>,
}

impl Slot {
    fn len(&self, batch: usize) -> usize {
        batch * self.channels * self.size[0] * self.size[1]
    }
}

/// Builds a [`Plan`]: each method appends one fused step and returns the
/// value it writes.
pub struct Builder {
    batch: usize,
    slots: Vec<Slot>,
    steps: Vec<Step>,
}

impl Builder {
    fn value(&mut self, channels: usize, size: [usize; 2]) -> Value {
        self.slots.push(Slot {
            channels,
            size,
            nonneg: true,
            written: Vec::new(),
        });
        Value {
            id: self.slots.len() - 1,
            channels,
            size,
        }
    }

    /// An empty value of `channels × size` that steps then fill in parts
    /// (their `into`): a concatenation along the channels.
    pub fn parts(&mut self, channels: usize, size: [usize; 2]) -> Value {
        self.value(channels, size)
    }

    /// Checks that `v` belongs to this plan and has been written whole.
    fn readable(&self, v: Value, what: &str) -> Result<()> {
        let slot = self
            .slots
            .get(v.id)
            .filter(|s| s.channels == v.channels && s.size == v.size)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "inference plan: {what} {v:?} is not a value of this plan"
                ))
            })?;
        let filled: usize = slot.written.iter().map(|r| r.len()).sum();
        if filled != slot.channels {
            return Err(Error::invalid(format!(
                "inference plan: {what} is read with {filled} of its {} channels written",
                slot.channels
            )));
        }
        Ok(())
    }

    /// Records that channels `range` of `v` are written by a step whose
    /// output is ≥ 0 when `nonneg`.
    fn write(&mut self, v: Value, range: std::ops::Range<usize>, nonneg: bool) -> Result<()> {
        let slot = &mut self.slots[v.id];
        if range.end > slot.channels
            || slot
                .written
                .iter()
                .any(|r| r.start < range.end && range.start < r.end)
        {
            return Err(Error::invalid(format!(
                "inference plan: channels {range:?} of a {}-channel value are outside it or written twice",
                slot.channels
            )));
        }
        slot.written.push(range);
        slot.nonneg &= nonneg;
        Ok(())
    }

    /// The destination of a step making `channels × size`: `into`, checked,
    /// or a new value.
    fn destination(
        &mut self,
        into: Option<(Value, usize)>,
        channels: usize,
        size: [usize; 2],
    ) -> Result<(Value, usize)> {
        let Some((v, offset)) = into else {
            return Ok((self.value(channels, size), 0));
        };
        if v.size != size
            || self
                .slots
                .get(v.id)
                .is_none_or(|s| s.channels != v.channels)
        {
            return Err(Error::invalid(format!(
                "inference plan: a {channels}×{size:?} result does not fit into {v:?}"
            )));
        }
        Ok((v, offset))
    }

    /// `epilogue(conv2d(x))`: see [`Epilogue`].
    pub fn conv(&mut self, x: Value, mut spec: ConvSpec, ep: Epilogue) -> Result<Value> {
        self.readable(x, "a convolution's input")?;
        let shape = Conv2dShape {
            batch: self.batch,
            in_channels: spec.in_channels,
            out_channels: spec.out_channels,
            input: x.size,
            kernel: spec.kernel,
            stride: spec.stride,
            padding: spec.padding,
            dilation: spec.dilation,
            groups: spec.groups,
        }
        .validate()?;
        let (_, weight_len, _) = shape.lens();
        if x.channels != spec.in_channels
            || spec.weight.len() != weight_len
            || spec.bias.len() != spec.out_channels
        {
            return Err(Error::invalid(format!(
                "inference plan: a conv of {} → {} channels (weight {} values, bias {}) on a {}-channel input",
                spec.in_channels,
                spec.out_channels,
                spec.weight.len(),
                spec.bias.len(),
                x.channels
            )));
        }
        let pointwise = spec.kernel == [1, 1] && spec.stride == [1, 1] && spec.padding == [0, 0];
        let interleave = match ep.shuffle.filter(|&g| g > 1) {
            None => false,
            Some(g) if !spec.out_channels.is_multiple_of(g) => {
                return Err(Error::invalid(format!(
                    "inference plan: channel shuffle groups = {g} must divide the {} channels",
                    spec.out_channels
                )));
            }
            Some(g) if spec.groups == g && pointwise && ep.into.is_none() => true,
            Some(g) if spec.groups == 1 => {
                shuffle_rows(&mut spec, g);
                false
            }
            Some(g) => {
                return Err(Error::invalid(format!(
                    "inference plan: cannot fold a channel shuffle of {g} groups into a conv of {} groups",
                    spec.groups
                )));
            }
        };
        let size = shape.output();
        let (dst, offset) = self.destination(ep.into, spec.out_channels, size)?;
        if let Some(r) = ep.residual {
            self.readable(r, "a residual")?;
            if r.channels != dst.channels || r.size != dst.size {
                return Err(Error::invalid(format!(
                    "inference plan: residual {r:?} does not match the destination {dst:?}"
                )));
            }
        }
        self.write(dst, offset..offset + spec.out_channels, ep.relu)?;
        let (src, residual) = (x.id, ep.residual.map(|r| r.id));
        let step = if pointwise {
            let shape = PointwiseShape {
                batch: self.batch,
                in_channels: spec.in_channels,
                out_channels: spec.out_channels,
                plane: size[0] * size[1],
                groups: spec.groups,
            };
            let place = if interleave {
                Placement::shuffled(&shape)
            } else {
                Placement::contiguous(&shape, dst.channels, offset)
            };
            Step::Pointwise {
                shape,
                weight: PackedWeights::new(&shape, &spec.weight)?,
                bias: spec.bias,
                relu: ep.relu,
                place,
                residual,
                in_place: false,
                src,
                dst: dst.id,
            }
        } else if dst.channels == spec.out_channels
            && shape.group_in() > 1
            && shape.group_out() >= pointwise::MR
            && (spec.groups == 1
                || self.batch * spec.groups < 2 * rayon::current_num_threads()
                || pointwise::unfolded_in_vectors(&shape))
        {
            // The pointwise kernel over the im2col matrix when each group
            // fills its register tiles, and either the conv is dense (the
            // stems: at batch 32 ShuffleNet's took 11.4–11.7 ms through
            // the direct kernel, which applies ReLU in a second pass, and
            // 6.1–6.6 ms so), or there are too few (image, group) tasks for
            // the direct kernel's parallelism, or the plane is small and
            // the matrix is read with output channels in vectors
            // (ResNeXt-50's 3×3 g32 layers on 14×14 and 7×7: 0.26 and
            // 0.53 ms through the direct kernel, 0.165 ms so).
            Step::Unfolded {
                shape,
                weight: PackedWeights::unfolded(&shape, &spec.weight)?,
                bias: spec.bias,
                relu: ep.relu,
                residual,
                cols: Vec::new(),
                src,
                dst: dst.id,
            }
        } else if dst.channels == spec.out_channels {
            Step::Conv {
                shape,
                weight: spec.weight,
                bias: spec.bias,
                relu: ep.relu,
                residual,
                src,
                dst: dst.id,
            }
        } else {
            return Err(Error::invalid(format!(
                "inference plan: a {}×{} convolution cannot write part of a concatenation",
                spec.kernel[0], spec.kernel[1]
            )));
        };
        self.steps.push(step);
        Ok(dst)
    }

    fn pool_shape(&self, x: Value, planes: usize, args: Pool2dArgs) -> Result<PoolShape> {
        PoolShape {
            planes,
            input: x.size,
            kernel: args.kernel_size,
            stride: args.stride,
            padding: args.padding,
        }
        .validate()
    }

    /// `max_pool2d(x)` (padding counts as −∞).
    pub fn max_pool(&mut self, x: Value, args: Pool2dArgs) -> Result<Value> {
        self.readable(x, "a pooling's input")?;
        let shape = self.pool_shape(x, self.batch * x.channels, args)?;
        let nonneg = self.slots[x.id].nonneg;
        let (dst, _) = self.destination(None, x.channels, shape.output())?;
        self.write(dst, 0..x.channels, nonneg)?;
        self.steps.push(Step::MaxPool {
            shape,
            src: x.id,
            dst: dst.id,
        });
        Ok(dst)
    }

    /// `relu(avg_pool2d(x))` (without the ReLU unless `relu`), into
    /// channels `offset..` of `into` or a new value.
    pub fn avg_pool(
        &mut self,
        x: Value,
        args: Pool2dArgs,
        relu: bool,
        into: Option<(Value, usize)>,
    ) -> Result<Value> {
        self.readable(x, "a pooling's input")?;
        let shape = self.pool_shape(x, x.channels, args)?;
        let nonneg = self.slots[x.id].nonneg;
        let (dst, offset) = self.destination(into, x.channels, shape.output())?;
        self.write(dst, offset..offset + x.channels, relu || nonneg)?;
        self.steps.push(Step::AvgPool {
            shape,
            relu: relu && !nonneg,
            channels: dst.channels,
            offset,
            src: x.id,
            dst: dst.id,
        });
        Ok(dst)
    }

    /// Global average pooling, then a linear layer (weight
    /// `[classes, channels]`, bias `[classes]`): a `[classes, 1, 1]` value.
    pub fn head(&mut self, x: Value, weight: Vec<f32>, bias: Vec<f32>) -> Result<Value> {
        self.readable(x, "the classifier's input")?;
        let classes = bias.len();
        if weight.len() != classes * x.channels {
            return Err(Error::invalid(format!(
                "inference plan: a classifier with {} weights and {classes} biases on {} channels",
                weight.len(),
                x.channels
            )));
        }
        let (dst, _) = self.destination(None, classes, [1, 1])?;
        self.write(dst, 0..classes, false)?;
        self.steps.push(Step::Head {
            shape: LinearShape {
                batch: self.batch,
                in_features: x.channels,
                out_features: classes,
            },
            plane: x.size[0] * x.size[1],
            weight,
            bias,
            pooled: vec![0.0; self.batch * x.channels],
            src: x.id,
            dst: dst.id,
        });
        Ok(dst)
    }
}

/// Permutes the output channels of a dense convolution as a channel
/// shuffle with `groups` groups would: row `i · C/g + j` moves to
/// `j · g + i`.
fn shuffle_rows(spec: &mut ConvSpec, groups: usize) {
    let (c, per) = (spec.out_channels, spec.weight.len() / spec.out_channels);
    let m = c / groups;
    let mut weight = vec![0.0; spec.weight.len()];
    let mut bias = vec![0.0; c];
    for i in 0..groups {
        for j in 0..m {
            let (from, to) = (i * m + j, j * groups + i);
            weight[to * per..][..per].copy_from_slice(&spec.weight[from * per..][..per]);
            bias[to] = spec.bias[from];
        }
    }
    (spec.weight, spec.bias) = (weight, bias);
}

/// A model lowered for one input shape `[N, C, H, W]`: run it on as many
/// inputs of that shape as needed.
pub struct Plan {
    input: [usize; 4],
    output: Vec<usize>,
    steps: Vec<Step>,
    /// Per value: its buffer and its length.
    homes: Vec<(usize, usize)>,
    buffers: Vec<Vec<f32>>,
    result: usize,
    /// Per-step times while [`profile`](Self::profile) runs.
    times: Option<Vec<(String, f64)>>,
}

impl Plan {
    /// Lowers a model: `lower(builder, input)` appends the model's steps
    /// (typically `|b, x| model.lower(b, x)`) and returns its output value.
    pub fn new(
        input: [usize; 4],
        lower: impl FnOnce(&mut Builder, Value) -> Result<Value>,
    ) -> Result<Plan> {
        if input.contains(&0) {
            return Err(Error::invalid(format!(
                "inference plan: input shape {input:?} has a zero size"
            )));
        }
        let mut b = Builder {
            batch: input[0],
            slots: Vec::new(),
            steps: Vec::new(),
        };
        let x = b.value(input[1], [input[2], input[3]]);
        b.write(x, 0..input[1], false)?;
        let y = lower(&mut b, x)?;
        b.readable(y, "the output")?;
        let homes = assign_buffers(&b, y.id);
        for step in &mut b.steps {
            if let Some(r) = step.in_place_candidate() {
                step.set_in_place(homes[r].0 == homes[step.dst()].0);
            }
        }
        let mut buffers: Vec<Vec<f32>> = Vec::new();
        for &(buffer, len) in &homes {
            if buffer >= buffers.len() {
                buffers.resize_with(buffer + 1, Vec::new);
            }
            if buffers[buffer].len() < len {
                buffers[buffer].resize(len, 0.0);
            }
        }
        Ok(Plan {
            input,
            output: vec![input[0], y.channels, y.size[0], y.size[1]],
            steps: b.steps,
            homes,
            buffers,
            result: y.id,
            times: None,
        })
    }

    /// The output's shape `[N, C, H, W]` (`[N, classes, 1, 1]` for a
    /// classifier).
    pub fn output_shape(&self) -> &[usize] {
        &self.output
    }

    /// Floats held in the plan's buffers (activations), all steps together.
    pub fn buffer_len(&self) -> usize {
        self.buffers.iter().map(Vec::len).sum()
    }

    /// Runs the plan on `x` (NCHW, the shape it was built for) and returns
    /// the output (NCHW, [`output_shape`](Self::output_shape)).
    pub fn run(&mut self, x: &[f32]) -> Result<&[f32]> {
        let want: usize = self.input.iter().product();
        if x.len() != want {
            return Err(Error::invalid(format!(
                "inference plan: the input has {} values, the plan was built for {:?} ({want})",
                x.len(),
                self.input
            )));
        }
        if let Some(bad) = crate::simd::first_non_finite(x) {
            return Err(Error::invalid(format!(
                "inference plan: input value {bad} is {}",
                x[bad]
            )));
        }
        self.buffers[self.homes[0].0][..want].copy_from_slice(x);
        crate::parallel::awake_workers(|| self.run_steps())?;
        let (home, len) = self.homes[self.result];
        Ok(&self.buffers[home][..len])
    }

    fn run_steps(&mut self) -> Result<()> {
        let (homes, buffers) = (&self.homes, &mut self.buffers);
        for step in &mut self.steps {
            let start = std::time::Instant::now();
            let (home, len) = homes[step.dst()];
            let mut out = std::mem::take(&mut buffers[home]);
            let read = |v: usize| &buffers[homes[v].0][..homes[v].1];
            let result = step.run(read, &mut out[..len]);
            buffers[home] = out;
            result?;
            if let Some(times) = &mut self.times {
                times.push((step.describe(), start.elapsed().as_secs_f64() * 1e3));
            }
        }
        Ok(())
    }

    /// Runs the plan as [`run`](Self::run) and returns, per step, what it
    /// computes and how long it took (ms).
    pub fn profile(&mut self, x: &[f32]) -> Result<Vec<(String, f64)>> {
        self.times = Some(Vec::new());
        let result = self.run(x).map(drop);
        let times = self.times.take().unwrap_or_default();
        result.map(|()| times)
    }
}

/// Gives every value a buffer: a value takes a free buffer when its first
/// writer runs and gives it back after the last step that reads or writes
/// it (the result keeps its own), so a step never writes a buffer it
/// reads, with one exception: a residual that a pointwise step reads for
/// the last time hands its buffer over to that step's destination, which
/// the kernel then computes in place (each output added to the residual
/// value it overwrites). Returns per value `(buffer, length)`.
fn assign_buffers(b: &Builder, result: usize) -> Vec<(usize, usize)> {
    let touched = |step: &Step| {
        let mut values = step.reads();
        values.push(step.dst());
        values.sort_unstable();
        values.dedup();
        values
    };
    let mut last = vec![0usize; b.slots.len()];
    for (i, step) in b.steps.iter().enumerate() {
        for v in touched(step) {
            last[v] = i;
        }
    }
    let mut homes: Vec<Option<usize>> = vec![None; b.slots.len()];
    let (mut free, mut count) = (Vec::<usize>::new(), 0);
    let mut take = |free: &mut Vec<usize>| {
        free.pop().unwrap_or_else(|| {
            count += 1;
            count - 1
        })
    };
    homes[0] = Some(take(&mut free));
    for (i, step) in b.steps.iter().enumerate() {
        let dst = step.dst();
        let mut handed_over = None;
        if homes[dst].is_none() {
            // A residual read here for the last time hands its buffer to
            // the destination (same layout): computed in place.
            let len = |v: usize| b.slots[v].len(b.batch);
            handed_over = step
                .in_place_candidate()
                .filter(|&r| last[r] == i && r != result && len(r) == len(dst));
            homes[dst] = match handed_over {
                Some(r) => homes[r],
                None => Some(take(&mut free)),
            };
        }
        for v in touched(step) {
            if last[v] == i && v != result && Some(v) != handed_over {
                free.extend(homes[v]);
            }
        }
    }
    homes
        .iter()
        .zip(&b.slots)
        .map(|(home, slot)| (home.unwrap_or(0), slot.len(b.batch)))
        .collect()
}
