//! Pointwise (1×1, stride 1, no padding) grouped convolution for
//! inference, with its epilogue fused into the same pass: bias (a folded
//! batch norm), an optional residual, ReLU, and a placement of the output
//! channels in a destination that may hold more channels (a folded
//! concatenation) or interleave the groups (a folded channel shuffle).
//!
//! Shapes: input `[N, C_in, P]` (`P = H · W`), weight `[C_out, C_in / groups]`,
//! bias `[C_out]`, destination `[N, C_dst, P]`, residual (when given) laid
//! out like the destination.
//!
//! One parallel region over (image × group × row block × column block).
//! Each task walks its block in tiles of [`MR`] output channels × [`NR`]
//! positions: the tile's sums stay in vector registers over the whole
//! reduction (weights broadcast from a packed panel, inputs read in place,
//! a row of `NR` positions per input channel), then get the epilogue and
//! are stored once. Planes that fill few tiles of `NR` positions (7 × 7,
//! 14 × 14) put output channels in the vectors instead (module `wide`).

use super::Conv2dShape;
use super::conv_gemm::Unfold;
use crate::error::{Error, Result};
use crate::simd::{Fma, Isa, LANES, Lanes, fma_lanes, relu_value};
use rayon::prelude::*;

mod wide;

/// Output channels per register tile.
pub const MR: usize = 8;
/// Positions per register tile: two AVX-512 vectors.
const NR: usize = 2 * LANES;
/// Output channels per register tile of the channel-vectorised layout
/// (two AVX-512 vectors, or one: [`LANES`]), for planes that fill tiles of
/// [`NR`] positions poorly (7 × 7, 14 × 14).
const WIDE: usize = 2 * LANES;
/// Positions per register tile of the channel-vectorised layout: 7 × 7
/// planes are whole tiles; rows of 14 positions take tiles of [`PT14`],
/// planes of rows of 8, 16 or 32 positions (ResNeXt-29's 8 × 8) tiles of
/// [`PT8`], see [`position_tile`].
const PT: usize = 7;
/// The position tile for rows of 8 · i positions.
const PT8: usize = 8;
/// The position tile for rows of 14 · i positions: with two vectors of
/// output channels, 28 sums in registers (of 32) where [`PT`] holds 14,
/// so each loaded weight vector and broadcast input serves more
/// multiply-adds (ResNeXt-50's 1×1 layers on 14 × 14: 0.66 → 0.61 ms,
/// 310 → 340 GFLOP/s).
const PT14: usize = 14;

/// Positions per tile of the channel-vectorised layout for rows of
/// `row` positions (an output row of a spatial convolution, whose tiles
/// must lie in one row to be read from its padded input, or a whole plane
/// of a 1×1 layer): the first of [`PT14`], [`PT`] and [`PT8`] that divides
/// the row, else [`PT`].
fn position_tile(row: usize) -> usize {
    [PT14, PT, PT8]
        .into_iter()
        .find(|&t| row.is_multiple_of(t))
        .unwrap_or(PT)
}
/// Input channels per pass of the channel-vectorised layout: its panel
/// of `KC × WIDE` weights (16 KiB) stays in the L1 cache while the
/// position tiles sweep over it.
const KC: usize = 128;

/// The sizes of one pointwise layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointwiseShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Positions per channel, `H · W`.
    pub plane: usize,
    pub groups: usize,
}

impl PointwiseShape {
    /// Output channels per group.
    fn rows(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Input channels per group: the GEMM's reduction length.
    fn depth(&self) -> usize {
        self.in_channels / self.groups
    }
}

/// Where the output channels go: output channel `o = g · M + r` (group
/// `g`, row `r`, `M = C_out / groups`) is channel
/// `offset + g · group_step + r · row_step` of a destination with
/// `channels` channels per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub channels: usize,
    pub offset: usize,
    pub group_step: usize,
    pub row_step: usize,
}

impl Placement {
    /// The output channels in order, from channel `offset` of a
    /// destination with `channels` channels.
    pub fn contiguous(s: &PointwiseShape, channels: usize, offset: usize) -> Placement {
        Placement {
            channels,
            offset,
            group_step: s.rows(),
            row_step: 1,
        }
    }

    /// The output channels after a channel shuffle with `s.groups` groups
    /// (row `r` of group `g` becomes channel `r · groups + g`), in a
    /// destination of exactly `C_out` channels.
    pub fn shuffled(s: &PointwiseShape) -> Placement {
        Placement {
            channels: s.out_channels,
            offset: 0,
            group_step: 1,
            row_step: s.groups,
        }
    }

    /// The destination channel of row `r` of group `g`.
    fn channel(&self, g: usize, r: usize) -> usize {
        self.offset + g * self.group_step + r * self.row_step
    }

    /// Checks that every output channel lands inside the destination and
    /// no two on the same channel.
    fn check(&self, s: &PointwiseShape) -> Result<()> {
        let mut taken = vec![false; self.channels];
        for g in 0..s.groups {
            for r in 0..s.rows() {
                let c = self.channel(g, r);
                if c >= self.channels || std::mem::replace(&mut taken[c], true) {
                    return Err(Error::invalid(format!(
                        "pointwise conv: {self:?} puts output channel {} on channel {c}, outside the destination or taken",
                        g * s.rows() + r
                    )));
                }
            }
        }
        Ok(())
    }
}

/// What happens to each output value `v` of channel `o` before it is
/// stored: `v + bias[o]`, plus the residual at the destination position,
/// then `max(·, 0)` when `relu`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// `[C_out]`.
    pub bias: &'a [f32],
    pub residual: Residual<'a>,
    pub relu: bool,
}

/// The residual an [`Epilogue`] adds.
#[derive(Clone, Copy, Debug)]
pub enum Residual<'a> {
    None,
    /// Values laid out like the destination.
    Separate(&'a [f32]),
    /// The destination itself: each output adds the value it overwrites
    /// (a residual block whose input dies here, computed in place).
    InPlace,
}

