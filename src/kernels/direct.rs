//! Direct grouped conv2d (float32) for groups with few input channels:
//! depthwise layers (one input channel per group, any multiplier) and
//! ResNeXt's 3×3 layers (4–16 channels per group), forward and backward.
//!
//! Each task takes one (image, group). Its input planes are copied into the
//! padded, stride-phase-split layout of [`Geometry`], where every kernel
//! tap reads the plane at a fixed offset; outputs are then computed in
//! tiles of up to four output channels × up to [`BLOCK`] positions, the
//! accumulators staying in vector registers while the loop runs over
//! input channels and taps; weight gradients of groups with 4 or more
//! channels in tiles of 4 × 4 channel pairs, each weight a vector of
//! partial sums. One parallel region over (image × group). Depthwise
//! layers can also read their input channels through a permutation: a
//! channel shuffle folded into the convolution (`forward_gathered`).

use super::conv::{Conv2dShape, weight_grad_tasks};
use super::depthwise_rows;
use super::phase::Geometry;
use super::shuffle::Permutation;
use crate::error::Result;
use crate::signal::Scalar;
use crate::simd::{Fma, Isa, LANES, Lanes, Shares, Trickle, add_lanes, fma_lanes, mul_add_lanes};
use rayon::prelude::*;

/// The most output positions per register tile (four AVX-512 vectors);
/// planes are padded to whole blocks, so that every tile can be read and
/// written whole.
const BLOCK: usize = VECTORS * LANES;

/// The most vectors of positions per register tile (a divisor of it for
/// narrower tiles).
const VECTORS: usize = 4;

/// Whether the direct kernels suit `s`: a kernel larger than 1×1 and at
/// most 16 input channels per group (beyond that im2col + GEMM wins).
pub fn suits(s: &Conv2dShape) -> bool {
    s.kernel != [1, 1] && s.group_in() <= 16
}

/// Sizes of one (image, group) task and of its scratch buffers.
pub(crate) struct Plan {
    geo: Geometry,
    cig: usize,
    cog: usize,
    taps: usize,
    plane_in: usize,
    plane_out: usize,
    /// Distance between padded planes: the layout plus a block of slack,
    /// rounded to whole blocks, so that whole blocks can be read and written
    /// past the last output.
    padded_pitch: usize,
    /// Distance between accumulator planes: `acc_len` rounded up to blocks.
    acc_pitch: usize,
    /// The largest tap offset within its stride-phase block; output
    /// gradients are stored after this many zeros so that the input
    /// gradient reads them at `dy_lead − offset`.
    dy_lead: usize,
    /// The stride-phase blocks of the padded layout, for the input gradient.
    phases: Vec<Phase>,
    /// Distance between output-gradient planes in the input-gradient
    /// layout: the lead and a block's length in whole register blocks, all
    /// that a phase's correlation reads (zero past the gradients).
    dy_pitch: usize,
}

/// One stride-phase block of the padded layout (`base ..` for one block's
/// length) and the taps that read from it: only they carry gradient back to
/// it, at `offsets[j] = dy_lead − (taps offset − base)` in the
/// output-gradient layout.
struct Phase {
    base: usize,
    taps: Vec<usize>,
    offsets: Vec<usize>,
}

impl Plan {
    fn new(s: &Conv2dShape) -> Plan {
        let geo = Geometry::new(s);
        let padded_pitch = (geo.padded_len() + BLOCK).next_multiple_of(BLOCK);
        let acc_pitch = geo.acc_len().next_multiple_of(BLOCK);
        let [oh, ow] = s.output();
        let block = geo.block_len();
        let dy_lead = geo.taps.iter().map(|t| t % block).max().unwrap_or(0);
        let phases = (0..s.stride[0] * s.stride[1])
            .map(|b| {
                let taps: Vec<usize> = (0..geo.taps.len())
                    .filter(|&t| geo.taps[t] / block == b)
                    .collect();
                Phase {
                    base: b * block,
                    offsets: taps
                        .iter()
                        .map(|&t| dy_lead - (geo.taps[t] - b * block))
                        .collect(),
                    taps,
                }
            })
            .collect();
        Plan {
            dy_lead,
            phases,
            dy_pitch: dy_lead + block.next_multiple_of(BLOCK),
            cig: s.group_in(),
            cog: s.group_out(),
            taps: s.kernel[0] * s.kernel[1],
            plane_in: s.input[0] * s.input[1],
            plane_out: oh * ow,
            padded_pitch,
            acc_pitch,
            geo,
        }
    }

    /// The register-tile rows (blocks of positions) of one [`correlate`]
    /// of `outputs` channels over `len` positions, over which the next
    /// task's planes are fetched.
    fn correlate_steps(&self, outputs: usize, len: usize) -> usize {
        outputs.div_ceil(4) * len.div_ceil(BLOCK)
    }

    /// Whether weight gradients go in register tiles of channel pairs
    /// ([`GradTile`]).
    fn tiled_grad(&self) -> bool {
        self.cig >= GRAD_TILE && self.cog >= GRAD_TILE
    }

    /// The steps of one image's weight-gradient sums (a tile's tap; a
    /// ninth of a [`tap_tile`]), over which the next image's planes are
    /// fetched.
    fn grad_steps(&self) -> usize {
        let tiles = |n: usize| n.div_ceil(GRAD_TILE);
        tiles(self.cig) * tiles(self.cog) * self.taps
    }

    /// Scratch of one weight-gradient task: the padded input planes, then
    /// the spread output gradients.
    fn grad_scratch(&self) -> Vec<f32> {
        vec![0f32; self.cig * self.padded_pitch + self.cog * self.acc_pitch]
    }
}

/// `y = conv2d(x, w) + bias`, same results as
/// [`forward_ref`](super::conv::forward_ref) up to rounding. Depthwise
/// 3×3 layers run in [`depthwise_rows`] where it
/// [suits](depthwise_rows::suits) them (same values).
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    forward_isa(s, x, w, bias, y, Sources::Own, Isa::best())
}

/// Which input planes each (image, group) task reads.
#[derive(Clone, Copy)]
enum Sources<'a> {
    /// Its own group's.
    Own,
    /// Depthwise layers: group `g` reads input channel `source[g]` of the
    /// permutation, as if the input's channels had been permuted first (a
    /// channel shuffle folded into the convolution).
    Gathered(&'a Permutation),
}

