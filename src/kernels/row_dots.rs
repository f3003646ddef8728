//! Dot products of every row of one matrix with every row of another,
//! summed over a run of images: the weight gradient of a convolution
//! computed as a GEMM, `dW_g (M × K) = Σ_n dY_{n,g} (M × P) · cols_{n,g}ᵀ`
//! (`cols` is `K × P`: the group's input itself for 1×1 layers, its
//! im2col otherwise), with both operands row-major along the positions.
//!
//! Read so, the product needs no packing: each sum is a dot product of
//! two contiguous rows. A register tile holds [`R`] × [`S`] of them, each
//! as a vector of [`LANES`] partial sums, over a whole plane; the tile's
//! `R + S` rows are loaded once per vector of positions for `R · S`
//! multiply-adds. Between images the partial sums rest in a buffer of
//! `M · K` vectors, and they are reduced to scalars once, at the end.
//! `gemm` packs both operands for every image, which the narrow products
//! of grouped layers do not repay: ShuffleNet g8's 384 → 96 layer on
//! 28 × 28 (`M = 12`, `K = 48`; batch 16, one thread) took 2.48 ms through
//! it and takes 1.35 ms here, g3's 240 → 60 layer 1.69 → 1.17 ms, g1's
//! 144 → 36 layer 1.39 → 1.10 ms.

use crate::simd::{Fma, Isa, LANES, Lanes, add_lanes, mul_add_lanes};

/// Rows of the first operand per register tile.
const R: usize = 4;
/// Rows of the second operand per register tile: `R · S = 24` sums in
/// registers, `R + S = 10` vector loads for 24 multiply-adds.
const S: usize = 6;

/// The dot products of an `M × K` weight gradient, accumulated image by
/// image (see the module documentation).
pub(crate) struct RowDots {
    /// `[M, K]`: output rows (of `dY`) and input rows (of `cols`).
    rows: [usize; 2],
    /// Whether the tiles take `R` input rows and `S` output rows (the
    /// other way round when that computes fewer padding sums).
    swap: bool,
    /// Each weight's partial sums, `[first][second]` in tile order.
    sums: Vec<Lanes<f32>>,
    /// The zero-padded last partial vector of each row of an image (first
    /// operand's rows, then the second's), for planes that are not a
    /// whole number of vectors.
    tails: Vec<Lanes<f32>>,
}

/// The most weights per group [`RowDots`] takes on: their partial sums
/// (64 bytes each) must stay in the second-level cache between images.
/// ResNeXt-29's 512 → 256 layer (131,072 weights, 8 MiB of sums) took
/// 28 ms where `gemm` takes 16 (batch 32, one thread).
const MAX_WEIGHTS: usize = 8192;

/// The fewest positions per plane [`RowDots`] takes on: on shorter
/// planes each tile's set-up and the partial sums' round trip weigh on
/// too few multiply-adds. ShuffleNet g3's 120 → 480 layer on 14 × 14 (13
/// vectors per row) took 1.56 ms where `gemm` takes 0.99 (batch 16, one
/// thread); on 28 × 28 its 60 → 240 layer 1.16 where `gemm` takes 1.66.
const MIN_PLANE: usize = 512;

impl RowDots {
    /// Whether an `M × K` gradient (`rows = [M, K]`) over planes of
    /// `plane` positions suits these tiles.
    pub(crate) fn suits(rows: [usize; 2], plane: usize) -> bool {
        rows[0] * rows[1] <= MAX_WEIGHTS && plane >= MIN_PLANE
    }

    /// Sums for an `M × K` gradient (`rows = [M, K]`), all zero.
    pub(crate) fn new(rows: [usize; 2]) -> RowDots {
        let [m, k] = rows;
        let padded = |a: usize, b: usize| a.div_ceil(R) * R * b.div_ceil(S) * S;
        RowDots {
            rows,
            swap: padded(k, m) < padded(m, k),
            sums: vec![[0.0; LANES]; m * k],
            tails: vec![[0.0; LANES]; m + k],
        }
    }

    /// Adds `Σ_p dy[o][p] · cols[c][p]` to weight `(o, c)`: `dy` holds `M`
    /// rows and `cols` `K` rows, each of `plane` values.
    pub(crate) fn add(&mut self, isa: Isa, dy: &[f32], cols: &[f32], plane: usize) {
        let [m, k] = self.rows;
        assert!(
            dy.len() >= m * plane && cols.len() >= k * plane,
            "row_dots: operands shorter than their rows"
        );
        let (a, b, rows) = if self.swap {
            (cols, dy, [k, m])
        } else {
            (dy, cols, [m, k])
        };
        add_dots_isa(isa, a, b, rows, plane, &mut self.sums, &mut self.tails);
    }