/// The weights of a pointwise layer packed for [`forward`]: per group,
/// panels of `width` output channels, input-channel major
/// (`panel[k · width + r]` is row `r` of the panel at input channel `k`),
/// zero past the group's last row. The width picks the kernel: [`MR`]
/// (positions in vectors) or, on planes that fill few tiles of [`NR`]
/// positions, [`WIDE`] or [`LANES`] (output channels in vectors).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeights {
    data: Vec<f32>,
    shape: PointwiseShape,
    width: usize,
    /// Positions per register tile in the channel-vectorised layout.
    tile: usize,
}

impl PackedWeights {
    /// Packs `w` (`[C_out, C_in / groups]`) for layers of shape `s` (any
    /// batch and plane).
    pub fn new(s: &PointwiseShape, w: &[f32]) -> Result<PackedWeights> {
        let (m, k) = (s.rows(), s.depth());
        PackedWeights::pointwise(s, w, |g, r, c| (g * m + r) * k + c)
    }

    /// Packs for `s` the transposes of the groups of `w`, a weight laid
    /// out `[C_in, C_out / groups]` of `s` (that of the convolution whose
    /// input gradient `s` computes): row `r`, input channel `c` of group
    /// `g` is `w[g · C_in/g + c][r]`.
    pub fn transposed(s: &PointwiseShape, w: &[f32]) -> Result<PackedWeights> {
        let (m, k) = (s.rows(), s.depth());
        PackedWeights::pointwise(s, w, |g, r, c| (g * k + c) * m + r)
    }

    /// [`new`](Self::new) and [`transposed`](Self::transposed): the
    /// pointwise layout, `at` as in [`pack_with`](Self::pack_with).
    fn pointwise(
        s: &PointwiseShape,
        w: &[f32],
        at: impl Fn(usize, usize, usize) -> usize,
    ) -> Result<PackedWeights> {
        let tile = position_tile(s.plane);
        PackedWeights::pack_with(s, w, panel_width(s, POINTWISE, tile), tile, at)
    }

    /// Packs `w` (`[C_out, C_in / groups, kH, kW]`) for
    /// [`forward_unfolded`] with convolutions of shape `c` (any batch).
    pub fn unfolded(c: &Conv2dShape, w: &[f32]) -> Result<PackedWeights> {
        let (width, tile) = unfolded_layout(c);
        let s = unfolded_shape(c);
        let (m, k) = (s.rows(), s.depth());
        PackedWeights::pack_with(&s, w, width, tile, |g, r, c| (g * m + r) * k + c)
    }

    /// Packs the weights of `s` in panels of `width` rows, `at(g, r, c)`
    /// being where row `r`, input channel `c` of group `g` lies in `w`.
    fn pack_with(
        s: &PointwiseShape,
        w: &[f32],
        width: usize,
        tile: usize,
        at: impl Fn(usize, usize, usize) -> usize,
    ) -> Result<PackedWeights> {
        check_groups(s)?;
        let (m, k) = (s.rows(), s.depth());
        if w.len() != s.out_channels * k {
            return Err(Error::invalid(format!(
                "pointwise conv: weight has {} elements, {s:?} needs {}",
                w.len(),
                s.out_channels * k
            )));
        }
        let panels = m.div_ceil(width);
        let mut data = vec![0.0; s.groups * panels * k * width];
        for g in 0..s.groups {
            for r in 0..m {
                let panel = &mut data[((g * panels + r / width) * k) * width..][..k * width];
                for c in 0..k {
                    panel[c * width + r % width] = w[at(g, r, c)];
                }
            }
        }
        Ok(PackedWeights {
            data,
            shape: *s,
            width,
            tile,
        })
    }

    /// The panels of group `g`.
    fn group(&self, g: usize) -> &[f32] {
        let len = self.shape.rows().div_ceil(self.width) * self.shape.depth() * self.width;
        &self.data[g * len..][..len]
    }
}

/// Whether [`PackedWeights::unfolded`] puts the output channels of
/// convolutions of shape `c` in vectors.
pub fn unfolded_in_vectors(c: &Conv2dShape) -> bool {
    unfolded_layout(c).0 != MR
}

/// The panel width and the position tile of [`PackedWeights::unfolded`]
/// for convolutions of shape `c`.
fn unfolded_layout(c: &Conv2dShape) -> (usize, usize) {
    let tile = position_tile(c.output()[1]);
    (
        panel_width(&unfolded_shape(c), unfolded_vectors(c), tile),
        tile,
    )
}

/// When a 1×1 layer puts output channels in vectors: panels of [`WIDE`]
/// rows only (ShuffleNet g1's 576 → 144 layer on 7 × 7 in panels of 16
/// rows took 0.09 instead of 0.055 ms: 9 panels, 3 tasks for 2 threads),
/// and at least 256 input channels per group, below which the
/// transposing stores cost as much as the multiply-adds they save
/// (ShuffleNet g1's 72 → 288 layer on 14 × 14 took 0.12 instead of 0.05
/// ms, its 144 → 576 layer on 7 × 7 0.055 instead of 0.048 ms).
const POINTWISE: Vectors = Vectors {
    widths: &[WIDE],
    depth: 256,
    padded_reads: false,
};

/// The same for the im2col matrix of a spatial convolution `c`, whose
/// other path (the direct kernel) is slower: ResNeXt-50's 3×3 g32 layers
/// with 16 channels per group (144 rows, panels of [`LANES`]) on 14 × 14
/// take 0.165 instead of 0.255 ms. Where the matrix can be read from the
/// padded input in place of gathering it (see [`padded_reads`]), that
/// alone pays: ResNeXt-50's 7×7/2 stem (112 × 112 outputs, no padding
/// to save) 1.23–1.27 → 0.95 ms.
fn unfolded_vectors(c: &Conv2dShape) -> Vectors {
    Vectors {
        widths: &[WIDE, LANES],
        depth: 128,
        padded_reads: padded_reads(c.output()[1], c.stride[1]),
    }
}

