//! The channel-vectorised layout of the pointwise kernel, for planes that
//! fill tiles of [`NR`](super::NR) positions poorly (49 positions in two
//! tiles of 32): register tiles of [`PT`] positions × [`WIDE`] output
//! channels, output channels along the vectors and each input value
//! broadcast. The reduction runs in passes of [`KC`] input channels over
//! every position tile of the block, so that the pass's weights stay in
//! the L1 cache; the sums wait between passes in a `[positions × WIDE]`
//! buffer, and the epilogue is applied while that buffer is transposed
//! into the destination's rows.

use super::{Block, Columns, KC, PT, WIDE};
use crate::simd::{Fma, LANES, Lanes, fma_lanes};

/// Computes a block whose weights are packed in panels of [`WIDE`] rows
/// and stores it through the epilogue; `scratch` (any contents, resized
/// here) holds the sums and, where the inputs are not read in place, the
/// copy they are read from.
#[inline(always)]
pub(super) fn block<T: Fma>(b: &Block<T>, scratch: &mut Vec<T>) {
    let (k, cols) = (b.k, b.cols.len());
    // Positions, the last tile padded.
    let span = cols.div_ceil(PT) * PT;
    let tiles = span / PT;
    let copy_len = match b.x {
        Columns::Unfolded(_, unfold) => (unfold.padded_len() + 2 * PT).max(k * span),
        Columns::Rows(_) => k * span,
    };
    scratch.resize(span * WIDE + copy_len, T::zero());
    let (sums, xs) = scratch.split_at_mut(span * WIDE);
    // Where the inputs of tile `t` are: `x[offsets[r] + bases[t] + j ·
    // step]` for matrix row `r` and the tile's position `j`.
    let (x, offsets, bases, step): (&[T], Vec<usize>, Vec<usize>, usize) = match b.x {
        // Rows read in place when every tile lies inside them.
        Columns::Rows(x) if cols.is_multiple_of(PT) => {
            let bases = (0..tiles).map(|t| b.cols.start + t * PT).collect();
            (x, (0..k).map(|r| r * b.p).collect(), bases, 1)
        }
        // A spatial kernel's matrix read from the zero-padded input planes
        // (an implicit im2col) when each tile lies in one output row and
        // reads every other input column at most.
        Columns::Unfolded(x, unfold)
            if unfold.out_w().is_multiple_of(PT)
                && b.cols.start.is_multiple_of(PT)
                && unfold.stride_w() <= 2 =>
        {
            unfold.pad(x, xs);
            let bases = (0..tiles)
                .map(|t| unfold.padded_column(b.cols.start + t * PT))
                .collect();
            let offsets = (0..k).map(|r| unfold.padded_row(r)).collect();
            (&*xs, offsets, bases, unfold.stride_w())
        }
        // Otherwise a copy of the block's matrix, zero past the last
        // column.
        _ => {
            for (r, row) in xs[..k * span].chunks_exact_mut(span).enumerate() {
                let (row, pad) = row.split_at_mut(cols);
                match b.x {
                    Columns::Rows(x) => {
                        crate::simd::copy(row, &x[r * b.p + b.cols.start..][..cols])
                    }
                    Columns::Unfolded(x, unfold) => unfold.columns(x, r, b.cols.start, row),
                }
                pad.fill(T::zero());
            }
            let bases = (0..tiles).map(|t| t * PT).collect();
            (&*xs, (0..k).map(|r| r * span).collect(), bases, 1)
        }
    };
    // The first panel reads rows of the input fresh from memory, a few
    // values of each at a time, which the hardware prefetchers do not
    // follow: each pass asks for the next pass's rows (and the first
    // panel's first pass for its own).
    let in_place = matches!(b.x, Columns::Rows(_)) && cols.is_multiple_of(PT);
    let fetch = |k0: usize| {
        if in_place {
            for &o in offsets.iter().skip(k0).take(KC) {
                crate::simd::prefetch(&x[o + b.cols.start..][..cols]);
            }
        }
    };
    fetch(0);
    for (i, r0) in b.rows.clone().step_by(WIDE).enumerate() {
        let panel = &b.panels[r0 * k..][..k * WIDE];
        sums.fill(T::zero());
        for k0 in (0..k).step_by(KC) {
            if i == 0 {
                fetch(k0 + KC);
            }
            let kc = KC.min(k - k0);
            let (w, offsets) = (&panel[k0 * WIDE..][..kc * WIDE], &offsets[k0..][..kc]);
            for (&base, sums) in bases.iter().zip(sums.chunks_exact_mut(PT * WIDE)) {
                let x = &x[base..];
                match step {
                    1 => tile::<T, 1>(w, x, offsets, sums),
                    _ => tile::<T, 2>(w, x, offsets, sums),
                }
            }
        }
        store(b, r0, sums);
    }
}

/// `sums[j · WIDE + r] += Σ_k w[k · WIDE + r] · x[offsets[k] + j · S]`
/// for the tile's [`PT`] positions `j`, in registers over the pass.
#[inline(always)]
fn tile<T: Fma, const S: usize>(w: &[T], x: &[T], offsets: &[usize], sums: &mut [T]) {
    let mut acc = [[[T::zero(); LANES]; 2]; PT];
    for (a, s) in acc.iter_mut().zip(sums.chunks_exact(WIDE)) {
        a[0].copy_from_slice(&s[..LANES]);
        a[1].copy_from_slice(&s[LANES..]);
    }
    for (w, &o) in w.chunks_exact(WIDE).zip(offsets) {
        let lo: &Lanes<T> = w[..LANES].try_into().expect("LANES values");
        let hi: &Lanes<T> = w[LANES..].try_into().expect("LANES values");
        let x = &x[o..][..PT * S];
        for (j, a) in acc.iter_mut().enumerate() {
            let v = x[j * S];
            fma_lanes(&mut a[0], v, lo);
            fma_lanes(&mut a[1], v, hi);
        }
    }
    for (a, s) in acc.iter().zip(sums.chunks_exact_mut(WIDE)) {
        s[..LANES].copy_from_slice(&a[0]);
        s[LANES..].copy_from_slice(&a[1]);
    }
}

/// Stores rows `r0 .. r0 + WIDE` (those of the block) of the finished
/// sums (`[positions × WIDE]`) through the epilogue: bias, residual,
/// ReLU, in that order, as the other layout.
#[inline(always)]
fn store<T: Fma>(b: &Block<T>, r0: usize, sums: &[T]) {
    for r in 0..WIDE.min(b.rows.end - r0) {
        let bias = b.bias[r0 + r];
        let at = b.dst_base + (r0 + r) * b.dst_row_stride + b.cols.start;
        for j in 0..b.cols.len() {
            let mut v = sums[j * WIDE + r] + bias;
            // SAFETY: `forward` builds blocks whose destination elements
            // are in bounds and written by no other task; the residual is
            // as long as the destination (and may be it: each value is
            // read before it is overwritten).
            unsafe {
                if let Some(res) = b.residual {
                    v = v + *res.add(at + j);
                }
                if b.relu && v < T::zero() {
                    v = T::zero();
                }
                *b.dst.add(at + j) = v;
            }
        }
    }
}