    /// Writes each weight's total to `dw` (`[M, K]`) and zeroes the sums.
    pub(crate) fn finish(&mut self, dw: &mut [f32]) {
        let [m, k] = self.rows;
        for (i, lanes) in self.sums.iter_mut().enumerate() {
            let at = if self.swap { (i % m) * k + i / m } else { i };
            dw[at] = crate::simd::sum(lanes);
            *lanes = [0.0; LANES];
        }
    }
}

/// `sums[i · rows[1] + j] += Σ_p a[i][p] · b[j][p]` lane by lane (lane
/// `p % LANES`), with `a` of `rows[0]` and `b` of `rows[1]` rows of
/// `plane` values. Tiles past the last row read that row again and store
/// nothing for it.
#[inline(always)]
fn add_dots<T: Fma>(
    a: &[T],
    b: &[T],
    rows: [usize; 2],
    plane: usize,
    sums: &mut [Lanes<T>],
    tails: &mut [Lanes<T>],
) {
    let [na, nb] = rows;
    let (vectors, tail) = (plane / LANES, plane % LANES);
    if tail > 0 {
        for (r, t) in tails.iter_mut().enumerate() {
            let (m, r) = if r < na { (a, r) } else { (b, r - na) };
            *t = [T::zero(); LANES];
            t[..tail].copy_from_slice(&m[r * plane + vectors * LANES..][..tail]);
        }
    }
    for j0 in (0..nb).step_by(S) {
        let bj: [usize; S] = std::array::from_fn(|j| (j0 + j).min(nb - 1));
        let b_rows: [&[Lanes<T>]; S] =
            std::array::from_fn(|j| &b[bj[j] * plane..].as_chunks::<LANES>().0[..vectors]);
        for i0 in (0..na).step_by(R) {
            let ai: [usize; R] = std::array::from_fn(|i| (i0 + i).min(na - 1));
            let a_rows: [&[Lanes<T>]; R] =
                std::array::from_fn(|i| &a[ai[i] * plane..].as_chunks::<LANES>().0[..vectors]);
            let mut acc = [[[T::zero(); LANES]; S]; R];
            let mut step = |av: [&Lanes<T>; R], bv: [&Lanes<T>; S]| {
                for (acc, av) in acc.iter_mut().zip(av) {
                    for (acc, bv) in acc.iter_mut().zip(bv) {
                        mul_add_lanes(acc, av, bv);
                    }
                }
            };
            for v in 0..vectors {
                step(
                    std::array::from_fn(|i| &a_rows[i][v]),
                    std::array::from_fn(|j| &b_rows[j][v]),
                );
            }
            if tail > 0 {
                step(
                    std::array::from_fn(|i| &tails[ai[i]]),
                    std::array::from_fn(|j| &tails[na + bj[j]]),
                );
            }
            // Whole ranges (constant indices into `acc`, a test inside),
            // so that `acc` stays in registers.
            for (i, acc) in acc.iter().enumerate() {
                for (j, acc) in acc.iter().enumerate() {
                    if i0 + i < na && j0 + j < nb {
                        add_lanes(&mut sums[(i0 + i) * nb + j0 + j], acc);
                    }
                }
            }
        }
    }
}

crate::dispatch!(fn add_dots_isa<T: Fma>(a: &[T], b: &[T], rows: [usize; 2], plane: usize, sums: &mut [Lanes<T>], tails: &mut [Lanes<T>]) => add_dots);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class: tiles that fit exactly, partial tiles on either
    /// side (both orientations), planes with and without a tail, fewer
    /// rows than a tile.
    #[test]
    fn row_dots_match_plain_sums() {
        for (m, k, plane) in [
            (12, 48, 784),
            (80, 20, 196),
            (20, 80, 49),
            (3, 5, 7),
            (1, 1, 16),
            (7, 13, 33),
        ] {
            let value = |i: usize, salt: usize| ((i * 7919 + salt) % 211) as f32 / 100.0 - 1.0;
            let images: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                .map(|n| {
                    (
                        (0..m * plane).map(|i| value(i, 2 * n)).collect(),
                        (0..k * plane).map(|i| value(i, 2 * n + 1)).collect(),
                    )
                })
                .collect();
            let mut want = vec![0f64; m * k];
            for (dy, cols) in &images {
                for o in 0..m {
                    for c in 0..k {
                        want[o * k + c] += (0..plane)
                            .map(|p| dy[o * plane + p] as f64 * cols[c * plane + p] as f64)
                            .sum::<f64>();
                    }
                }
            }
            for isa in Isa::available() {
                let mut dots = RowDots::new([m, k]);
                let mut got = vec![f32::NAN; m * k];
                for _round in 0..2 {
                    for (dy, cols) in &images {
                        dots.add(isa, dy, cols, plane);
                    }
                    dots.finish(&mut got);
                    let err = crate::simd::max_or_nan(
                        got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()),
                    );
                    assert!(err < 1e-3, "{m}×{k}, plane {plane}, {isa:?}: error {err}");
                }
            }
        }
    }
}