impl Sources<'_> {
    /// The input planes of group `g` of image `n`.
    fn input<'x>(&self, s: &Conv2dShape, x: &'x [f32], n: usize, g: usize) -> &'x [f32] {
        s.input_group(x, n, self.source(g))
    }

    /// The input group that group `g` reads.
    fn source(&self, g: usize) -> usize {
        match self {
            Sources::Own => g,
            Sources::Gathered(p) => p.source[g],
        }
    }

    /// The group that reads input group `j`, whose task writes its
    /// gradient.
    fn reader(&self, j: usize) -> usize {
        match self {
            Sources::Own => j,
            Sources::Gathered(p) => p.target[j],
        }
    }
}

/// [`forward`] of a depthwise layer (one input and one output channel per
/// group) applied to the input's channels permuted by `perm` (a channel
/// shuffle before it), without permuting them: group `g` reads input
/// channel `perm.source[g]`.
pub fn forward_gathered(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    perm: &Permutation,
    y: &mut [f32],
) -> Result<()> {
    check_gathered(s, perm)?;
    forward_isa(s, x, w, bias, y, Sources::Gathered(perm), Isa::best())
}

/// Errors unless `s` is depthwise and `perm` permutes its channels.
fn check_gathered(s: &Conv2dShape, perm: &Permutation) -> Result<()> {
    if s.group_in() != 1 || s.group_out() != 1 || perm.source.len() != s.groups {
        return Err(crate::error::Error::invalid(format!(
            "conv2d with gathered channels: needs a depthwise layer and a permutation of its \
             {} channels, got {s:?} and {} channels",
            s.groups,
            perm.source.len()
        )));
    }
    Ok(())
}

fn forward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    sources: Sources,
    isa: Isa,
) -> Result<()> {
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    if depthwise_rows::suits(s, isa) {
        depthwise_rows::forward(s, x, w, bias, y, |g| sources.source(g));
        return Ok(());
    }
    let p = Plan::new(s);
    // Per group, the kernels as [C_in/g][taps][C_out/g] (see `correlate`).
    let group_len = p.cog * p.cig * p.taps;
    let mut wt = vec![0f32; w.len()];
    for (src, dst) in w
        .chunks_exact(group_len)
        .zip(wt.chunks_exact_mut(group_len))
    {
        for (co, kernels) in src.chunks_exact(p.cig * p.taps).enumerate() {
            for (ci, kernel) in kernels.chunks_exact(p.taps).enumerate() {
                for (t, &v) in kernel.iter().enumerate() {
                    dst[(ci * p.taps + t) * p.cog + co] = v;
                }
            }
        }
    }
    let input = |task: usize| sources.input(s, x, task / s.groups, task % s.groups);
    let stages = Stages {
        task_len: p.cog * p.plane_out,
        scratch_len: p.cig * p.padded_pitch,
        staging_len: p.cog * p.acc_pitch,
        parts: p.cog * p.geo.out_h,
        steps: p.correlate_steps(p.cog, p.acc_pitch),
    };
    stages.run(
        y,
        input,
        |task, scratch, acc, bg| {
            let g = task % s.groups;
            let bs = bias.map_or(&[][..], |b| &b[g * p.cog..][..p.cog]);
            forward_group_isa(
                isa,
                &p,
                input(task),
                s.weight_group(&wt, g),
                bs,
                scratch,
                acc,
                bg,
            );
        },
        |acc, out, parts| gather_rows_isa(isa, &p, acc, out, parts),
    );
    Ok(())
}

/// The fewest values one [`Drain`] step writes.
const DRAIN_VALUES: usize = 256;

/// The largest output (bytes) whose tasks [`Stages`] runs one after the
/// other, each writing its results at its end: the output stays in the L2
/// cache, where stores find their lines.
const CACHED_OUTPUT: usize = 1 << 20;

/// How the (image, group) tasks of a forward or input-gradient pass
/// overlap their memory traffic with their arithmetic: each task leaves
/// its results in a staging buffer (`staging_len` values), and they are
/// written to the task's `task_len` values of the output in `parts`
/// pieces (rows) while the next task computes, a share per step of its
/// `steps` (register-tile rows), as the task after that is fetched
/// ([`Background`]). Written at the end of their own task, the results
/// stalled the core on every line the stores had to read first (perf:
/// half of a stride-2 input gradient's samples sat on them). Written a
/// plane per step, or a plane per step with non-temporal stores, they
/// were no faster than at the end of the task. An output of at most
/// [`CACHED_OUTPUT`] bytes (inference at batch 1) goes without: each
/// task's results are written at its end, nothing done between its steps
/// ([`Background::Idle`]).
struct Stages {
    task_len: usize,
    /// A task's own scratch, zeroed when a rayon job starts and reused by
    /// its tasks (forward: padded input planes; input gradient: spread
    /// output gradients).
    scratch_len: usize,
    staging_len: usize,
    parts: usize,
    steps: usize,
}

