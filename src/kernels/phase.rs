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
    /// How an input plane maps to the layout.
    rows: Rows,
}

/// How the input rows map to the padded, phase-split layout.
enum Rows {
    /// Runs `(src, step, dst, count)`: input elements `src + i · step`
    /// (`i < count`) go to padded positions `dst + i`. Together the runs
    /// cover the plane once.
    Runs(Vec<(usize, usize, usize, usize)>),
    /// Stride 2 across rows of `width` values: per input row `(src,
    /// even, odd)`, the row's even columns go to padded positions `even ..`
    /// and its odd ones to `odd ..` (merged back in one pass).
    Pairs {
        width: usize,
        rows: Vec<(usize, usize, usize)>,
    },
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
        let row_start = |r: usize| {
            let pr = r + ph;
            (pr % sh) * sw * block + (pr / sh) * phase_len
        };
        // Padded column c = input column + pw sits in block column c % sw at c / sw.
        let to_padded = |row: usize, c: usize| row + (c % sw) * block + c / sw;
        let rows = if sw == 2 {
            Rows::Pairs {
                width: w,
                rows: (0..s.input[0])
                    .map(|r| {
                        let row = row_start(r);
                        (r * w, to_padded(row, pw), to_padded(row, pw + 1))
                    })
                    .collect(),
            }
        } else {
            let mut runs = Vec::with_capacity(s.input[0] * sw);
            for r in 0..s.input[0] {
                let row = row_start(r);
                for q in 0..sw {
                    let x0 = (q + sw - pw % sw) % sw;
                    if x0 < w {
                        runs.push((
                            r * w + x0,
                            sw,
                            to_padded(row, x0 + pw),
                            (w - x0).div_ceil(sw),
                        ));
                    }
                }
            }
            Rows::Runs(runs)
        };
        Geometry {
            rows,
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
    /// Copies an input plane into the padded, phase-split layout. Only the
    /// input's positions are written: the rest of `padded` (which may
    /// extend past [`padded_len`](Self::padded_len)) must be zero already
    /// and stays so, as in a buffer zeroed once and then padded into by
    /// planes of this geometry alone.
    #[inline(always)]
    pub fn pad<T: Scalar>(&self, src: &[T], padded: &mut [T]) {
        match &self.rows {
            Rows::Runs(runs) => {
                for &(s, step, d, count) in runs {
                    let dst = &mut padded[d..][..count];
                    let src = &src[s..][..(count - 1) * step + 1];
                    match step {
                        1 => crate::simd::copy(dst, src),
                        _ => (0..count).for_each(|i| dst[i] = src[i * step]),
                    }
                }
            }
            &Rows::Pairs { width, ref rows } => {
                // Two passes of masked loads and permutes: a split in one
                // pass over the row made inference's depthwise 3×3/2
                // layers 5–15 % slower.
                let [ne, no] = [width.div_ceil(2), width / 2];
                for &(s, even, odd) in rows {
                    let row = &src[s..][..width];
                    take_even(&mut padded[even..][..ne], row);
                    if no > 0 {
                        take_even(&mut padded[odd..][..no], &row[1..]);
                    }
                }
            }
        }
    }

    /// The pieces of [`unpad_part`](Self::unpad_part): runs of a row, or
    /// rows.
    pub fn unpad_parts(&self) -> usize {
        match &self.rows {
            Rows::Runs(runs) => runs.len(),
            Rows::Pairs { rows, .. } => rows.len(),
        }
    }

    /// The inverse of [`pad`](Self::pad) on the interior, piece `part` of
    /// [`unpad_parts`](Self::unpad_parts): writes the padded layout's input
    /// positions back to a plane.
    #[inline(always)]
    pub fn unpad_part<T: Scalar>(&self, padded: &[T], dst: &mut [T], part: usize) {
        match &self.rows {
            Rows::Runs(runs) => {
                let (s, step, d, count) = runs[part];
                let src = &padded[d..][..count];
                let dst = &mut dst[s..][..(count - 1) * step + 1];
                match step {
                    1 => crate::simd::copy(dst, src),
                    _ => (0..count).for_each(|i| dst[i * step] = src[i]),
                }
            }
            &Rows::Pairs { width, ref rows } => {
                let [ne, no] = [width.div_ceil(2), width / 2];
                let (s, even, odd) = rows[part];
                let (e, o) = (&padded[even..][..ne], &padded[odd..][..no]);
                merge_even_odd(e, o, &mut dst[s..][..width]);
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

impl Geometry {
    /// Outputs `(oy, ox)` of row `oy` of an accumulator at pitch
    /// `phase_len`, copied to a dense `out_h × out_w` plane.
    #[inline(always)]
    pub fn gather_row<T: Scalar>(&self, acc: &[T], out: &mut [T], oy: usize) {
        crate::simd::copy(
            &mut out[oy * self.out_w..][..self.out_w],
            &acc[oy * self.phase_len..][..self.out_w],
        );
    }
}

/// Values per chunk of the stride-2 moves: a vector's worth of results.
const EVEN_CHUNK: usize = 16;

/// The starts of chunks of `c` results covering `n`: whole chunks, the
/// last one moved back to end at `n` (overlapping the one before), or none
/// when `n < c`.
pub(crate) fn chunk_starts(n: usize, c: usize) -> impl Iterator<Item = usize> {
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

/// `dst[2 · i] = even[i]`, `dst[2 · i + 1] = odd[i]` (`even` holds at
/// least `⌈n / 2⌉` values, `odd` `⌊n / 2⌋`, `n = dst.len()`): the inverse of
/// taking the even and the odd values, a vector of `dst` written at once:
/// chunks of 8 pairs (one AVX-512 vector of f32), or for shorter rows two
/// overlapping chunks of 4. (In chunks of 16 pairs the compiler built the
/// second half of each chunk with gathers.)
#[inline(always)]
pub(crate) fn merge_even_odd<T: Scalar>(even: &[T], odd: &[T], dst: &mut [T]) {
    let pairs = dst.len() / 2;
    match pairs {
        8.. => merge_chunks::<T, 8>(even, odd, dst),
        4.. => merge_chunks::<T, 4>(even, odd, dst),
        _ => {
            for i in 0..pairs {
                dst[2 * i] = even[i];
                dst[2 * i + 1] = odd[i];
            }
        }
    }
    if dst.len() % 2 == 1 {
        dst[2 * pairs] = even[pairs];
    }
}

/// [`merge_even_odd`]'s pairs in chunks of `C` (at least `C` pairs), each
/// chunk a loop of fixed length over pairs of `dst` that the compiler turns
/// into a two-source permute. (Built in locals by index, `lo[j] = e[j / 2]`
/// or `o[j / 2]`, the moves stayed scalar: 32 loads and 32 stores per chunk
/// of 16, the largest item in perf's profile of the stride-2 input
/// gradient.)
#[inline(always)]
fn merge_chunks<T: Scalar, const C: usize>(even: &[T], odd: &[T], dst: &mut [T]) {
    for at in chunk_starts(dst.len() / 2, C) {
        let e: &[T; C] = even[at..][..C].try_into().expect("chunk");
        let o: &[T; C] = odd[at..][..C].try_into().expect("chunk");
        let pairs = dst[2 * at..][..2 * C].chunks_exact_mut(2);
        for (d, (&e, &o)) in pairs.zip(e.iter().zip(o)) {
            d[0] = e;
            d[1] = o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{merge_even_odd, take_even};

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
        }
        // Rows of odd and even lengths: scalar, chunks of 4, 8 and 16 pairs.
        for len in 1usize..80 {
            let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let even: Vec<f32> = src.iter().copied().step_by(2).collect();
            let odd: Vec<f32> = src.iter().copied().skip(1).step_by(2).collect();
            let mut back = vec![-1.0; len];
            merge_even_odd(&even, &odd, &mut back);
            assert_eq!(back, src, "merge len={len}");
        }
    }
}
