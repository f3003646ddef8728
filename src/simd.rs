//! Run-time selection of the instruction set for hot loops.
//!
//! Hot loops are written once as plain generic Rust marked `#[inline(always)]`
//! and compiled several times inside `#[target_feature]` wrappers; [`Isa::best`]
//! picks the widest one the processor supports. The scalar build is the same
//! code without wider vectors, so every path computes the same sums in the same
//! order and gives bit-identical results.

use crate::signal::Scalar;
use std::sync::OnceLock;

/// An instruction-set level that hot loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, DQ, BW, VL) with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// Whatever the compilation target guarantees (SSE2 on x86-64).
    Scalar,
}

impl Isa {
    /// The widest level this processor supports; `GCONV_ISA=avx512|avx2|scalar`
    /// lowers it (useful for comparing paths). Detected once per process.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let detected = Isa::detected();
            match std::env::var("GCONV_ISA").ok().as_deref() {
                Some("scalar") => Isa::Scalar,
                Some("avx2") if detected != Isa::Scalar => Isa::Avx2,
                _ => detected,
            }
        })
    }

    /// Every level this processor can run, widest first.
    pub fn available() -> Vec<Isa> {
        let top = Isa::detected();
        [Isa::Avx512, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.rank() <= top.rank())
            .collect()
    }

    /// `self`, lowered to what this processor supports: a level it lacks is
    /// never run, whatever the caller asked for.
    pub fn supported(self) -> Isa {
        let top = Isa::detected();
        if self.rank() <= top.rank() { self } else { top }
    }

    fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(Isa::detect)
    }

    fn rank(self) -> u8 {
        match self {
            Isa::Scalar => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Isa {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
        {
            Isa::Avx512
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Isa {
        Isa::Scalar
    }
}

/// Defines `$name(isa, args…)` that runs the `#[inline(always)]` generic
/// function `$body` compiled for the requested [`Isa`].
///
/// ```ignore
/// dispatch!(fn axpy_isa<T: Scalar>(out: &mut [T], x: &[T], w: T) => axpy_generic);
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    (fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name<$t: $bound>(isa: $crate::simd::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,fma,avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<$t: $bound>($($arg: $ty),*) { $body::<$t>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$t: $bound>($($arg: $ty),*) { $body::<$t>($($arg),*) }
                match isa.supported() {
                    // SAFETY: `supported()` returns a level whose features the
                    // processor was detected to have.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512::<$t>($($arg),*) },
                    $crate::simd::Isa::Avx2 => return unsafe { avx2::<$t>($($arg),*) },
                    $crate::simd::Isa::Scalar => {}
                }
            }
            let _ = isa;
            $body::<$t>($($arg),*)
        }
    };
}

/// Lanes of the reductions below: independent partial sums the compiler
/// keeps in vector registers (float addition is not reassociated for us);
/// also the planes (or channels) that the small-plane kernels of pooling
/// and depthwise convolution process side by side, one lane each.
pub(crate) const LANES: usize = 16;

/// One value of each of [`LANES`] planes.
pub(crate) type Lanes<T> = [T; LANES];

/// `acc[j] += w · x[j]` lane by lane: one vector multiply-add, the
/// building block of the register tiles (written as a loop over a known
/// width so that it vectorises along the lanes, not across tiles).
#[inline(always)]
pub(crate) fn fma_lanes<T: Fma>(acc: &mut Lanes<T>, w: T, x: &Lanes<T>) {
    for j in 0..LANES {
        acc[j] = w.fma(x[j], acc[j]);
    }
}

/// `acc[j] += a[j] · b[j]` lane by lane: [`fma_lanes`] with a vector
/// instead of a broadcast weight (the weight-gradient tiles).
#[inline(always)]
pub(crate) fn mul_add_lanes<T: Fma>(acc: &mut Lanes<T>, a: &Lanes<T>, b: &Lanes<T>) {
    for j in 0..LANES {
        acc[j] = a[j].fma(b[j], acc[j]);
    }
}

/// `acc[j] += x[j]` lane by lane: a register tile's sums added to the
/// partial sums kept between images.
#[inline(always)]
pub(crate) fn add_lanes<T: Fma>(acc: &mut Lanes<T>, x: &Lanes<T>) {
    for j in 0..LANES {
        acc[j] = acc[j] + x[j];
    }
}

/// Lane `j` of `t[i]` gets value `i` of plane `j` of `planes` (planes of
/// `t.len()` values; lanes past the last plane are left as they are).
#[inline(always)]
pub(crate) fn to_lanes<T: Copy>(planes: &[T], t: &mut [Lanes<T>]) {
    for (j, plane) in planes.chunks_exact(t.len()).enumerate() {
        for (v, &a) in t.iter_mut().zip(plane) {
            v[j] = a;
        }
    }
}

/// The inverse of [`to_lanes`]: plane `j` of `planes` gets lane `j`.
#[inline(always)]
pub(crate) fn from_lanes<T: Copy>(t: &[Lanes<T>], planes: &mut [T]) {
    for (j, plane) in planes.chunks_exact_mut(t.len()).enumerate() {
        for (a, v) in plane.iter_mut().zip(t) {
            *a = v[j];
        }
    }
}

/// `Σ a[i] · b[i]` over the common length: four interleaved groups of
/// [`LANES`] partial sums (four independent vector chains, so that the
/// multiply-adds overlap), then one group for the rest. Inline, so that
/// callers compiled for an [`Isa`] vectorise it.
#[inline(always)]
pub fn dot<T: Fma>(a: &[T], b: &[T]) -> T {
    const WIDE: usize = 4 * LANES;
    let n = a.len().min(b.len());
    let (aw, bw) = (a[..n].chunks_exact(WIDE), b[..n].chunks_exact(WIDE));
    let (ar, br) = (aw.remainder(), bw.remainder());
    let mut wide = [T::zero(); WIDE];
    for (x, y) in aw.zip(bw) {
        for ((s, &x), &y) in wide.iter_mut().zip(x).zip(y) {
            *s = x.fma(y, *s);
        }
    }
    let mut acc = [T::zero(); LANES];
    for part in wide.chunks_exact(LANES) {
        for (s, &v) in acc.iter_mut().zip(part) {
            *s = *s + v;
        }
    }
    let (ac, bc) = (ar.chunks_exact(LANES), br.chunks_exact(LANES));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(T::zero(), |s, (&x, &y)| x.fma(y, s));
    for (x, y) in ac.zip(bc) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s = x.fma(y, *s);
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `Σ a[i]` in [`LANES`] interleaved partial sums.
#[inline(always)]
pub fn sum<T: Scalar>(a: &[T]) -> T {
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
    let mut acc = [T::zero(); LANES];
    for x in chunks {
        for (a, &x) in acc.iter_mut().zip(x) {
            *a = *a + x;
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Floating-point types with a fused multiply-add: one instruction (and
/// one rounding) where the [`Isa`] has FMA, as every vector level here
/// does.
pub trait Fma: Scalar + std::ops::Sub<Output = Self> + PartialOrd {
    /// `self · a + b`, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
}

impl Fma for f32 {
    #[inline(always)]
    fn fma(self, a: f32, b: f32) -> f32 {
        self.mul_add(a, b)
    }
}

impl Fma for f64 {
    #[inline(always)]
    fn fma(self, a: f64, b: f64) -> f64 {
        self.mul_add(a, b)
    }
}

/// `max(v, 0)` with a NaN kept, as PyTorch's ReLU (`f32::max` would return
/// the 0). A select that makes a new value: in a vectorised loop it
/// becomes a vector maximum.
#[inline(always)]
pub fn relu_value<T: Fma>(v: T) -> T {
    if v < T::zero() { T::zero() } else { v }
}

/// The largest of `values` (0 for none), or NaN if any of them is NaN —
/// `f64::max` would pass over it. Result checks compare with it, so that
/// an output never written (NaN-filled) fails them.
pub fn max_or_nan(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .fold(0.0, |m: f64, v| if m.is_nan() || v <= m { m } else { v })
}

/// The index of the first value of `x` that is NaN or infinite, if any.
/// The common case, all finite, is one vectorised pass: `v · 0` is 0 for
/// finite values and NaN otherwise, summed in [`LANES`] lanes.
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(0f32, |a, &v| a + v * 0.0);
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * 0.0;
        }
    }
    if tail == 0.0 && lanes.iter().all(|&l| l == 0.0) {
        return None;
    }
    x.iter().position(|v| !v.is_finite())
}

/// Asks the cache hierarchy to fetch `data` into the second-level cache
/// ahead of use (one hint per 64-byte line; nothing on other targets).
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        for at in (0..bytes).step_by(64) {
            // SAFETY: a hint on an address inside `data`; it never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(base.add(at))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// `total` items handed out a share at a time over the steps of a
/// computation: what a [`Trickle`] and the direct kernels' deferred writes
/// spread.
pub(crate) struct Shares {
    total: usize,
    done: usize,
    per_step: usize,
}

impl Shares {
    /// `total` items, `per_step` (at least 1) at a time.
    pub fn new(total: usize, per_step: usize) -> Shares {
        Shares {
            total,
            done: 0,
            per_step: per_step.max(1),
        }
    }

    /// The next share (empty once all are handed out).
    #[inline(always)]
    pub fn next(&mut self) -> std::ops::Range<usize> {
        let start = self.done;
        self.done = (start + self.per_step).min(self.total);
        start..self.done
    }

    /// Every item not handed out yet.
    #[inline(always)]
    pub fn rest(&mut self) -> std::ops::Range<usize> {
        let start = self.done;
        self.done = self.total;
        start..self.total
    }
}

/// A prefetch of up to two regions spread over a computation: each
/// [`step`](Self::step) asks for the next share of their 64-byte lines
/// (the whole at once stalls the core: a burst of hundreds of hints waits
/// for the line-fill buffers, so the memory time adds to the computation's
/// instead of hiding under it).
pub(crate) struct Trickle<'a> {
    regions: [&'a [u8]; 2],
    /// The lines of both regions in order.
    lines: Shares,
}

impl<'a> Trickle<'a> {
    /// Spreads `regions` over about `steps` calls of [`step`](Self::step).
    pub fn new<T>(regions: [&'a [T]; 2], steps: usize) -> Trickle<'a> {
        let bytes = |r: &'a [T]| {
            // SAFETY: the same memory, viewed as bytes (any `T` is).
            unsafe { std::slice::from_raw_parts(r.as_ptr().cast::<u8>(), size_of_val(r)) }
        };
        let regions = regions.map(bytes);
        let lines: usize = regions.iter().map(|r| r.len().div_ceil(64)).sum();
        Trickle {
            regions,
            lines: Shares::new(lines, lines.div_ceil(steps.max(1))),
        }
    }

    /// Nothing to fetch.
    pub fn none() -> Trickle<'a> {
        Trickle::new::<u8>([&[], &[]], 1)
    }

    /// Asks for the next share of lines.
    #[inline(always)]
    pub fn step(&mut self) {
        let lines = self.lines.next();
        self.fetch(lines);
    }

    /// Asks for every line not asked for yet.
    #[inline(always)]
    pub fn finish(&mut self) {
        let lines = self.lines.rest();
        self.fetch(lines);
    }

    #[inline(always)]
    fn fetch(&self, lines: std::ops::Range<usize>) {
        let first = self.regions[0].len().div_ceil(64);
        let [a, b] = [lines.start, lines.end].map(|l| l.min(first));
        let [c, d] = [lines.start, lines.end].map(|l| l.max(first) - first);
        for (region, lines) in self.regions.iter().zip([a..b, c..d]) {
            if !lines.is_empty() {
                prefetch(&region[lines.start * 64..(lines.end * 64).min(region.len())]);
            }
        }
    }
}

/// Copies `src` into `dst` (equal lengths) with inline vector moves rather
/// than a `memcpy` call, which costs more than the copy for the short rows
/// (tens of values) of the conv kernels: up to 32 values in two
/// overlapping moves, longer rows in 16-value chunks, then the last 16
/// values again to cover the tail. (The compiler turns a plain loop of
/// such moves back into a `memcpy` call; the source address of each chunk
/// goes through [`std::hint::black_box`], a store and a load on the
/// stack, to keep the moves inline. Rows of 16–32 values, as 28 × 28
/// planes, went through that loop until they took two moves: batch-1
/// inference 2–3 % faster, three rounds.)
#[inline(always)]
pub fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    const CHUNK: usize = 16;
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    if n <= 2 * CHUNK {
        // Two overlapping moves of the largest power of two that fits
        // (rows of 16–32 values, e.g. 28×28 planes, in two moves of 16;
        // of 8–15 in two of 8; ...).
        match n {
            CHUNK.. => two_moves::<T, CHUNK>(dst, src),
            8.. => two_moves::<T, 8>(dst, src),
            4.. => two_moves::<T, 4>(dst, src),
            2.. => two_moves::<T, 2>(dst, src),
            1 => dst[0] = src[0],
            0 => {}
        }
        return;
    }
    for (d, s) in dst.chunks_exact_mut(CHUNK).zip(src.chunks_exact(CHUNK)) {
        let d: &mut [T; CHUNK] = d.try_into().expect("chunk");
        *d = *std::hint::black_box(<&[T; CHUNK]>::try_from(s).expect("chunk"));
    }
    let d: &mut [T; CHUNK] = (&mut dst[n - CHUNK..]).try_into().expect("tail");
    *d = *<&[T; CHUNK]>::try_from(&src[n - CHUNK..]).expect("tail");
}

/// `dst = src` for `M ≤ n ≤ 2 · M` values: a move of the first `M` and one
/// of the last `M`.
#[inline(always)]
fn two_moves<T: Copy, const M: usize>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    for at in [0, n - M] {
        let d: &mut [T; M] = (&mut dst[at..][..M]).try_into().expect("M values");
        *d = *<&[T; M]>::try_from(&src[at..][..M]).expect("M values");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_non_finite_finds_the_first_bad_value() {
        for n in [0, 1, 15, 16, 17, 100] {
            let mut x: Vec<f32> = (0..n).map(|i| i as f32 * 1e30 - 3.0).collect();
            assert_eq!(super::first_non_finite(&x), None, "n = {n}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in (0..n).rev().step_by(7) {
                    let keep = x[at];
                    x[at] = bad;
                    assert_eq!(
                        super::first_non_finite(&x),
                        Some(at),
                        "{bad} at {at} of {n}"
                    );
                    x[at] = keep;
                }
            }
        }
    }

    #[test]
    fn max_or_nan_keeps_a_nan_wherever_it_is() {
        assert_eq!(super::max_or_nan([]), 0.0);
        assert_eq!(super::max_or_nan([1.0, 3.0, 2.0]), 3.0);
        for at in 0..3 {
            let mut v = [1.0, 3.0, 2.0];
            v[at] = f64::NAN;
            assert!(super::max_or_nan(v).is_nan(), "NaN at {at}");
        }
    }

    #[test]
    fn copy_moves_every_length_exactly() {
        // Two overlapping moves (≤ 32), whole chunks plus a tail.
        for n in 0..70 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![-1.0f32; n];
            super::copy(&mut dst, &src);
            assert_eq!(dst, src, "n = {n}");
        }
    }
}
