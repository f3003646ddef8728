//! The channel-vectorised layout of the pointwise kernel, for planes that
//! fill tiles of [`NR`](super::NR) positions poorly (49 positions in two
//! tiles of 32): register tiles of [`PT`], [`PT8`] or [`PT14`] positions
//! × one or two vectors
//! of output channels, each input value broadcast. The reduction runs in
//! passes of [`KC`] input channels over every position tile of a chunk of
//! the block, so that the pass's weights stay in the L1 cache; the sums
//! wait between passes in a `[positions × channels]` buffer, and the
//! epilogue is applied while that buffer is transposed into the
//! destination's rows.

use super::super::conv_gemm::Unfold;
use super::{Block, Columns, KC, fetch_ahead, padded_reads};
#[cfg(doc)]
use super::{PT, PT8, PT14};
use crate::simd::{Fma, LANES, Lanes, fma_lanes, relu_value};
use std::borrow::Cow;
use std::ops::Range;

/// Computes a block whose weights are packed in panels of `V` vectors of
/// rows, in tiles of `P` positions, and stores it through the epilogue; `scratch` (any contents, resized
/// here) holds the sums and, where the inputs are not read in place, the
/// copy they are read from.
#[inline(always)]
pub(super) fn block<T: Fma, const V: usize, const P: usize>(b: &Block<T>, scratch: &mut Vec<T>) {
    let wide = V * LANES;
    let (k, cols) = (b.k, b.cols.len());
    // Positions, the last tile padded.
    let span = cols.div_ceil(P) * P;
    let chunk = chunk::<P>();
    let tiles = span / P;
    // Rows of the input are read in place when every tile lies inside
    // them. A spatial kernel's matrix is read from the zero-padded input
    // planes (an implicit im2col) when each tile lies in one output row
    // and reads every other input column at most (with slack for the
    // last tile's reads past its row, `P · 2` values). Otherwise the
    // block's matrix is copied, zero past the last column.
    let in_place = matches!(b.x, Columns::Rows(_)) && cols.is_multiple_of(P);
    let implicit = |unfold: &Unfold| {
        padded_reads(unfold.out_w(), unfold.stride_w()) && b.cols.start.is_multiple_of(P)
    };
    let copy_len = match b.x {
        Columns::Rows(_) if in_place => 0,
        Columns::Unfolded(_, unfold) if implicit(unfold) => unfold.padded_len() + 2 * P,
        _ => k * span,
    };
    // The sums of one chunk of tiles.
    let sums_len = tiles.min(chunk) * P * wide;
    scratch.resize(sums_len + copy_len, T::zero());
    let (sums, xs) = scratch.split_at_mut(sums_len);
    // Where the inputs of tile `t` are: `x[offsets[r] + bases[t] + j ·
    // step]` for matrix row `r` and the tile's position `j`.
    let (x, offsets, bases, step): (&[T], Cow<[usize]>, Vec<usize>, usize) = match b.x {
        Columns::Rows(x) if in_place => {
            let bases = (0..tiles).map(|t| b.cols.start + t * P).collect();
            (x, (0..k).map(|r| r * b.p).collect(), bases, 1)
        }
        Columns::Unfolded(x, unfold) if implicit(unfold) => {
            unfold.pad(x, b.cols.clone(), xs);
            let bases = (0..tiles)
                .map(|t| unfold.padded_column(b.cols.start + t * P))
                .collect();
            let offsets = Cow::Borrowed(unfold.padded_rows());
            (&*xs, offsets, bases, unfold.stride_w())
        }
        _ => {
            for (r, row) in xs.chunks_exact_mut(span).enumerate() {
                let (row, pad) = row.split_at_mut(cols);
                match b.x {
                    Columns::Rows(x) => {
                        crate::simd::copy(row, &x[r * b.p + b.cols.start..][..cols])
                    }
                    Columns::Unfolded(x, unfold) => unfold.columns(x, r, b.cols.start, row),
                }
                pad.fill(T::zero());
            }
            let bases = (0..tiles).map(|t| t * P).collect();
            (&*xs, (0..k).map(|r| r * span).collect(), bases, 1)
        }
    };
    // The block in chunks of at most `chunk` tiles, whose sums stay in
    // the L1 cache. The first panel of a chunk reads rows of the input
    // fresh from memory, a few values of each at a time, which the
    // hardware prefetchers do not follow: each pass asks for the next
    // pass's rows (and the first pass for its own).
    for (c, bases) in bases.chunks(chunk).enumerate() {
        let first = c * chunk * P;
        let width = (cols - first).min(chunk * P);
        let sums = &mut sums[..bases.len() * P * wide];
        let fetch = |k0: usize| {
            if in_place {
                for &o in offsets.iter().skip(k0).take(KC) {
                    crate::simd::prefetch(&x[o + b.cols.start + first..][..width]);
                }
            }
        };
        fetch(0);
        // The block's weights are read in order, pass by pass: each pass
        // asks for the one after the next, a part per tile.
        let weights = b.weights();
        for (i, r0) in b.rows.clone().step_by(wide).enumerate() {
            let panel = &b.panels[r0 * k..][..k * wide];
            sums.fill(T::zero());
            for k0 in (0..k).step_by(KC) {
                if i == 0 {
                    fetch(k0 + KC);
                }
                let kc = KC.min(k - k0);
                let (w, offsets) = (&panel[k0 * wide..][..kc * wide], &offsets[k0..][..kc]);
                let ahead = (r0 - b.rows.start) * k + (k0 + kc + KC) * wide;
                let tiles = bases.iter().zip(sums.chunks_exact_mut(P * wide));
                for (t, (&base, sums)) in tiles.enumerate() {
                    fetch_ahead(weights, ahead..ahead + KC * wide, t, bases.len());
                    let x = &x[base..];
                    match step {
                        1 => tile::<T, V, 1, P>(w, x, offsets, sums),
                        _ => tile::<T, V, 2, P>(w, x, offsets, sums),
                    }
                }
            }
            store::<T, V>(b, r0, first..first + width, sums);
        }
    }
}