impl Stages {
    /// Runs the tasks that write `out` in parallel runs of consecutive
    /// tasks: `compute(task, scratch, staging, background)` fills
    /// `staging`, `write(staging, out, parts)` writes pieces `parts` of it
    /// to the task's output; `planes(task)` is what a task reads first.
    fn run<'x>(
        &self,
        out: &mut [f32],
        planes: impl Fn(usize) -> &'x [f32] + Sync,
        compute: impl Fn(usize, &mut [f32], &mut [f32], &mut Background) + Sync,
        write: impl Fn(&[f32], &mut [f32], std::ops::Range<usize>) + Sync,
    ) {
        let tasks = out.len() / self.task_len;
        // Runs enough for the threads to balance their loads.
        let per_run = tasks.div_ceil(8 * rayon::current_num_threads()).max(1);
        // An output that stays in the cache takes each task's results at
        // its end, and the next task's planes are asked for at once: the
        // steps of a depthwise task on 28 × 28 or smaller planes are so
        // short that work between them made it 10–20 % slower.
        let cached = size_of_val(out) <= CACHED_OUTPUT;
        let stagings = if cached { 1 } else { 2 };
        out.par_chunks_mut(per_run * self.task_len)
            .enumerate()
            .for_each_init(
                || vec![0f32; self.scratch_len + stagings * self.staging_len],
                |buf, (run, outs)| {
                    let (scratch, staging) = buf.split_at_mut(self.scratch_len);
                    let first = run * per_run;
                    if cached {
                        for (k, out) in outs.chunks_exact_mut(self.task_len).enumerate() {
                            if first + k + 1 < tasks {
                                crate::simd::prefetch(planes(first + k + 1));
                            }
                            compute(first + k, scratch, staging, &mut Background::Idle);
                            write(staging, out, 0..self.parts);
                        }
                    } else {
                        let fetch = |task| Trickle::new([planes(task), &[]], self.steps);
                        self.overlapped(outs, first, [scratch, staging], fetch, &compute, &write);
                    }
                },
            );
    }

    /// The tasks of a run from `first` on, each one's results written
    /// while the next one computes.
    fn overlapped<'x>(
        &self,
        outs: &mut [f32],
        first: usize,
        [scratch, staging]: [&mut [f32]; 2],
        fetch: impl Fn(usize) -> Trickle<'x>,
        compute: impl Fn(usize, &mut [f32], &mut [f32], &mut Background),
        write: impl Fn(&[f32], &mut [f32], std::ops::Range<usize>),
    ) {
        // Pieces of at least DRAIN_VALUES values (the rest of a call costs
        // more than short rows take to write: depthwise 3×3/2 input
        // gradients with rows of 56 values were 11 % slower written a row
        // per step).
        let least = DRAIN_VALUES.div_ceil((self.task_len / self.parts.max(1)).max(1));
        let per_step = self.parts.div_ceil(self.steps.max(1)).max(least);
        let (mut cur, mut prev) = staging.split_at_mut(self.staging_len);
        let mut pending: Option<&mut [f32]> = None;
        let count = outs.len() / self.task_len;
        for (k, out) in outs.chunks_exact_mut(self.task_len).enumerate() {
            {
                let prev: &[f32] = prev;
                let mut drain = |parts| {
                    if let Some(o) = pending.as_deref_mut() {
                        write(prev, o, parts);
                    }
                };
                let mut bg = Background::Busy {
                    fetch: match k + 1 < count {
                        true => fetch(first + k + 1),
                        false => Trickle::none(),
                    },
                    drain: Drain {
                        write: &mut drain,
                        parts: Shares::new(self.parts, per_step),
                    },
                };
                compute(first + k, scratch, cur, &mut bg);
                bg.finish();
            }
            std::mem::swap(&mut cur, &mut prev);
            pending = Some(out);
        }
        if let Some(o) = pending {
            write(prev, o, 0..self.parts);
        }
    }
}

/// What a task does beside its arithmetic, a share per step (register-tile
/// row): fetching the next task's planes and writing out the results of
/// the task before it; or nothing (one branch per step).
pub(crate) enum Background<'a> {
    Idle,
    Busy {
        fetch: Trickle<'a>,
        drain: Drain<'a>,
    },
}

impl Background<'_> {
    #[inline(always)]
    fn step(&mut self) {
        if let Background::Busy { fetch, drain } = self {
            fetch.step();
            drain.step();
        }
    }

    fn finish(&mut self) {
        if let Background::Busy { fetch, drain } = self {
            fetch.finish();
            drain.finish();
        }
    }
}

/// Writing the pieces of a finished task's results, a share per step.
pub(crate) struct Drain<'a> {
    write: &'a mut dyn FnMut(std::ops::Range<usize>),
    parts: Shares,
}

impl Drain<'_> {
    #[inline(always)]
    fn step(&mut self) {
        let parts = self.parts.next();
        if !parts.is_empty() {
            (self.write)(parts);
        }
    }

    fn finish(&mut self) {
        let parts = self.parts.rest();
        if !parts.is_empty() {
            (self.write)(parts);
        }
    }
}

/// Pieces `parts` (output rows, plane-major) of a forward task's
/// accumulators `acc` (planes `acc_pitch` apart) written to its output
/// planes.
#[inline(always)]
fn gather_rows<T: Scalar>(p: &Plan, acc: &[T], out: &mut [T], parts: std::ops::Range<usize>) {
    for (c, rows) in by_plane(parts, p.geo.out_h) {
        let plane = &mut out[c * p.plane_out..][..p.plane_out];
        let acc = &acc[c * p.acc_pitch..];
        for oy in rows {
            p.geo.gather_row(acc, plane, oy);
        }
    }
}

/// Pieces `parts` of planes of `per_plane` pieces each (plane-major), as
/// (plane, its pieces) pairs.
#[inline(always)]
fn by_plane(
    parts: std::ops::Range<usize>,
    per_plane: usize,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
    let planes = parts.start / per_plane..parts.end.div_ceil(per_plane);
    planes.map(move |c| {
        let start = parts.start.max(c * per_plane) - c * per_plane;
        let end = parts.end.min((c + 1) * per_plane) - c * per_plane;
        (c, start..end)
    })
}

/// Pieces `parts` (plane-major, [`Geometry::unpad_parts`] per plane) of an
/// input-gradient task's padded planes written to its input-gradient
/// planes.
#[inline(always)]
fn unpad_parts<T: Scalar>(p: &Plan, padded: &[T], dx: &mut [T], parts: std::ops::Range<usize>) {
    for (c, pieces) in by_plane(parts, p.geo.unpad_parts()) {
        let plane = &mut dx[c * p.plane_in..][..p.plane_in];
        let padded = &padded[c * p.padded_pitch..];
        for part in pieces {
            p.geo.unpad_part(padded, plane, part);
        }
    }
}

/// Pads the `cig` input planes of `x` into `padded` (one plane per
/// `padded_pitch`). Padding and slack stay zero from the scratch's
/// allocation ([`Stages`], [`Plan::grad_scratch`]): nothing else writes
/// this part of a forward or weight-gradient task's scratch, and every
/// plane of a call
/// shares one geometry, so [`Geometry::pad`] writes only the input's
/// positions (depthwise 3×3 layers at batch 1, one thread, two
/// alternating rounds: 3–7 % faster than with every plane zeroed first).
#[inline(always)]
fn pad_planes<T: Scalar>(p: &Plan, x: &[T], padded: &mut [T]) {
    for (src, dst) in x
        .chunks_exact(p.plane_in)
        .zip(padded.chunks_exact_mut(p.padded_pitch))
    {
        p.geo.pad(src, dst);
    }
}

/// One (image, group) forward task: pads the group's input planes into
/// `padded` and leaves its `cog` output planes in `acc` (at the
/// accumulator pitch, for [`gather_rows`]); `bias` is empty or holds the
/// group's `cog` biases.
#[inline(always)]
fn forward_group<T: Fma>(
    p: &Plan,
    x: &[T],
    w: &[T],
    bias: &[T],
    padded: &mut [T],
    acc: &mut [T],
    bg: &mut Background,
) {
    pad_planes(p, x, padded);
    let src = Planes {
        data: padded,
        pitch: p.padded_pitch,
        count: p.cig,
        offsets: &p.geo.taps,
    };
    correlate(&src, w, bias, acc, [p.acc_pitch, p.acc_pitch], p.cog, bg);
}