/// Whether the channel-vectorised layout reads an im2col matrix from the
/// zero-padded input planes: each tile lies in one output row (of
/// `out_w` positions) and reads every `stride`-th input column, at most
/// every other one.
fn padded_reads(out_w: usize, stride: usize) -> bool {
    out_w.is_multiple_of(position_tile(out_w)) && stride <= 2
}

/// Where a layer may put output channels in vectors: panels of one of
/// `widths` rows, at least `depth` input channels per group; also
/// without padding to save where `padded_reads`.
struct Vectors {
    widths: &'static [usize],
    depth: usize,
    padded_reads: bool,
}

/// The panel width for layers of shape `s`: the first of `v.widths` that
/// divides the rows of a group, where such tiles compute at least 5 %
/// fewer padding values than tiles of [`MR`] × [`NR`] (ResNeXt-50's
/// 14 × 14 and 7 × 7 layers: 196 positions in 7 tiles of 32, 49 in 2)
/// (or `v.padded_reads`) and `s` has at least `v.depth` input channels
/// per group; otherwise [`MR`].
fn panel_width(s: &PointwiseShape, v: Vectors, tile: usize) -> usize {
    let (m, p) = (s.rows(), s.plane);
    let narrow = m.div_ceil(MR) * MR * p.div_ceil(NR) * NR;
    let wide = m * p.div_ceil(tile) * tile;
    let gains = s.depth() >= v.depth && (20 * wide < 19 * narrow || v.padded_reads);
    v.widths
        .iter()
        .copied()
        .find(|&w| gains && m.is_multiple_of(w))
        .unwrap_or(MR)
}

/// `y[placement] = epilogue(conv1x1(x, w))`; destination channels outside
/// the placement are left as they are.
pub fn forward(
    s: &PointwiseShape,
    x: &[f32],
    w: &PackedWeights,
    ep: Epilogue,
    place: Placement,
    y: &mut [f32],
) -> Result<()> {
    let input = s.batch * s.in_channels * s.plane;
    check(s, w, [x.len(), input], &ep, &place, y)?;
    run(s, w, ep, place, y, group_rows(s, x));
    Ok(())
}

/// Where image `n`, group `g` reads its right-hand side when it is the
/// group's channels of `x` (`[N, C_in, P]`).
fn group_rows<'x>(
    s: &PointwiseShape,
    x: &'x [f32],
) -> impl Fn(usize, usize) -> Columns<'x, f32> + Sync {
    let (channels, k, p) = (s.in_channels, s.depth(), s.plane);
    move |n, g| Columns::Rows(&x[(n * channels + g * k) * p..][..k * p])
}

/// The pointwise product that a spatial convolution `c` is over its
/// im2col matrix: `C_in/g · kH · kW` input channels per group, one per
/// row of the matrix, `H_out · W_out` positions.
pub fn unfolded_shape(c: &Conv2dShape) -> PointwiseShape {
    let [oh, ow] = c.output();
    PointwiseShape {
        batch: c.batch,
        in_channels: c.in_channels * c.kernel[0] * c.kernel[1],
        out_channels: c.out_channels,
        plane: oh * ow,
        groups: c.groups,
    }
}

/// `y = epilogue(conv2d(x, w))` for a spatial convolution `c` (NCHW `x`
/// and `y`, `w` packed for [`unfolded_shape`]): the pointwise product
/// over the im2col matrix. With a spatial kernel the matrix is never
/// stored: its column tiles are gathered straight from `x` as they are
/// needed (a stem's matrix is many times its input), or, with output
/// channels in vectors, read from a zero-padded copy of the block's input
/// rows (see `wide`). A 1×1 kernel (a
/// strided one) gathers its matrix, a subsample of `x`, into `cols` first
/// (resized here): its many rows would otherwise be gathered again for
/// every block of output channels.
pub fn forward_unfolded(
    c: &Conv2dShape,
    x: &[f32],
    w: &PackedWeights,
    ep: Epilogue,
    y: &mut [f32],
    cols: &mut Vec<f32>,
) -> Result<()> {
    let s = unfolded_shape(c);
    let place = Placement::contiguous(&s, s.out_channels, 0);
    let plane = c.input[0] * c.input[1];
    check(
        &s,
        w,
        [x.len(), c.batch * c.in_channels * plane],
        &ep,
        &place,
        y,
    )?;
    let unfold = Unfold::new(c);
    let cig = c.group_in();
    let group_input =
        |n: usize, g: usize| &x[(n * c.in_channels + g * cig) * plane..][..cig * plane];
    if c.kernel != [1, 1] {
        run(&s, w, ep, place, y, |n, g| {
            Columns::Unfolded(group_input(n, g), &unfold)
        });
        return Ok(());
    }
    cols.resize(s.batch * s.in_channels * s.plane, 0.0);
    // One task per (image, input channel): a row of the matrix.
    cols.par_chunks_mut(s.plane)
        .enumerate()
        .for_each(|(row, dst)| {
            let (n, c_in) = (row / c.in_channels, row % c.in_channels);
            unfold.row(group_input(n, c_in / cig), c_in % cig, dst);
        });
    run(&s, w, ep, place, y, group_rows(&s, cols));
    Ok(())
}

