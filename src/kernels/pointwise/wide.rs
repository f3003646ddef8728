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
/// here) holds the sums and, where the inputs are not read in place,
/// their copy.
#[inline(always)]
pub(super) fn block<T: Fma>(b: &Block<T>, scratch: &mut Vec<T>) {
    let (k, cols) = (b.k, b.cols.len());
    // Positions, the last tile padded.
    let span = cols.div_ceil(PT) * PT;
    scratch.resize(span * WIDE + k * span, T::zero());
    let (sums, xs) = scratch.split_at_mut(span * WIDE);
    // Where column `j` of input row `r` is: `x[r · stride + first + j]`.
    // Rows of the input are read in place when every tile lies inside
    // them; gathered rows (im2col) and blocks with a short last tile are
    // copied first, zero past the last column.
    let (x, stride, first) = match b.x {
        Columns::Rows(x) if cols % PT == 0 => (x, b.p, b.cols.start),
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
            (&*xs, span, 0)
        }
    };
    // The first panel reads inputs fresh from memory, a row of each
    // tile's positions at a time, which the hardware prefetchers do not
    // follow: each pass asks for the next pass's rows (and the first
    // panel's first pass for its own).
    let fetch = |k0: usize| {
        for r in k0..(k0 + KC).min(k) {
            crate::simd::prefetch(&x[r * stride + first..][..cols]);
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
            let w = &panel[k0 * WIDE..][..KC.min(k - k0) * WIDE];
            for (t, sums) in sums.chunks_exact_mut(PT * WIDE).enumerate() {
                tile(w, &x[k0 * stride + first + t * PT..], stride, sums);
            }
        }
        store(b, r0, sums);
    }
}

/// `sums[j · WIDE + r] += Σ_k w[k · WIDE + r] · x[k · stride + j]` for the
/// tile's [`PT`] positions `j`, in registers over the pass.
#[inline(always)]
fn tile<T: Fma>(w: &[T], x: &[T], stride: usize, sums: &mut [T]) {
    let mut acc = [[[T::zero(); LANES]; 2]; PT];
    for (a, s) in acc.iter_mut().zip(sums.chunks_exact(WIDE)) {
        a[0].copy_from_slice(&s[..LANES]);
        a[1].copy_from_slice(&s[LANES..]);
    }
    for (w, x) in w.chunks_exact(WIDE).zip(x.chunks(stride)) {
        let lo: &Lanes<T> = w[..LANES].try_into().expect("LANES values");
        let hi: &Lanes<T> = w[LANES..].try_into().expect("LANES values");
        let x: &[T; PT] = x[..PT].try_into().expect("PT values");
        for (a, &v) in acc.iter_mut().zip(x) {
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