/// Input planes of a correlation: `count` planes `pitch` apart in `data`,
/// read at `offsets[t]` (plus the position) for tap `t`.
struct Planes<'a, T> {
    data: &'a [T],
    pitch: usize,
    count: usize,
    offsets: &'a [usize],
}

/// `dst[c][i] = bias[c] + Σ_{k, t} w[k][t][c] · src[k][offsets[t] + i]` for
/// `outputs` planes `pitch` apart in `dst` (`w`: `[src.count][taps][outputs]`,
/// output-channel fastest so that a tile's weights sit side by side;
/// `bias` empty or one value per output); `i` runs over whole blocks
/// covering `0 .. len` (`[pitch, len]`). Both the forward pass and the
/// input gradient are this.
#[inline(always)]
fn correlate<T: Fma>(
    src: &Planes<T>,
    w: &[T],
    bias: &[T],
    dst: &mut [T],
    pitch_len: [usize; 2],
    outputs: usize,
    bg: &mut Background,
) {
    let tile = Tile {
        src,
        reach: src.offsets.iter().copied().max().unwrap_or(0),
        w,
        bias,
        outputs,
        pitch_len,
    };
    let mut c = 0;
    while c < outputs {
        // Tiles of 4 channels × 4 vectors: 16 accumulators. (Wider tiles
        // of 8 channels × 2 vectors lost their accumulators to the stack:
        // the compiler vectorised across the channels instead.)
        c += match outputs - c {
            // Depthwise 3×3 over more than one block (on one block, as
            // 7 × 7 planes, holding the weights gained nothing and the set-up
            // cost 6 %).
            1 if src.count == 1 && src.offsets.len() == 9 && pitch_len[1] > BLOCK => {
                tile.narrow(c, dst, bg, &tile.depthwise::<9>(c))
            }
            1 => tile.narrow(c, dst, bg, &tile.channels::<1>(c)),
            2 => tile.narrow(c, dst, bg, &tile.channels::<2>(c)),
            3 => tile.narrow(c, dst, bg, &tile.channels::<3>(c)),
            _ => {
                let sums = tile.channels::<4>(c);
                tile.blocks::<4, VECTORS>(c, dst, 0..pitch_len[1], bg, &sums);
                4
            }
        };
    }
}

/// The operands of [`correlate`].
struct Tile<'a, T> {
    src: &'a Planes<'a, T>,
    /// The largest of `src.offsets`.
    reach: usize,
    w: &'a [T],
    bias: &'a [T],
    outputs: usize,
    pitch_len: [usize; 2],
}

/// The sums of a register tile: `CO` outputs at the `NV` vectors of
/// positions from `start`.
trait TileSums<T, const CO: usize> {
    fn at<const NV: usize>(&self, start: usize) -> [[Lanes<T>; NV]; CO];
}

/// Outputs `c0 .. c0 + CO` of a [`Tile`], from their biases.
struct Channels<'a, T, const CO: usize> {
    tile: &'a Tile<'a, T>,
    c0: usize,
    bias: [T; CO],
}

/// The output of a depthwise [`Tile`] (one input plane) with `TAPS` taps,
/// its weights held in registers for the whole plane instead of broadcast
/// again at every tap of every block (the same sums in the same order).
struct Depthwise<'a, T, const TAPS: usize> {
    tile: &'a Tile<'a, T>,
    offsets: [usize; TAPS],
    w: [T; TAPS],
    bias: T,
}

impl<'a, T: Fma> Tile<'a, T> {
    /// The [`TileSums`] of outputs `c0 .. c0 + CO`.
    #[inline(always)]
    fn channels<const CO: usize>(&'a self, c0: usize) -> Channels<'a, T, CO> {
        let bias = std::array::from_fn(|c| self.bias.get(c0 + c).copied().unwrap_or(T::zero()));
        Channels {
            tile: self,
            c0,
            bias,
        }
    }

    /// The [`TileSums`] of output `c` from the only input plane.
    #[inline(always)]
    fn depthwise<const TAPS: usize>(&'a self, c: usize) -> Depthwise<'a, T, TAPS> {
        Depthwise {
            tile: self,
            offsets: std::array::from_fn(|t| self.src.offsets[t]),
            w: std::array::from_fn(|t| self.w[t * self.outputs + c]),
            bias: self.bias.get(c).copied().unwrap_or(T::zero()),
        }
    }

    /// [`blocks`](Self::blocks) for fewer than 4 outputs: blocks of 4
    /// vectors while whole ones remain, then of 2. Returns `CO`.
    ///
    /// Blocks of 2 only (depthwise planes of 14×14 ran 25 % slower in
    /// blocks of 4 only: more positions past the last output) left one
    /// channel two chains of dependent multiply-adds, too few to keep the
    /// FMA units busy (depthwise 3×3 on 28×28, 1 thread: 51 → 42 µs for
    /// 96 planes). Blocks of 8 were 7× slower: the compiler no longer kept
    /// them in registers.
    #[inline(always)]
    fn narrow<const CO: usize>(
        &self,
        c0: usize,
        dst: &mut [T],
        bg: &mut Background,
        sums: &impl TileSums<T, CO>,
    ) -> usize {
        let len = self.pitch_len[1];
        let whole = len / BLOCK * BLOCK;
        self.blocks::<CO, VECTORS>(c0, dst, 0..whole, bg, sums);
        self.blocks::<CO, 2>(c0, dst, whole..len, bg, sums);
        CO
    }

    /// Outputs `c0 .. c0 + CO` of [`correlate`] at positions `positions`,
    /// `NV` vectors of positions at a time, the `CO × NV` accumulators held
    /// in registers across input planes and taps.
    #[inline(always)]
    fn blocks<const CO: usize, const NV: usize>(
        &self,
        c0: usize,
        dst: &mut [T],
        positions: std::ops::Range<usize>,
        bg: &mut Background,
        sums: &impl TileSums<T, CO>,
    ) {
        let pitch = self.pitch_len[0];
        for start in positions.step_by(NV * LANES) {
            bg.step();
            let a = sums.at::<NV>(start);
            for (c, row) in a.iter().enumerate() {
                let out = &mut dst[(c0 + c) * pitch + start..][..NV * LANES];
                for (o, acc) in out.chunks_exact_mut(LANES).zip(row) {
                    o.copy_from_slice(acc);
                }
            }
        }
    }
}

impl<T: Fma, const CO: usize> TileSums<T, CO> for Channels<'_, T, CO> {
    #[inline(always)]
    fn at<const NV: usize>(&self, start: usize) -> [[Lanes<T>; NV]; CO] {
        let (tile, c0) = (self.tile, self.c0);
        let (src, taps) = (tile.src, tile.src.offsets.len());
        let mut a: [[Lanes<T>; NV]; CO] = std::array::from_fn(|c| [[self.bias[c]; LANES]; NV]);
        let weights = tile.w[..src.count * taps * tile.outputs].chunks_exact(tile.outputs);
        let mut weights = weights.map(|row| &row[c0..][..CO]);
        for k in 0..src.count {
            // Every tap's vectors lie in `plane`: one bounds check per
            // plane, none per tap.
            let plane = &src.data[k * src.pitch + start..][..tile.reach + NV * LANES];
            for (&offset, wt) in src.offsets.iter().zip(&mut weights) {
                // SAFETY: `offset ≤ reach`, so the range lies in `plane`.
                let v = unsafe { plane.get_unchecked(offset..offset + NV * LANES) };
                let xs: [Lanes<T>; NV] =
                    std::array::from_fn(|j| v[j * LANES..][..LANES].try_into().expect("lanes"));
                for c in 0..CO {
                    for j in 0..NV {
                        fma_lanes(&mut a[c][j], wt[c], &xs[j]);
                    }
                }
            }
        }
        a
    }
}

impl<T: Fma, const TAPS: usize> TileSums<T, 1> for Depthwise<'_, T, TAPS> {
    #[inline(always)]
    fn at<const NV: usize>(&self, start: usize) -> [[Lanes<T>; NV]; 1] {
        let tile = self.tile;
        let plane = &tile.src.data[start..][..tile.reach + NV * LANES];
        let mut a = [[self.bias; LANES]; NV];
        for (&offset, &w) in self.offsets.iter().zip(&self.w) {
            // SAFETY: `offset ≤ reach`, so the vectors lie in `plane`.
            let v = unsafe { plane.get_unchecked(offset..offset + NV * LANES) };
            for (a, v) in a.iter_mut().zip(v.as_chunks::<LANES>().0) {
                fma_lanes(a, w, v);
            }
        }
        [a]
    }
}

