//! Padded, stride-phase-split planes: the layout that turns a strided,
//! padded, dilated convolution over a plane into one long contiguous
//! multiply-add per kernel tap (the direct kernels' trick).

use super::conv::Conv2dShape;
use crate::signal::Scalar;

/// Sizes of one input plane and of its padded, phase-split copy.
///
/// The copy splits padded rows and columns by their remainder modulo the
/// stride into `stride_h × stride_w` blocks of `phase_rows × phase_len`:
/// padded element `(r, c)` lives in block `(r % stride_h, c % stride_w)` at
/// row `r / stride_h`, column `c / stride_w`. Then output `(oy, ox)` reads,
/// for every tap, the element at `oy · phase_len + ox` plus a fixed offset:
/// the whole plane is one long multiply-add per tap, and only the
/// `phase_len − W_out` columns at the end of each row are computed in vain.
pub(crate) struct Geometry {
    pub out_h: usize,
    pub out_w: usize,
    stride: [usize; 2],
    /// Rows in one block.
    phase_rows: usize,
    /// Columns in one block: the accumulator's row pitch.
    pub phase_len: usize,
    /// Offset of each kernel tap (row-major taps) from output position 0.
    pub taps: Vec<usize>,
    /// How an input plane maps to the layout, as runs `(src, step, dst,
    /// count)`: input elements `src + i · step` (`i < count`) go to padded
    /// positions `dst + i`. Together the runs cover the plane once.
    runs: Vec<(usize, usize, usize, usize)>,
}

impl Geometry {
    pub fn new(s: &Conv2dShape) -> Self {
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
        let ([sh, sw], [ph, pw], w) = (s.stride, s.padding, s.input[1]);
        let block = phase_rows * phase_len;
        let mut runs = Vec::with_capacity(s.input[0] * sw);
        for r in 0..s.input[0] {
            let pr = r + ph;
            let row = (pr % sh) * sw * block + (pr / sh) * phase_len;
            // Padded column c = input column + pw sits in block column c % sw at c / sw.
            for q in 0..sw {
                let x0 = (q + sw - pw % sw) % sw;
                if x0 < w {
                    runs.push((
                        r * w + x0,
                        sw,
                        row + q * block + (x0 + pw) / sw,
                        (w - x0).div_ceil(sw),
                    ));
                }
            }
        }
        Geometry {
            runs,
            out_h,
            out_w,
            stride: s.stride,
            phase_rows,
            phase_len,
            taps,
        }
    }

    /// Elements of one stride-phase block.
    pub fn block_len(&self) -> usize {
        self.phase_rows * self.phase_len
    }

    /// Elements of the padded, phase-split plane.
    pub fn padded_len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.phase_rows * self.phase_len
    }

    /// Elements of the accumulator: outputs at the row pitch `phase_len`,
    /// up to the last one needed.
    pub fn acc_len(&self) -> usize {
        (self.out_h - 1) * self.phase_len + self.out_w
    }
}

impl Geometry {
    /// Copies an input plane into the padded, phase-split layout; the
    /// whole of `padded` (which may extend past [`padded_len`](Self::padded_len))
    /// is zeroed first.
    #[inline(always)]
    pub fn pad<T: Scalar>(&self, src: &[T], padded: &mut [T]) {
        padded.fill(T::zero());
        for &(s, step, d, count) in &self.runs {
            let dst = &mut padded[d..][..count];
            let src = &src[s..][..(count - 1) * step + 1];
            match step {
                1 => crate::simd::copy(dst, src),
                2 => take_even(dst, src),
                _ => (0..count).for_each(|i| dst[i] = src[i * step]),
            }
        }
    }

    /// The inverse of [`pad`](Self::pad) on the interior: writes the
    /// padded layout's input positions back to a plane.
    #[inline(always)]
    pub fn unpad<T: Scalar>(&self, padded: &[T], dst: &mut [T]) {
        for &(s, step, d, count) in &self.runs {
            let src = &padded[d..][..count];
            let dst = &mut dst[s..][..(count - 1) * step + 1];
            match step {
                1 => crate::simd::copy(dst, src),
                2 => put_even(dst, src),
                _ => (0..count).for_each(|i| dst[i * step] = src[i]),
            }
        }
    }