/// Position tiles of `P` positions per chunk of a block: about 196
/// positions, 25 KiB of sums for 32 rows.
const fn chunk<const P: usize>() -> usize {
    196 / P
}

/// `sums[j · wide + r] += Σ_k w[k · wide + r] · x[offsets[k] + j · S]`
/// for the tile's `P` positions `j` and `wide = V · LANES` rows, in
/// registers over the pass.
#[inline(always)]
fn tile<T: Fma, const V: usize, const S: usize, const P: usize>(
    w: &[T],
    x: &[T],
    offsets: &[usize],
    sums: &mut [T],
) {
    let wide = V * LANES;
    let mut acc = [[[T::zero(); LANES]; V]; P];
    for (a, s) in acc.iter_mut().zip(sums.chunks_exact(wide)) {
        for (a, s) in a.iter_mut().zip(s.chunks_exact(LANES)) {
            a.copy_from_slice(s);
        }
    }
    for (w, &o) in w.chunks_exact(wide).zip(offsets) {
        let w: [&Lanes<T>; V] =
            std::array::from_fn(|v| w[v * LANES..][..LANES].try_into().expect("LANES values"));
        let x = &x[o..][..P * S];
        for (j, a) in acc.iter_mut().enumerate() {
            let x = x[j * S];
            for (a, w) in a.iter_mut().zip(w) {
                fma_lanes(a, x, w);
            }
        }
    }
    for (a, s) in acc.iter().zip(sums.chunks_exact_mut(wide)) {
        for (a, s) in a.iter().zip(s.chunks_exact_mut(LANES)) {
            s.copy_from_slice(a);
        }
    }
}

/// Stores rows `r0 .. r0 + V · LANES` (those of the block) × the block's
/// columns `cols` (relative to its first) of the finished sums
/// (`[positions × V · LANES]`, from `cols.start`) through the epilogue:
/// bias, residual, ReLU, in that order, as the other layout.
#[inline(always)]
fn store<T: Fma, const V: usize>(b: &Block<T>, r0: usize, cols: Range<usize>, sums: &[T]) {
    let wide = V * LANES;
    for r in 0..wide.min(b.rows.end - r0) {
        let bias = b.bias[r0 + r];
        let at = b.dst_base + (r0 + r) * b.dst_row_stride + b.cols.start + cols.start;
        for j in 0..cols.len() {
            let mut v = sums[j * wide + r] + bias;
            // SAFETY: `forward` builds blocks whose destination elements
            // are in bounds and written by no other task; the residual is
            // as long as the destination (and may be it: each value is
            // read before it is overwritten).
            unsafe {
                if let Some(res) = b.residual {
                    v = v + *res.add(at + j);
                }
                if b.relu {
                    v = relu_value(v);
                }
                *b.dst.add(at + j) = v;
            }
        }
    }
}