/// One parallel region over (image × group × row block × column block)
/// for a checked `s`; `columns(n, g)` is where image `n`, group `g` reads
/// its `[k × P]` right-hand side.
fn run<'x>(
    s: &PointwiseShape,
    w: &PackedWeights,
    ep: Epilogue,
    place: Placement,
    y: &mut [f32],
    columns: impl Fn(usize, usize) -> Columns<'x, f32> + Sync,
) {
    let (k, p) = (s.depth(), s.plane);
    let grid = Grid::new(s, w.width, w.tile);
    let tasks = s.batch * s.groups * grid.row_blocks * grid.col_blocks;
    let dst = SharedMut(y.as_mut_ptr());
    (0..tasks).into_par_iter().for_each_init(Vec::new, |xs, t| {
        let (cb, t) = (t % grid.col_blocks, t / grid.col_blocks);
        let (rb, t) = (t % grid.row_blocks, t / grid.row_blocks);
        let (g, n) = (t % s.groups, t / s.groups);
        let block = Block {
            panels: w.group(g),
            width: w.width,
            tile: w.tile,
            k,
            x: columns(n, g),
            p,
            rows: rb * grid.rows..((rb + 1) * grid.rows).min(s.rows()),
            cols: cb * grid.cols..((cb + 1) * grid.cols).min(p),
            bias: &ep.bias[g * s.rows()..][..s.rows()],
            residual: match ep.residual {
                Residual::None => None,
                Residual::Separate(r) => Some(r.as_ptr()),
                Residual::InPlace => Some(dst.get().cast_const()),
            },
            relu: ep.relu,
            dst: dst.get(),
            dst_base: (n * place.channels + place.channel(g, 0)) * p,
            dst_row_stride: place.row_step * p,
        };
        // `check` made the placement injective and in bounds, so the
        // (image, channel, column) blocks of different tasks are disjoint
        // and inside `y` (and the residual as long as `y`).
        block_isa(Isa::best(), &block, xs);
    });
}

/// Where a block reads the rows of its right-hand side (`k` rows of `P`
/// positions).
#[derive(Clone, Copy)]
pub(crate) enum Columns<'a, T> {
    /// Row `r` is `x[r · P ..][..P]`: the group's input channels.
    Rows(&'a [T]),
    /// Row `r` is row `r` of the im2col matrix of the group's input
    /// planes `x`, gathered piece by piece (or read from their padded
    /// copy).
    Unfolded(&'a [T], &'a Unfold),
}

/// One task's block: rows `rows` (output channels of the group) ×
/// columns `cols` (positions) of one (image, group). Only [`forward`]
/// makes blocks, each with destination elements that are in bounds and
/// written by no other task: [`block`] relies on that.
pub(crate) struct Block<'a, T> {
    /// The group's packed panels.
    panels: &'a [T],
    /// Output channels per panel: [`MR`], [`WIDE`] or [`LANES`].
    width: usize,
    /// Positions per register tile in the channel-vectorised layout:
    /// [`PT`], [`PT8`] or [`PT14`].
    tile: usize,
    /// Input channels per group.
    k: usize,
    /// The group's `[k, p]` right-hand side.
    x: Columns<'a, T>,
    p: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    /// The group's biases.
    bias: &'a [T],
    /// The residual's element 0, laid out like the destination (which it
    /// may be: see [`Residual::InPlace`]).
    residual: Option<*const T>,
    relu: bool,
    dst: *mut T,
    /// Destination offset of the group's row 0, column 0.
    dst_base: usize,
    /// Destination distance between consecutive rows.
    dst_row_stride: usize,
}

impl<T> Block<'_, T> {
    /// The packed weights of the block's rows, in the order the block
    /// reads them.
    fn weights(&self) -> &[T] {
        let end = (self.rows.end.next_multiple_of(self.width) * self.k).min(self.panels.len());
        &self.panels[self.rows.start * self.k..end]
    }
}

/// Asks for part `part` of `parts` of the weights `range` of a block's
/// `weights` (as much of it as there is) ahead of their use: at batch 1
/// each layer's weights come once, from beyond the L2 cache, and the first
/// tile to use them waits unless they were asked for while earlier tiles
/// computed (ResNeXt-50's 1×1 layers on 14 × 14: 3–13 % faster).
#[inline(always)]
fn fetch_ahead<T>(weights: &[T], range: std::ops::Range<usize>, part: usize, parts: usize) {
    let start = range.start.min(weights.len());
    let next = &weights[start..range.end.clamp(start, weights.len())];
    let size = next.len().div_ceil(parts.max(1));
    let from = (part * size).min(next.len());
    crate::simd::prefetch(&next[from..(from + size).min(next.len())]);
}