/// Gradients of `Σ dy · conv2d(x, w)`, each computed only when its buffer
/// is given (and overwritten). `dx`: one task per (image, group) computes
/// the padded input planes' gradients as a correlation of the output
/// gradients with the transposed kernel read at reversed tap offsets (the
/// adjoint of the forward pass, gathered rather than scattered so that
/// every value is written once), then cuts them back. `dw`: products of
/// spread output gradients with shifted padded inputs, each weight's in
/// [`LANES`] partial sums over the positions and the task's images,
/// reduced at the end; tasks split the batch by [`weight_grad_tasks`]
/// (deterministic for a fixed thread count). The input gradient of
/// depthwise 3×3 layers runs in [`depthwise_rows`] where it
/// [suits](depthwise_rows::suits_input_grad) them (same values).
pub fn backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    backward_isa(s, x, w, dy, [dx, dw, db], Sources::Own, Isa::best())
}

/// [`backward`] of the layer of [`forward_gathered`] (the gradients it
/// is given buffers for): `dx` is the gradient of the input as given (not
/// permuted).
pub fn backward_gathered(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    perm: &Permutation,
    grads: [Option<&mut [f32]>; 3],
) -> Result<()> {
    check_gathered(s, perm)?;
    backward_isa(s, x, w, dy, grads, Sources::Gathered(perm), Isa::best())
}

fn backward_isa(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
    sources: Sources,
    isa: Isa,
) -> Result<()> {
    s.check_grad_lens(x, w, dy, [dx.as_deref(), dw.as_deref(), db.as_deref()])?;
    let p = Plan::new(s);
    let dx = match dx {
        Some(dx) if depthwise_rows::suits_input_grad(s, isa) => {
            depthwise_rows::input_grad(s, w, dy, dx, |j| sources.reader(j));
            None
        }
        dx => dx,
    };
    if let Some(dx) = dx {
        // Per phase, the weights of its taps as [group][C_out/g][taps][C_in/g]
        // (the outputs of this correlation are the input channels).
        let wts: Vec<Vec<f32>> = p
            .phases
            .iter()
            .map(|ph| {
                let mut out = Vec::with_capacity(s.groups * p.cig * p.cog * ph.taps.len());
                for g in 0..s.groups {
                    let group = s.weight_group(w, g);
                    for co in 0..p.cog {
                        for &t in &ph.taps {
                            out.extend((0..p.cig).map(|ci| group[(co * p.cig + ci) * p.taps + t]));
                        }
                    }
                }
                out
            })
            .collect();
        // Task `n · groups + j` computes the gradient of input group `j`
        // from the output gradients of the group that reads it.
        let reader = |task: usize| sources.reader(task % s.groups);
        let grads = |task: usize| s.output_group(dy, task / s.groups, reader(task));
        let stages = Stages {
            task_len: p.cig * p.plane_in,
            scratch_len: p.cog * p.dy_pitch,
            staging_len: p.cig * p.padded_pitch,
            parts: p.cig * p.geo.unpad_parts(),
            steps: p.phases.len() * p.correlate_steps(p.cig, p.geo.block_len()),
        };
        stages.run(
            dx,
            grads,
            |task, scratch, padded, bg| {
                let g = reader(task);
                input_grad_group_isa(isa, &p, grads(task), &wts, g, scratch, padded, bg);
            },
            |padded, dx, parts| unpad_parts_isa(isa, &p, padded, dx, parts),
        );
    }
    if let Some(dw) = dw {
        weight_grad_tasks(
            s,
            dw,
            || {
                (
                    p.grad_scratch(),
                    vec![[0f32; LANES]; p.cog * p.cig * p.taps],
                )
            },
            |(scratch, sums), images, g, dw, _| {
                sums.fill([0.0; LANES]);
                for n in images.clone() {
                    // The next image's planes are a whole image away: no
                    // hardware prefetcher sees them coming. They are asked
                    // for while this image's sums are computed.
                    let mut next = if n + 1 < images.end {
                        let next = [sources.input(s, x, n + 1, g), s.output_group(dy, n + 1, g)];
                        Trickle::new(next, p.grad_steps())
                    } else {
                        Trickle::none()
                    };
                    let (xs, dys) = (sources.input(s, x, n, g), s.output_group(dy, n, g));
                    weight_grad_group_isa(isa, &p, xs, dys, scratch, sums, &mut next);
                }
                for (d, lanes) in dw.iter_mut().zip(sums.iter()) {
                    *d = crate::simd::sum(lanes);
                }
            },
        );
    }
    if let Some(db) = db {
        super::conv::bias_grad(s, dy, db);
    }
    Ok(())
}