    /// Spreads an output plane (or its gradient) to the accumulator's row
    /// pitch, zero between rows and after the last (all of `acc`).
    #[inline(always)]
    pub fn spread<T: Scalar>(&self, plane: &[T], acc: &mut [T]) {
        acc.fill(T::zero());
        for (oy, row) in plane.chunks_exact(self.out_w).enumerate() {
            crate::simd::copy(&mut acc[oy * self.phase_len..][..self.out_w], row);
        }
    }
}

/// Outputs `(oy, ox)` of an accumulator at pitch `phase_len`, copied to
/// a dense `out_h × out_w` plane.
impl Geometry {
    #[inline(always)]
    pub fn gather_outputs<T: Scalar>(&self, acc: &[T], out: &mut [T]) {
        for (oy, row) in out.chunks_exact_mut(self.out_w).enumerate() {
            crate::simd::copy(row, &acc[oy * self.phase_len..][..self.out_w]);
        }
    }
}

/// Values per chunk of the stride-2 moves: a vector's worth of results.
const EVEN_CHUNK: usize = 16;

/// The starts of chunks of `c` results covering `n`: whole chunks, the
/// last one moved back to end at `n` (overlapping the one before), or none
/// when `n < c`.
fn chunk_starts(n: usize, c: usize) -> impl Iterator<Item = usize> {
    let chunks = if n < c { 0 } else { n.div_ceil(c) };
    (0..chunks).map(move |i| (i * c).min(n - c))
}

/// `dst[i] = src[2 · i]` (`src` holds at least `2 · dst.len() − 1`
/// values), a chunk of
/// results at a time from a fixed-size window of the source, so that the
/// compiler turns it into vector permutes rather than a gather: chunks of
/// 16, or for shorter rows two overlapping chunks of 8 or of 4.
#[inline(always)]
pub(crate) fn take_even<T: Scalar>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    match n {
        EVEN_CHUNK.. => take_even_chunks::<T, EVEN_CHUNK>(dst, src),
        8.. => take_even_chunks::<T, 8>(dst, src),
        4.. => take_even_chunks::<T, 4>(dst, src),
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[2 * i];
            }
        }
    }
}

/// [`take_even`] in chunks of `C` results (`n ≥ C`), see [`chunk_starts`].
#[inline(always)]
fn take_even_chunks<T: Scalar, const C: usize>(dst: &mut [T], src: &[T]) {
    for at in chunk_starts(dst.len(), C) {
        let s = &src[2 * at..][..2 * C - 1];
        let d: &mut [T; C] = (&mut dst[at..][..C]).try_into().expect("chunk");
        for (i, d) in d.iter_mut().enumerate() {
            *d = s[2 * i];
        }
    }
}

/// `dst[2 · i] = src[i]` (`dst.len() == 2 · src.len() − 1`), the odd
/// positions kept: read, blend and write back a window per chunk, the
/// inverse of [`take_even`].
#[inline(always)]
fn put_even<T: Scalar>(dst: &mut [T], src: &[T]) {
    let n = src.len();
    for at in chunk_starts(n, EVEN_CHUNK) {
        let d: &mut [T; 2 * EVEN_CHUNK - 1] = (&mut dst[2 * at..][..2 * EVEN_CHUNK - 1])
            .try_into()
            .expect("window");
        let s: &[T; EVEN_CHUNK] = src[at..][..EVEN_CHUNK].try_into().expect("chunk");
        let mut w = *d;
        for (i, &v) in s.iter().enumerate() {
            w[2 * i] = v;
        }
        *d = w;
    }
    if n < EVEN_CHUNK {
        for (i, &v) in src.iter().enumerate() {
            dst[2 * i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{put_even, take_even};

    #[test]
    fn stride_two_moves_match_the_definition() {
        // Short rows (scalar), one chunk, and chunks that overlap at the end.
        for n in 1..50 {
            let src: Vec<f32> = (0..2 * n - 1).map(|i| i as f32).collect();
            let mut even = vec![-1.0; n];
            take_even(&mut even, &src);
            assert!(
                even.iter().enumerate().all(|(i, &v)| v == (2 * i) as f32),
                "take n={n}"
            );
            let mut back: Vec<f32> = (0..2 * n - 1).map(|i| -(i as f32)).collect();
            put_even(&mut back, &even);
            for (i, &v) in back.iter().enumerate() {
                let want = if i % 2 == 0 { i as f32 } else { -(i as f32) };
                assert_eq!(v, want, "put n={n} at {i}");
            }
        }
    }
}