/// Computes a [`Block`] tile by tile and stores it through the epilogue;
/// `xs` is scratch (any contents, resized here) for the packed inputs.
#[inline(always)]
fn block<T: Fma>(b: &Block<T>, xs: &mut Vec<T>) {
    match (b.width, b.tile) {
        (WIDE, PT8) => return wide::block::<T, 2, PT8>(b, xs),
        (WIDE, PT14) => return wide::block::<T, 2, PT14>(b, xs),
        (WIDE, _) => return wide::block::<T, 2, PT>(b, xs),
        (LANES, PT8) => return wide::block::<T, 1, PT8>(b, xs),
        (LANES, PT14) => return wide::block::<T, 1, PT14>(b, xs),
        (LANES, _) => return wide::block::<T, 1, PT>(b, xs),
        _ => {}
    }
    // The inputs of each column tile are copied into one contiguous
    // `[k × NR]` panel (zero-padded past the last column): the rows of the
    // input are `p` apart, often a multiple of 4 KiB, and would evict each
    // other from the L1 cache while the row tiles sweep over them.
    // A block of fewer columns than rows (7 × 7 and 8 × 8 planes, some of
    // 14 × 14) packs all its column tiles at once and runs each row tile
    // of weights over all of them, so that each weight is read from memory
    // once: the weights are then the larger operand (ResNeXt-50's last 1×1
    // layers: 8 MiB of weights, 49 positions). So does a block with at
    // least twice as many rows as input channels (k ≥ 64): its outputs
    // (and residual) are the larger stream, and a row tile swept along the
    // block writes its 8 rows in long runs, where a column tile at a time
    // writes 32 values of each of hundreds of rows, more streams than the
    // hardware prefetchers follow (ResNeXt-50's 128 → 256 layers with
    // residual on 56 × 56: 0.93 instead of 1.25 ms). So does a block of
    // 64 column tiles or more (k ≥ 64; a whole 56 × 56 plane, at batch
    // 32), whose inputs and outputs come from and go to memory
    // (ResNeXt-50's 256 → 128 layer on 56 × 56 at batch 32: 27–28 →
    // 22–23 ms; on 28 × 28, 25 tiles, the other way is faster: 21 against
    // 23 ms). Blocks whose packed inputs would not fit in [`PACKED_INPUTS`]
    // go in runs of column tiles that do.
    // Other blocks pack one column tile at a time and run every row tile
    // of weights over it, so that each input is read from memory once;
    // except that long rows of few input channels (k < 64, where packing
    // is cheap) go in bands of 32 output rows, each swept by all column
    // tiles, so that fewer rows are written at once (ShuffleNet g3's
    // 24 → 60 layer on 56 × 56: 0.07 instead of 0.12 ms). With more
    // input channels, re-reading the inputs once per band costs more
    // (ResNeXt-50's 256 → 128 layer on 56 × 56: 0.97 instead of 0.73 ms).
    let tiles = b.cols.len().div_ceil(NR);
    let weights = |r0: usize| &b.panels[r0 * b.k..][..b.k * MR];
    // The columns of the tile starting at column `c`.
    let tile_cols = |c: usize| c..(c + NR).min(b.cols.end);
    let (rows, cols) = (b.rows.len(), b.cols.len());
    let sweep_rows = rows > cols || (b.k >= 64 && (rows >= 2 * b.k || tiles >= 64));
    let all_weights = b.weights();
    if sweep_rows {
        // Runs of evenly many column tiles.
        let run_tiles = tiles.div_ceil((tiles * b.k * NR).div_ceil(PACKED_INPUTS).max(1));
        let per_run = run_tiles * NR;
        xs.resize(run_tiles * b.k * NR, T::zero());
        for start in b.cols.clone().step_by(per_run) {
            let run = start..(start + per_run).min(b.cols.end);
            let panels = || run.clone().step_by(NR).map(tile_cols);
            let count = run.len().div_ceil(NR);
            for (cols, panel) in panels().zip(xs.chunks_exact_mut(b.k * NR)) {
                pack(b, cols, panel);
            }
            for r0 in b.rows.clone().step_by(MR) {
                let ahead = (r0 + MR - b.rows.start) * b.k;
                for (j, (cols, panel)) in panels().zip(xs.chunks_exact(b.k * NR)).enumerate() {
                    fetch_ahead(all_weights, ahead..ahead + b.k * MR, j, count);
                    store_tile(b, r0, cols, tile(weights(r0), panel));
                }
            }
        }
        return;
    }
    let band_rows = if tiles >= 8 && b.k < 64 {
        4 * MR
    } else {
        b.rows.len().max(1)
    };
    xs.resize(b.k * NR, T::zero());
    for band in b.rows.clone().step_by(band_rows) {
        let band = band..(band + band_rows).min(b.rows.end);
        let mut c0 = b.cols.start;
        while c0 < b.cols.end {
            let cols = tile_cols(c0);
            pack(b, cols.clone(), xs);
            for r0 in band.clone().step_by(MR) {
                if c0 == b.cols.start {
                    let ahead = (r0 + MR - b.rows.start) * b.k;
                    fetch_ahead(all_weights, ahead..ahead + b.k * MR, 0, 1);
                }
                store_tile(b, r0, cols.clone(), tile(weights(r0), xs));
            }
            c0 = cols.end;
        }
    }
}

/// Most input values [`block`] packs at once (1 MiB, in the L2 cache).
const PACKED_INPUTS: usize = 256 * 1024;

/// Copies the inputs of columns `cols` (at most [`NR`]) into the `[k × NR]`
/// panel `xs`, zero past the last column.
#[inline(always)]
fn pack<T: Fma>(b: &Block<T>, cols: std::ops::Range<usize>, xs: &mut [T]) {
    let width = cols.len();
    match b.x {
        Columns::Rows(x) => {
            // Fixed-size moves for whole tiles (a `memcpy` call per row
            // would cost as much as the row's multiply-adds).
            for (row, src) in xs.chunks_exact_mut(NR).zip(x.chunks_exact(b.p)) {
                let (row, src): (&mut [T; NR], _) =
                    (row.try_into().expect("NR values"), &src[cols.clone()]);
                match <&[T; NR]>::try_from(src) {
                    Ok(whole) => *row = *whole,
                    Err(_) => {
                        crate::simd::copy(&mut row[..width], src);
                        row[width..].fill(T::zero());
                    }
                }
            }
        }
        Columns::Unfolded(x, unfold) => {
            // The tile's pieces of output rows, `(oy, ox, at, len)`: found
            // once, then gathered for every row of the matrix.
            let ow = unfold.out_w();
            let mut pieces = [(0, 0, 0, 0); NR];
            let mut count = 0;
            let mut c = cols.start;
            while c < cols.end {
                let (oy, ox) = (c / ow, c % ow);
                let len = (ow - ox).min(cols.end - c);
                pieces[count] = (oy, ox, c - cols.start, len);
                count += 1;
                c += len;
            }
            for (r, row) in xs.chunks_exact_mut(NR).enumerate() {
                for &(oy, ox, at, len) in &pieces[..count] {
                    unfold.segment(x, r, oy, ox, &mut row[at..][..len]);
                }
                row[width..].fill(T::zero());
            }
        }
    }
}

/// One tile's sums: [`MR`] rows of [`NR`] positions.
type TileSums<T> = [[T; NR]; MR];