/// Spreads the `cog` output-gradient planes of `dy` to the accumulator
/// layout (pitch `phase_len`, zeros elsewhere), planes `pitch` apart, each
/// after `lead` zeros.
#[inline(always)]
fn spread_planes<T: Scalar>(p: &Plan, dy: &[T], acc: &mut [T], pitch: usize, lead: usize) {
    for (src, dst) in dy
        .chunks_exact(p.plane_out)
        .zip(acc.chunks_exact_mut(pitch))
    {
        dst[..lead].fill(T::zero());
        p.geo.spread(src, &mut dst[lead..]);
    }
}

/// One (image, group) input-gradient task: `wts[phase]` holds each
/// group's kernel taps of that phase transposed to
/// `[C_out/g][taps][C_in/g]`; the output gradients are spread into `dys`,
/// and the gradients of the group's `cig` padded input planes left in
/// `padded` (for [`unpad_parts`]).
#[inline(always)]
fn input_grad_group<T: Fma>(
    p: &Plan,
    dy: &[T],
    wts: &[Vec<T>],
    g: usize,
    dys: &mut [T],
    padded: &mut [T],
    bg: &mut Background,
) {
    spread_planes(p, dy, dys, p.dy_pitch, p.dy_lead);
    // In layout order: each phase's rounding overrun is rewritten by the next.
    for (ph, wt) in p.phases.iter().zip(wts) {
        let per_group = p.cig * p.cog * ph.taps.len();
        let src = Planes {
            data: dys,
            pitch: p.dy_pitch,
            count: p.cog,
            offsets: &ph.offsets,
        };
        let pitch_len = [p.padded_pitch, p.geo.block_len()];
        correlate(
            &src,
            &wt[g * per_group..][..per_group],
            &[],
            &mut padded[ph.base..],
            pitch_len,
            p.cig,
            bg,
        );
    }
}

/// Adds one image's contribution to a group's weight gradient,
/// `dw[c][ci][t] += Σ_i dy[c][i] · padded[ci][taps[t] + i]`, to `sums`
/// (each weight's [`LANES`] partial sums, reduced by the caller). Groups
/// of at least [`GRAD_TILE`] inputs and outputs go in register tiles of
/// [`GRAD_TILE`] × [`GRAD_TILE`] channel pairs; narrower ones (depthwise)
/// with 3×3 kernels in tiles of all [`TAP_TILE`] taps of one channel
/// pair, others as one dot product per weight, added to lane 0.
#[inline(always)]
fn weight_grad_group<T: Fma>(
    p: &Plan,
    x: &[T],
    dy: &[T],
    scratch: &mut [T],
    sums: &mut [Lanes<T>],
    next: &mut Trickle,
) {
    let (padded, acc) = scratch.split_at_mut(p.cig * p.padded_pitch);
    pad_planes(p, x, padded);
    spread_planes(p, dy, acc, p.acc_pitch, 0);
    if p.tiled_grad() {
        let tile = GradTile {
            x: padded,
            x_pitch: p.padded_pitch,
            dy: acc,
            dy_pitch: p.acc_pitch,
            offsets: &p.geo.taps,
            // The spread gradients are zero from `acc_len` to `acc_pitch`,
            // a whole number of vectors.
            vectors: p.geo.acc_len().div_ceil(LANES),
            dims: [p.cog, p.cig],
        };
        tile.run(sums, next);
        return;
    }
    if p.taps == TAP_TILE {
        let vectors = p.geo.acc_len().div_ceil(LANES);
        for (c, sums_c) in sums.chunks_exact_mut(p.cig * TAP_TILE).enumerate() {
            let dys = &acc[c * p.acc_pitch..].as_chunks::<LANES>().0[..vectors];
            for (ci, sums_ci) in sums_c.chunks_exact_mut(TAP_TILE).enumerate() {
                let plane = &padded[ci * p.padded_pitch..];
                tap_tile(dys, plane, &p.geo.taps, sums_ci, next);
            }
        }
        next.finish();
        return;
    }
    next.finish();
    let len = p.geo.acc_len();
    for (c, sums_c) in sums.chunks_exact_mut(p.cig * p.taps).enumerate() {
        let g = &acc[c * p.acc_pitch..][..len];
        for (ci, sums_ci) in sums_c.chunks_exact_mut(p.taps).enumerate() {
            let plane = &padded[ci * p.padded_pitch..];
            for (d, &offset) in sums_ci.iter_mut().zip(&p.geo.taps) {
                d[0] = d[0] + crate::simd::dot(g, &plane[offset..offset + len]);
            }
        }
    }
}

/// Input and output channels per weight-gradient register tile.
const GRAD_TILE: usize = 4;

/// Taps of the narrow groups' weight-gradient tile (3×3 kernels).
const TAP_TILE: usize = 9;

/// Adds to `sums` (one output and one input channel: a weight per tap,
/// each as [`LANES`] partial sums) the products of the spread output
/// gradients `dys` with the padded input `plane` read at each tap's
/// offset: all [`TAP_TILE`] taps' sums in registers at once, each vector
/// of gradients loaded once for all of them (one dot product per tap
/// loaded it nine times, two loads per multiply-add; so did this loop
/// until the vector was copied to a local, 12 % slower on depthwise
/// 28 × 28 planes). `next` takes about [`TAP_TILE`] steps per call: asked
/// for at once, the next image's planes stalled depthwise 3×3/2 weight
/// gradients (56 × 56 inputs, 245 lines per image) by 15 %.
#[inline(always)]
fn tap_tile<T: Fma>(
    dys: &[Lanes<T>],
    plane: &[T],
    offsets: &[usize],
    sums: &mut [Lanes<T>],
    next: &mut Trickle,
) {
    let n = dys.len();
    let xs: [&[Lanes<T>]; TAP_TILE] =
        std::array::from_fn(|t| &plane[offsets[t]..].as_chunks::<LANES>().0[..n]);
    let mut a = [[T::zero(); LANES]; TAP_TILE];
    // About `TAP_TILE` steps of the prefetch per call (`Plan::grad_steps`).
    let per_step = n.div_ceil(TAP_TILE).max(1);
    for (k, chunk) in dys.chunks(per_step).enumerate() {
        next.step();
        for (v, d) in (k * per_step..).zip(chunk) {
            let d = *d;
            for (a, xs) in a.iter_mut().zip(&xs) {
                mul_add_lanes(a, &d, &xs[v]);
            }
        }
    }
    for (s, a) in sums.iter_mut().zip(&a) {
        add_lanes(s, a);
    }
}