/// Stores the tile of rows `r0..r0 + MR` (those of the block) × columns
/// `cols` through the epilogue.
///
/// The tile stays in vector registers: each step makes new values rather
/// than updating the tile in place (a ReLU written as a conditional
/// update became a masked store to a copy of the tile on the stack, and
/// the reload behind it waited for that store: ShuffleNet g8's 96 → 384
/// layer on 28 × 28 spent most of its time there).
#[inline(always)]
fn store_tile<T: Fma>(b: &Block<T>, r0: usize, cols: std::ops::Range<usize>, acc: TileSums<T>) {
    let width = cols.len();
    let rows = MR.min(b.rows.end - r0);
    let at = |r: usize| b.dst_base + (r0 + r) * b.dst_row_stride + cols.start;
    // The epilogue of every row first, then the stores, so that no
    // residual load waits behind a store to the rows before it (in place,
    // the residual is the destination).
    let mut out = acc;
    // Every row of the tile, a constant count (the tile then stays in
    // registers); rows past the block's last are neither read nor stored.
    for (r, row) in out.iter_mut().enumerate() {
        if r >= rows {
            continue;
        }
        let bias = b.bias[r0 + r];
        let mut v = *row;
        for a in v.iter_mut() {
            *a = *a + bias;
        }
        if let Some(res) = b.residual {
            // SAFETY: as for the stores below; this view ends before any
            // store.
            let res = unsafe { std::slice::from_raw_parts(res.add(at(r)), width) };
            add_row(&mut v, res);
        }
        if b.relu {
            // New values, not a conditional update (which became a masked
            // store).
            let sums = v;
            for (a, &x) in v.iter_mut().zip(&sums) {
                *a = relu_value(x);
            }
        }
        *row = v;
    }
    for (r, v) in out.iter().enumerate() {
        if r < rows {
            // SAFETY: `forward` builds blocks whose destination elements
            // are in bounds and written by no other task.
            let dst = unsafe { std::slice::from_raw_parts_mut(b.dst.add(at(r)), width) };
            store_row(v, dst);
        }
    }
}

/// `v += add` on the first `add.len()` columns. Whole rows of a known
/// width only touch `v` as a whole (a partial row goes through a
/// zero-padded copy), so that the tile stays in registers; and no
/// `memcpy` call for whole rows, which would cost more than the row's
/// arithmetic.
#[inline(always)]
fn add_row<T: Fma>(v: &mut [T; NR], add: &[T]) {
    let mut padded = [T::zero(); NR];
    let add = <&[T; NR]>::try_from(add).unwrap_or_else(|_| {
        padded[..add.len()].copy_from_slice(add);
        &padded
    });
    for j in 0..NR {
        v[j] = v[j] + add[j];
    }
}

/// `out = v[..out.len()]`, as [`add_row`].
#[inline(always)]
fn store_row<T: Fma>(v: &[T; NR], out: &mut [T]) {
    if let Ok(out) = <&mut [T; NR]>::try_from(&mut *out) {
        *out = *v;
    } else {
        let copy = *v;
        out.copy_from_slice(&copy[..out.len()]);
    }
}

/// The `MR × NR` sums of one tile: `Σ_k panel[k, r] · xs[k, j]`, held in
/// registers for the whole reduction (`NR` as [`LANES`]-wide halves).
#[inline(always)]
fn tile<T: Fma>(panel: &[T], xs: &[T]) -> TileSums<T> {
    let mut acc = [[[T::zero(); LANES]; 2]; MR];
    for (w, row) in panel.chunks_exact(MR).zip(xs.chunks_exact(NR)) {
        let lo: &Lanes<T> = row[..LANES].try_into().expect("LANES values");
        let hi: &Lanes<T> = row[LANES..].try_into().expect("LANES values");
        for r in 0..MR {
            fma_lanes(&mut acc[r][0], w[r], lo);
            fma_lanes(&mut acc[r][1], w[r], hi);
        }
    }
    let mut out = [[T::zero(); NR]; MR];
    for (o, [lo, hi]) in out.iter_mut().zip(acc) {
        o[..LANES].copy_from_slice(&lo);
        o[LANES..].copy_from_slice(&hi);
    }
    out
}

crate::dispatch!(fn block_isa<T: Fma>(b: &Block<T>, xs: &mut Vec<T>) => block);

/// The reference: the same result, one multiply-add at a time.
pub fn forward_ref(
    s: &PointwiseShape,
    x: &[f32],
    w: &[f32],
    ep: Epilogue,
    place: Placement,
    y: &mut [f32],
) -> Result<()> {
    check_lens(
        s,
        [x.len(), s.batch * s.in_channels * s.plane],
        w.len(),
        &ep,
        &place,
        y,
    )?;
    let (m, k, p) = (s.rows(), s.depth(), s.plane);
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            let g = o / m;
            let at = (n * place.channels + place.channel(g, o % m)) * p;
            for j in 0..p {
                let mut v = ep.bias[o];
                for c in 0..k {
                    v += w[o * k + c] * x[(n * s.in_channels + g * k + c) * p + j];
                }
                match ep.residual {
                    Residual::None => {}
                    Residual::Separate(res) => v += res[at + j],
                    Residual::InPlace => v += y[at + j],
                }
                y[at + j] = if ep.relu { v.max(0.0) } else { v };
            }
        }
    }
    Ok(())
}

fn check_groups(s: &PointwiseShape) -> Result<()> {
    super::conv::check_groups("pointwise conv", s.groups, [s.in_channels, s.out_channels])
}

/// Checks that `w` was packed for `s`, and [`check_lens`].
fn check(
    s: &PointwiseShape,
    w: &PackedWeights,
    input: [usize; 2],
    ep: &Epilogue,
    place: &Placement,
    y: &[f32],
) -> Result<()> {
    let packed = PointwiseShape {
        batch: s.batch,
        plane: s.plane,
        ..w.shape
    };
    if packed != *s {
        return Err(Error::invalid(format!(
            "pointwise conv: weights packed for {:?}, used for {s:?}",
            w.shape
        )));
    }
    check_lens(s, input, s.out_channels * s.depth(), ep, place, y)
}

/// Checks `s` and the operands' lengths (`[got, want]` for the input).
fn check_lens(
    s: &PointwiseShape,
    [x_len, input]: [usize; 2],
    w_len: usize,
    ep: &Epilogue,
    place: &Placement,
    y: &[f32],
) -> Result<()> {
    check_groups(s)?;
    place.check(s)?;
    let lens = [
        ("input", x_len, input),
        ("weight", w_len, s.out_channels * s.depth()),
        ("bias", ep.bias.len(), s.out_channels),
        ("destination", y.len(), s.batch * place.channels * s.plane),
        (
            "residual",
            match ep.residual {
                Residual::Separate(r) => r.len(),
                Residual::None | Residual::InPlace => y.len(),
            },
            y.len(),
        ),
    ];
    match lens.iter().find(|(_, got, want)| got != want) {
        Some((what, got, want)) => Err(Error::invalid(format!(
            "pointwise conv: {what} has {got} elements, {s:?} with {place:?} needs {want}"
        ))),
        None => Ok(()),
    }
}

/// How one (image, group) product is cut into task blocks: enough tasks to
/// keep every thread busy at batch 1, blocks of whole tiles, at least
/// one panel of rows × 2 [`NR`].
struct Grid {
    rows: usize,
    cols: usize,
    row_blocks: usize,
    col_blocks: usize,
}

impl Grid {
    /// The grid for panels of `width` rows (and in the channel-vectorised
    /// layout, tiles of `tile` positions).
    fn new(s: &PointwiseShape, width: usize, tile: usize) -> Grid {
        let threads = rayon::current_num_threads();
        let base = (s.batch * s.groups).max(1);
        let want = if threads > 1 { 2 * threads } else { 1 };
        // Column blocks are whole tiles of the layout, and in the
        // channel-vectorised one start on a tile of a padded read.
        let unit = if width == MR { NR } else { 4 * tile };
        let (row_tiles, col_tiles) = (s.rows().div_ceil(width), s.plane.div_ceil(unit));
        // Split the larger operand, so that each task reads its own part of
        // it: the inputs (columns) on large planes, the weights (rows) on
        // small ones.
        // Blocks along the split dimension first (of at most `first`
        // tiles' worth), then along the other if still too few tasks.
        let split = |first: usize, second: usize| {
            let a = want.div_ceil(base).min(first).max(1);
            (a, want.div_ceil(base * a).min(second).max(1))
        };
        let (row_blocks, col_blocks) = if s.rows() > s.plane {
            split(row_tiles, col_tiles / 2)
        } else {
            let (col_blocks, row_blocks) = split(col_tiles / 2, row_tiles);
            (row_blocks, col_blocks)
        };
        let rows = row_tiles.div_ceil(row_blocks) * width;
        let cols = col_tiles.div_ceil(col_blocks) * unit;
        Grid {
            rows,
            cols,
            row_blocks: s.rows().div_ceil(rows),
            col_blocks: s.plane.div_ceil(cols),
        }
    }
}

/// The destination shared by the tasks, each writing its own blocks.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