/// The operands of a tiled [`weight_grad_group`].
struct GradTile<'a, T> {
    /// Padded input planes, `x_pitch` apart.
    x: &'a [T],
    x_pitch: usize,
    /// Spread output gradients, `dy_pitch` apart.
    dy: &'a [T],
    dy_pitch: usize,
    offsets: &'a [usize],
    /// Vectors of positions to sum over.
    vectors: usize,
    /// Outputs and inputs of the group, each at least [`GRAD_TILE`].
    dims: [usize; 2],
}

impl<T: Fma> GradTile<'_, T> {
    /// Adds, tap by tap, to the partial sums of [`GRAD_TILE`] ×
    /// [`GRAD_TILE`] (output, input) pairs at a time, held in registers
    /// over all positions. The last tile along each dimension is moved back
    /// to fit and stores only the pairs the tile before it did not.
    #[inline(always)]
    fn run(&self, sums: &mut [Lanes<T>], next: &mut Trickle) {
        const W: usize = GRAD_TILE;
        let [cog, cig] = self.dims;
        let taps = self.offsets.len();
        let index = |c, ci, t| (c * cig + ci) * taps + t;
        for (c0, c_skip) in tile_starts(cog, W) {
            for (i0, i_skip) in tile_starts(cig, W) {
                for (t, &offset) in self.offsets.iter().enumerate() {
                    next.step();
                    // `a[ci][c]`: the pair (output c0 + c, input i0 + ci).
                    let mut a = [[[T::zero(); LANES]; W]; W];
                    for (ci, row) in a.iter_mut().enumerate() {
                        for (c, a) in row.iter_mut().enumerate() {
                            *a = sums[index(c0 + c, i0 + ci, t)];
                        }
                    }
                    // Every plane cut to the loop's length once, so that
                    // the loop itself checks no bounds.
                    let n = self.vectors;
                    let (mut dys, mut xs) = ([&[][..]; W], [&[][..]; W]);
                    for (c, dys) in dys.iter_mut().enumerate() {
                        *dys = &self.dy[(c0 + c) * self.dy_pitch..].as_chunks::<LANES>().0[..n];
                    }
                    for (ci, xs) in xs.iter_mut().enumerate() {
                        *xs = &self.x[(i0 + ci) * self.x_pitch + offset..]
                            .as_chunks::<LANES>()
                            .0[..n];
                    }
                    for v in 0..n {
                        let mut d = [[T::zero(); LANES]; W];
                        for (d, dys) in d.iter_mut().zip(&dys) {
                            *d = dys[v];
                        }
                        for (row, xs) in a.iter_mut().zip(&xs) {
                            for (a, d) in row.iter_mut().zip(&d) {
                                mul_add_lanes(a, d, &xs[v]);
                            }
                        }
                    }
                    // Whole ranges (constant indices into `a`, a test
                    // inside), so that `a` stays in registers.
                    for (ci, row) in a.iter().enumerate() {
                        for (c, a) in row.iter().enumerate() {
                            if c >= c_skip && ci >= i_skip {
                                sums[index(c0 + c, i0 + ci, t)] = *a;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Tiles of `width` covering `0 .. n` (`n ≥ width`): `(start, skip)`
/// with the last start moved back to `n − width`, skipping the entries
/// the tile before it covered.
fn tile_starts(n: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(width)).map(move |b| {
        let start = (b * width).min(n - width);
        (start, b * width - start)
    })
}

crate::dispatch!(fn forward_group_isa<T: Fma>(p: &Plan, x: &[T], w: &[T], bias: &[T], padded: &mut [T], acc: &mut [T], bg: &mut Background) => forward_group);
crate::dispatch!(fn input_grad_group_isa<T: Fma>(p: &Plan, dy: &[T], wts: &[Vec<T>], g: usize, dys: &mut [T], padded: &mut [T], bg: &mut Background) => input_grad_group);
crate::dispatch!(fn gather_rows_isa<T: Scalar>(p: &Plan, acc: &[T], out: &mut [T], parts: std::ops::Range<usize>) => gather_rows);
crate::dispatch!(fn unpad_parts_isa<T: Scalar>(p: &Plan, padded: &[T], dx: &mut [T], parts: std::ops::Range<usize>) => unpad_parts);
crate::dispatch!(fn weight_grad_group_isa<T: Fma>(p: &Plan, x: &[T], dy: &[T], scratch: &mut [T], sums: &mut [Lanes<T>], next: &mut Trickle) => weight_grad_group);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{
        assert_backward_matches_reference, assert_forward_matches_reference, test_shape,
    };

    #[test]
    fn depthwise_rows_give_the_direct_kernels_values_bit_for_bit() {
        if Isa::best() != Isa::Avx512 {
            return;
        }
        // (batch, channels, h, w, stride, padding, dilation, bias, shuffle
        // groups): rows of 1 to 5 vectors (the last partial or whole),
        // row counts that leave a partial register tile, strides 1 and 2,
        // dilation, padding 0 to 2, a folded shuffle.
        let cases = [
            (2, 6, 28, 28, 1, 1, 1, true, 0),
            (1, 5, 14, 14, 1, 1, 1, false, 0),
            (2, 3, 9, 8, 1, 1, 1, true, 0),
            (1, 4, 56, 56, 2, 1, 1, true, 0),
            (1, 2, 11, 70, 1, 1, 1, false, 0),
            (1, 3, 10, 40, 1, 1, 1, true, 0),
            (2, 3, 13, 33, 1, 2, 2, true, 0),
            (1, 3, 12, 66, 2, 0, 1, false, 0),
            (1, 2, 10, 19, 1, 0, 1, false, 0),
            (1, 2, 12, 21, 1, 2, 1, true, 0),
            (2, 3, 13, 29, 2, 1, 1, false, 0),
            (1, 2, 7, 70, 2, 1, 1, true, 0),
            (1, 2, 18, 15, 2, 1, 1, true, 0),
            (2, 12, 14, 14, 2, 1, 1, false, 4),
            (2, 12, 28, 28, 1, 1, 1, true, 3),
        ];
        for (i, &(batch, c, h, w, stride, pad, dil, bias, groups)) in cases.iter().enumerate() {
            let s = test_shape(
                batch,
                [c, c, c],
                [h, w],
                [3, 3],
                [[stride; 2], [pad; 2], [dil; 2]],
            );
            assert!(depthwise_rows::suits(&s, Isa::Avx512), "{s:?}");
            let (xl, wl, yl) = s.lens();
            let values = |n: usize, seed: usize| -> Vec<f32> {
                crate::random::uniform(&[n], (3 * i + seed) as u64)
                    .iter()
                    .map(|&v| v as f32)
                    .collect()
            };
            let (x, wt, b) = (values(xl, 0), values(wl, 1), values(c, 2));
            let b = bias.then_some(b.as_slice());
            let perm = Permutation::shuffle(c, groups.max(1)).unwrap();
            let sources = match groups {
                0 => Sources::Own,
                _ => Sources::Gathered(&perm),
            };
            let [mut rows, mut direct] = [vec![f32::NAN; yl], vec![f32::NAN; yl]];
            forward_isa(&s, &x, &wt, b, &mut rows, sources, Isa::Avx512).unwrap();
            forward_isa(&s, &x, &wt, b, &mut direct, sources, Isa::Avx2).unwrap();
            let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&rows), bits(&direct), "forward {s:?}");
            // Input gradients (the row kernels at stride 1, and at stride
            // 2 with padding 1 and dilation 1; the direct kernel on both
            // otherwise).
            let rows_grad = stride == 1 || (pad == 1 && dil == 1);
            assert_eq!(depthwise_rows::suits_input_grad(&s, Isa::Avx512), rows_grad);
            let dy = values(yl, 3);
            for (isa, dx) in [(Isa::Avx512, &mut rows), (Isa::Avx2, &mut direct)] {
                *dx = vec![f32::NAN; xl];
                backward_isa(&s, &x, &wt, &dy, [Some(dx), None, None], sources, isa).unwrap();
            }
            assert_eq!(bits(&rows), bits(&direct), "input gradient {s:?}");
        }
    }

    #[test]
    fn gathered_channels_equal_a_shuffled_copy() {
        use crate::kernels::shuffle::{Permutation, channel_shuffle};
        // (batch, channels, shuffle groups, h, w, stride), depthwise 3×3
        // with padding 1: odd and even planes, strides 1 and 2.
        for (batch, c, groups, h, w, stride) in [
            (2, 12, 3, 9, 11, 1),
            (3, 12, 4, 14, 14, 2),
            (1, 8, 2, 16, 15, 1),
        ] {
            let s = test_shape(
                batch,
                [c, c, c],
                [h, w],
                [3, 3],
                [[stride; 2], [1, 1], [1, 1]],
            );
            let perm = Permutation::shuffle(c, groups).unwrap();
            let (xl, wl, yl) = s.lens();
            let values = |n: usize, seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 7919 + seed) % 211) as f32 / 50.0 - 2.0)
                    .collect()
            };
            let (x, wt, b, dy) = (values(xl, 1), values(wl, 2), values(c, 3), values(yl, 4));
            let shuffled = channel_shuffle(&x, batch, c, h * w, groups).unwrap();
            let (mut want, mut got) = (vec![0.0; yl], vec![f32::NAN; yl]);
            forward(&s, &shuffled, &wt, Some(&b), &mut want).unwrap();
            forward_gathered(&s, &x, &wt, Some(&b), &perm, &mut got).unwrap();
            assert_eq!(got, want, "forward {s:?}");
            let mut want = [vec![0.0; xl], vec![0.0; wl], vec![0.0; c]];
            let mut got = [vec![f32::NAN; xl], vec![f32::NAN; wl], vec![f32::NAN; c]];
            let [dx, dw, db] = &mut want;
            backward(&s, &shuffled, &wt, &dy, Some(dx), Some(dw), Some(db)).unwrap();
            // The shuffled copy's gradient, back in the input's order.
            want[0] = channel_shuffle(&want[0], batch, c, h * w, c / groups).unwrap();
            let [dx, dw, db] = &mut got;
            backward_gathered(&s, &x, &wt, &dy, &perm, [Some(dx), Some(dw), Some(db)]).unwrap();
            assert_eq!(got, want, "backward {s:?}");
        }
    }

    #[test]
    fn matches_the_reference() {
        // (batch, c_in, c_out, groups, h, w, k, stride, pad, dilation, bias)
        let cases = [
            (2, 12, 12, 12, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (1, 12, 12, 12, 11, 9, [3, 3], [2, 2], [1, 1], [1, 1], false),
            (2, 8, 8, 8, 9, 9, [3, 3], [1, 1], [2, 2], [2, 2], true),
            (3, 6, 6, 6, 9, 8, [5, 5], [2, 2], [2, 2], [1, 1], false),
            (1, 4, 8, 4, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 5, 5, 5, 6, 13, [3, 5], [2, 1], [0, 2], [1, 2], false),
            (1, 3, 3, 3, 4, 4, [3, 3], [2, 2], [1, 1], [1, 1], true),
            (3, 5, 15, 5, 10, 7, [3, 3], [2, 2], [1, 1], [2, 1], false),
            (2, 4, 4, 4, 8, 9, [3, 3], [3, 2], [0, 1], [1, 1], true),
            // Stride 2 across rows without padding there, odd widths.
            (2, 6, 6, 6, 7, 11, [3, 3], [1, 2], [1, 0], [1, 1], true),
            (1, 8, 8, 2, 5, 1, [3, 1], [2, 2], [1, 0], [1, 1], false),
            // Grouped, several channels per group (ResNeXt-like), odd sizes.
            (2, 16, 16, 4, 9, 7, [3, 3], [1, 1], [1, 1], [1, 1], false),
            (3, 12, 18, 3, 8, 8, [3, 3], [2, 2], [1, 1], [1, 1], true),
            (1, 14, 14, 2, 7, 5, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (2, 6, 10, 2, 9, 10, [5, 3], [2, 1], [2, 1], [1, 2], false),
            (5, 3, 8, 1, 13, 11, [7, 7], [2, 2], [3, 3], [1, 1], true),
            // Outputs and input gradients over CACHED_OUTPUT: written while
            // the next task computes.
            (2, 64, 64, 64, 47, 49, [3, 3], [1, 1], [1, 1], [1, 1], true),
            (4, 64, 64, 16, 67, 65, [3, 3], [2, 2], [1, 1], [1, 1], false),
        ];
        for (i, &(batch, cin, cout, groups, h, w, k, stride, pad, dil, bias)) in
            cases.iter().enumerate()
        {
            let s = test_shape(batch, [cin, cout, groups], [h, w], k, [stride, pad, dil]);
            for isa in Isa::available() {
                assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                    forward_isa(&s, x, w, b, y, Sources::Own, isa)
                });
                assert_backward_matches_reference(&s, i as u64, |x, w, dy, dx, dw, db| {
                    backward_isa(
                        &s,
                        x,
                        w,
                        dy,
                        [Some(dx), Some(dw), Some(db)],
                        Sources::Own,
                        isa,
                    )
                });
            }
        }
    }
}