// SAFETY: tasks write disjoint elements (see `forward`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolded_matches_the_conv_reference() {
        use crate::kernels::conv::{assert_forward_matches_reference, test_shape};
        // (batch, [c_in, c_out, groups], [h, w], kernel, [stride, pad, dilation])
        let cases = [
            // Stems: 3×3/2 and 7×7/2, output rows longer than a tile.
            (1, [3, 24, 1], [70, 70], [3, 3], [[2, 2], [1, 1], [1, 1]]),
            (1, [3, 16, 1], [45, 41], [7, 7], [[2, 2], [3, 3], [1, 1]]),
            // Output rows shorter than a tile (pieces of several rows),
            // stride 1 and 3, dilation, asymmetric padding, two images.
            (2, [5, 10, 1], [9, 7], [3, 3], [[1, 1], [1, 2], [1, 1]]),
            (1, [4, 9, 1], [13, 17], [3, 2], [[3, 3], [1, 0], [2, 2]]),
            // Groups, and a row with no valid column for some taps.
            (2, [6, 16, 2], [6, 3], [3, 5], [[1, 2], [2, 2], [1, 1]]),
            // Strided 1×1 (its matrix gathered first), with groups.
            (2, [12, 16, 2], [9, 10], [1, 1], [[2, 2], [0, 0], [1, 1]]),
            // Small planes, output channels in vectors: 7 × 7 read from
            // the padded input (three passes over the 288 rows; stride 2;
            // dilation with asymmetric padding; 16 rows per group, one
            // vector), and 5 × 9 (rows not whole tiles: the matrix
            // gathered, a short last tile).
            (1, [64, 64, 2], [7, 7], [3, 3], [[1, 1], [1, 1], [1, 1]]),
            // 14 × 14 in tiles of 14.
            (1, [32, 32, 2], [14, 14], [3, 3], [[1, 1], [1, 1], [1, 1]]),
            (2, [64, 64, 2], [14, 14], [3, 3], [[2, 2], [1, 1], [1, 1]]),
            (1, [64, 64, 2], [9, 11], [3, 3], [[1, 1], [1, 0], [2, 2]]),
            (1, [32, 32, 1], [5, 9], [3, 3], [[1, 1], [1, 1], [1, 1]]),
            // Rows of 8 outputs in tiles of 8 (ResNeXt-29's 8 × 8 layers),
            // 16 and 32 rows per group, stride 1 and 2.
            (1, [32, 32, 2], [8, 8], [3, 3], [[1, 1], [1, 1], [1, 1]]),
            (2, [64, 64, 2], [16, 16], [3, 3], [[2, 2], [1, 1], [1, 1]]),
            // A stem on a larger plane (30 × 28 outputs in tiles of 14,
            // nothing to save but the gathering): column blocks, chunks
            // of tiles.
            (1, [3, 32, 1], [60, 56], [7, 7], [[2, 2], [3, 3], [1, 1]]),
        ];
        // The kernel each case runs: positions or output channels in
        // vectors (the 7 × 7 stem's 23 × 21 output in panels of 16).
        let (n, w, l) = (MR, WIDE, LANES);
        let widths = [n, l, n, n, n, n, w, l, w, w, w, l, w, w];
        // Positions per tile in that layout.
        let (s, e, f) = (PT, PT8, PT14);
        let tiles = [s, s, s, s, s, s, s, f, s, s, s, e, e, f];
        for (i, &(batch, channels, input, kernel, geometry)) in cases.iter().enumerate() {
            let c = test_shape(batch, channels, input, kernel, geometry);
            for bias in [false, true] {
                assert_forward_matches_reference(&c, bias, i as u64, |x, w, b, y| {
                    let zeros = vec![0.0; c.out_channels];
                    let ep = Epilogue {
                        bias: b.unwrap_or(&zeros),
                        residual: Residual::None,
                        relu: false,
                    };
                    let packed = PackedWeights::unfolded(&c, w)?;
                    assert_eq!(packed.width, widths[i], "{c:?}");
                    assert_eq!(packed.tile, tiles[i], "{c:?}");
                    forward_unfolded(&c, x, &packed, ep, y, &mut Vec::new())
                });
            }
        }
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_for_every_placement_and_epilogue() {
        // (batch, in, out, plane, groups)
        let shapes = [
            (1, 24, 36, 784, 1),
            (2, 60, 240, 49, 3),
            (3, 16, 8, 5, 8),
            (1, 96, 96, 196, 8),
            (2, 15, 27, 70, 3),
            // More rows than positions: blocks of rows, every column tile
            // packed at once (a short last tile and a short last row tile).
            (1, 40, 100, 49, 1),
            // The same with too many inputs to pack at once.
            (1, 4100, 70, 65, 1),
            // Long rows of few input channels, in bands of output rows
            // (with a short last band); and of more, in one band.
            (1, 24, 40, 3136, 1),
            (1, 72, 40, 3136, 1),
            // At least twice as many rows as input channels (k ≥ 64): row
            // tiles swept along all packed column tiles (short last tiles).
            (1, 64, 130, 300, 1),
            // Whole planes of 98 column tiles (batch 4 makes enough tasks):
            // rows swept along them, in two runs of packed tiles.
            (4, 96, 40, 3136, 1),
            // Output channels in vectors (small planes): whole position
            // tiles read in place over three passes of input channels; a
            // short last tile; column blocks of 64 and 36 positions.
            (1, 300, 64, 49, 1),
            (2, 600, 128, 20, 2),
            (1, 256, 32, 100, 1),
            // Planes in tiles of 14: 14 × 14, and 392 positions (more
            // than one chunk of tiles).
            (1, 256, 64, 196, 1),
            (1, 256, 32, 392, 1),
            // Planes of 16 and 24 positions: tiles of 8.
            (2, 256, 64, 16, 1),
            (1, 512, 64, 24, 2),
        ];
        let mut widths = Vec::new();
        let mut tiles = Vec::new();
        for (batch, cin, cout, plane, groups) in shapes {
            let s = PointwiseShape {
                batch,
                in_channels: cin,
                out_channels: cout,
                plane,
                groups,
            };
            let (x, w, bias) = (
                data(batch * cin * plane, 1),
                data(cout * cin / groups, 2),
                data(cout, 3),
            );
            let packed = PackedWeights::new(&s, &w).unwrap();
            widths.push(packed.width);
            tiles.push(packed.tile);
            for (place, residual, relu) in [
                (Placement::contiguous(&s, cout, 0), false, false),
                (Placement::contiguous(&s, cout + 7, 5), false, true),
                (Placement::shuffled(&s), false, true),
                (Placement::contiguous(&s, cout, 0), true, true),
                (Placement::shuffled(&s), true, false),
            ] {
                let len = batch * place.channels * plane;
                let res = data(len, 4);
                let ep = Epilogue {
                    bias: &bias,
                    residual: if residual {
                        Residual::Separate(&res)
                    } else {
                        Residual::None
                    },
                    relu,
                };
                let (mut got, mut want) = (vec![9.0; len], vec![9.0; len]);
                forward(&s, &x, &packed, ep, place, &mut got).unwrap();
                forward_ref(&s, &x, &w, ep, place, &mut want).unwrap();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{s:?} {place:?} at {i}: {a} vs {b}"
                    );
                }
                if residual {
                    // The same values with the residual in the destination.
                    let mut in_place = res.clone();
                    let ep = Epilogue {
                        residual: Residual::InPlace,
                        ..ep
                    };
                    forward(&s, &x, &packed, ep, place, &mut in_place).unwrap();
                    assert_eq!(in_place, got, "{s:?} {place:?} in place");
                    let mut in_place_ref = res.clone();
                    forward_ref(&s, &x, &w, ep, place, &mut in_place_ref).unwrap();
                    assert_eq!(in_place_ref, want, "{s:?} {place:?} reference in place");
                }
            }
        }
        // Both layouts ran, the channel-vectorised one with both tiles.
        let (n, w) = (MR, WIDE);
        assert_eq!(
            widths,
            [n, n, n, n, n, n, n, n, n, n, n, w, w, w, w, w, w, w]
        );
        assert_eq!(tiles[11..], [PT, PT, PT, PT14, PT14, PT8, PT8]);
    }

    #[test]
    fn bad_placements_and_lengths_are_errors() {
        let s = PointwiseShape {
            batch: 1,
            in_channels: 4,
            out_channels: 4,
            plane: 3,
            groups: 2,
        };
        let (x, b) = (vec![0.0; 12], vec![0.0; 4]);
        let w = PackedWeights::new(&s, &[0.0; 8]).unwrap();
        assert!(PackedWeights::new(&s, &[0.0; 7]).is_err());
        let ep = Epilogue {
            bias: &b,
            residual: Residual::None,
            relu: false,
        };
        let overlapping = Placement {
            channels: 4,
            offset: 0,
            group_step: 1,
            row_step: 1,
        };
        let e = forward(&s, &x, &w, ep, overlapping, &mut [0.0; 12]).unwrap_err();
        assert!(e.to_string().contains("taken"), "{e}");
        let outside = Placement::contiguous(&s, 4, 1);
        assert!(forward(&s, &x, &w, ep, outside, &mut [0.0; 12]).is_err());
        let e = forward(
            &s,
            &x[..11],
            &w,
            ep,
            Placement::shuffled(&s),
            &mut [0.0; 12],
        )
        .unwrap_err();
        assert!(e.to_string().contains("input has 11"), "{e}");
    }
}
