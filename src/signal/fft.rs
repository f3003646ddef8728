//! FFT convolution: multiply spectra, with overlap-add along any dimension
//! where the signal is much longer than the kernel.
//!
//! The last dimension uses a real-to-complex transform for real data
//! (`realfft`), the others complex transforms (`rustfft`) on gathered column
//! tiles. A single block along a dimension uses the shortest circular length
//! that leaves the kept span free of wrap-around (`'valid'` needs only the
//! signal's length).

use super::Scalar;
use super::mode::Span;
use num_complex::Complex;
use num_traits::{Float, Zero};
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::sync::{Arc, Mutex};

/// Floating-point types the FFT path computes in.
pub(crate) trait FftFloat: realfft::FftNum + Float {
    /// Spectrum buffers kept between calls (see [`Pooled`]).
    fn pool() -> &'static Mutex<Vec<Vec<Complex<Self>>>>;
}

impl FftFloat for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<Complex<f32>>>> {
        static POOL: Mutex<Vec<Vec<Complex<f32>>>> = Mutex::new(Vec::new());
        &POOL
    }
}

impl FftFloat for f64 {
    fn pool() -> &'static Mutex<Vec<Vec<Complex<f64>>>> {
        static POOL: Mutex<Vec<Vec<Complex<f64>>>> = Mutex::new(Vec::new());
        &POOL
    }
}

/// A spectrum buffer taken from a small per-type pool and returned
/// to it on drop. Fresh pages cost more than the transforms themselves
/// (first-touch page faults, measured about 5 ms for 9 MB here), so
/// repeated convolutions reuse them.
struct Pooled<F: FftFloat>(Vec<Complex<F>>);

/// Buffers the pool keeps at most.
const POOL_KEEP: usize = 4;

impl<F: FftFloat> Pooled<F> {
    /// A buffer of `len` elements with unspecified (but initialised) values.
    fn any(len: usize) -> Self {
        let reuse = {
            let mut pool = F::pool().lock().unwrap_or_else(|e| e.into_inner());
            match pool.iter().position(|b| b.capacity() >= len) {
                Some(i) => Some(pool.swap_remove(i)),
                None => pool.pop(),
            }
        };
        let mut buf = reuse.unwrap_or_default();
        buf.resize(len, Complex::zero());
        buf.truncate(len);
        Pooled(buf)
    }
}

impl<F: FftFloat> Drop for Pooled<F> {
    fn drop(&mut self) {
        let mut pool = F::pool().lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

impl<F: FftFloat> std::ops::Deref for Pooled<F> {
    type Target = [Complex<F>];
    fn deref(&self) -> &[Complex<F>] {
        &self.0
    }
}

impl<F: FftFloat> std::ops::DerefMut for Pooled<F> {
    fn deref_mut(&mut self) -> &mut [Complex<F>] {
        &mut self.0
    }
}

/// Transforms along the last dimension, for one element type.
pub(crate) enum LastAxis<F: FftFloat> {
    Real(Arc<dyn RealToComplex<F>>, Arc<dyn ComplexToReal<F>>),
    Complex(Arc<dyn Fft<F>>, Arc<dyn Fft<F>>),
}

/// Element types with an FFT path: real `F` and `Complex<F>`.
pub(crate) trait FftElem<F: FftFloat>: Scalar {
    /// Whether the data is real (its spectrum is stored half-length).
    const REAL: bool;
    /// Spectrum length of a last-axis transform of length `n`.
    fn spectrum_len(n: usize) -> usize;
    /// Plans the forward and inverse last-axis transforms of length `n`.
    fn plan(n: usize) -> LastAxis<F>;
    /// `out = FFT(row)`; `row` may be overwritten.
    fn forward(
        plan: &LastAxis<F>,
        row: &mut [Self],
        out: &mut [Complex<F>],
        scratch: &mut [Complex<F>],
    );
    /// `out = unnormalised inverse FFT(spec)`; `spec` may be overwritten.
    fn inverse(
        plan: &LastAxis<F>,
        spec: &mut [Complex<F>],
        out: &mut [Self],
        scratch: &mut [Complex<F>],
    );
    /// `self · s` for a real scale `s`.
    fn scale(self, s: F) -> Self;
}

impl<F: FftFloat> FftElem<F> for F {
    const REAL: bool = true;
    fn spectrum_len(n: usize) -> usize {
        n / 2 + 1
    }
    fn plan(n: usize) -> LastAxis<F> {
        let mut planner = RealFftPlanner::<F>::new();
        LastAxis::Real(planner.plan_fft_forward(n), planner.plan_fft_inverse(n))
    }
    fn forward(
        plan: &LastAxis<F>,
        row: &mut [F],
        out: &mut [Complex<F>],
        scratch: &mut [Complex<F>],
    ) {
        let LastAxis::Real(r2c, _) = plan else {
            unreachable!("real data, real plan")
        };
        r2c.process_with_scratch(row, out, scratch)
            .expect("buffer lengths come from the plan");
    }
    fn inverse(
        plan: &LastAxis<F>,
        spec: &mut [Complex<F>],
        out: &mut [F],
        scratch: &mut [Complex<F>],
    ) {
        let LastAxis::Real(_, c2r) = plan else {
            unreachable!("real data, real plan")
        };
        // The spectrum of real data has real end points; drop rounding noise.
        spec[0].im = F::zero();
        if out.len().is_multiple_of(2) {
            spec[spec.len() - 1].im = F::zero();
        }
        c2r.process_with_scratch(spec, out, scratch)
            .expect("buffer lengths come from the plan");
    }
    fn scale(self, s: F) -> F {
        self * s
    }
}

impl<F: FftFloat> FftElem<F> for Complex<F> {
    const REAL: bool = false;
    fn spectrum_len(n: usize) -> usize {
        n
    }
    fn plan(n: usize) -> LastAxis<F> {
        let mut planner = FftPlanner::<F>::new();
        LastAxis::Complex(planner.plan_fft_forward(n), planner.plan_fft_inverse(n))
    }
    fn forward(
        plan: &LastAxis<F>,
        row: &mut [Self],
        out: &mut [Complex<F>],
        scratch: &mut [Complex<F>],
    ) {
        let LastAxis::Complex(fwd, _) = plan else {
            unreachable!("complex data, complex plan")
        };
        out.copy_from_slice(row);
        fwd.process_with_scratch(out, scratch);
    }
    fn inverse(
        plan: &LastAxis<F>,
        spec: &mut [Complex<F>],
        out: &mut [Self],
        scratch: &mut [Complex<F>],
    ) {
        let LastAxis::Complex(_, inv) = plan else {
            unreachable!("complex data, complex plan")
        };
        inv.process_with_scratch(spec, scratch);
        out.copy_from_slice(spec);
    }
    fn scale(self, s: F) -> Self {
        self * s
    }
}

impl<F: FftFloat> LastAxis<F> {
    fn scratch_len(&self) -> usize {
        match self {
            LastAxis::Real(f, i) => f.get_scratch_len().max(i.get_scratch_len()),
            LastAxis::Complex(f, i) => f.get_inplace_scratch_len().max(i.get_inplace_scratch_len()),
        }
    }
}

/// Smallest `l ≥ n` whose prime factors are all 2, 3, 5 or 7 (fast FFT
/// sizes), even when `even` is set (real transforms halve even lengths).
pub(crate) fn fast_len(n: usize, even: bool) -> usize {
    let mut l = n.max(1);
    loop {
        let mut r = l;
        for p in [2, 3, 5, 7] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 && (!even || l.is_multiple_of(2)) {
            return l;
        }
        l += 1;
    }
}

/// How one dimension is cut into overlap-add blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocking {
    /// Signal samples per block.
    pub block: usize,
    /// FFT length.
    pub len: usize,
}

impl Blocking {
    /// Chooses blocks for a signal of length `m`, kernel `n` and kept `span`,
    /// minimising (blocks × L log L). `even` asks for an even FFT length.
    pub(crate) fn choose(m: usize, n: usize, span: Span, even: bool) -> Blocking {
        let full = (m + n - 1) as isize;
        let need = (full - span.start).max(span.start + span.len as isize) as usize;
        let single = Blocking {
            block: m,
            len: fast_len(need.max(m).max(n), even),
        };
        let cost =
            |b: &Blocking| (m.div_ceil(b.block) * b.len) as f64 * (b.len as f64).log2().max(1.0);
        let mut best = single;
        let mut target = 4 * n.max(8);
        while target < single.len {
            let len = fast_len(target, even);
            let cand = Blocking {
                block: len + 1 - n,
                len,
            };
            if cost(&cand) < cost(&best) {
                best = cand;
            }
            target *= 2;
        }
        best
    }

    /// FFT work of the whole convolution for this blocking, in units of
    /// "points × log2 points" of the per-block transforms (3 per block).
    pub(crate) fn cost(blocks: &[Blocking], m: &[usize]) -> f64 {
        let points: f64 = blocks.iter().map(|b| b.len as f64).product();
        let count: f64 = blocks
            .iter()
            .zip(m)
            .map(|(b, &m)| m.div_ceil(b.block) as f64)
            .product();
        3.0 * count * points * points.log2().max(1.0)
    }
}

/// `window(full(a, b))` by FFT: same contract as
/// [`direct`](super::direct::direct), for floating-point data.
pub(crate) fn fft<F: FftFloat, T: FftElem<F>>(
    a: &[T],
    ashape: &[usize],
    b: &[T],
    bshape: &[usize],
    spans: &[Span],
) -> Vec<T> {
    let rank = ashape.len();
    let total: usize = spans.iter().map(|s| s.len).product();
    let mut out = vec![T::zero(); total];
    if total == 0 || a.is_empty() || b.is_empty() {
        return out;
    }
    let blocks: Vec<Blocking> = (0..rank)
        .map(|d| Blocking::choose(ashape[d], bshape[d], spans[d], T::REAL && d == rank - 1))
        .collect();
    let lens: Vec<usize> = blocks.iter().map(|b| b.len).collect();
    let plans = Plans::<F, T>::new(&lens);
    // The inverse transforms are unnormalised: fold 1 / (number of points)
    // into the kernel's few values instead of scaling every output.
    let scale = F::one() / F::from(lens.iter().product::<usize>()).expect("length fits a float");
    let b_scaled: Vec<T> = b.iter().map(|&v| v.scale(scale)).collect();
    let kernel = plans.kernel_spectrum(&b_scaled, bshape);

    // Every block of `a` whose full-convolution range meets the kept span.
    let counts: Vec<usize> = (0..rank)
        .map(|d| ashape[d].div_ceil(blocks[d].block))
        .collect();
    let block_list: Vec<Vec<usize>> = MultiIndex::new(&counts)
        .map(|idx| {
            (0..rank)
                .map(|d| idx[d] * blocks[d].block)
                .collect::<Vec<_>>()
        })
        .filter(|start: &Vec<usize>| {
            (0..rank).all(|d| {
                let extent = blocks[d].block.min(ashape[d] - start[d]);
                let first = start[d] as isize;
                let last = (start[d] + extent + bshape[d] - 2) as isize;
                first < spans[d].start + spans[d].len as isize && last >= spans[d].start
            })
        })
        .collect();

    // Blocks are at least as long as the kernel, so a block's output range
    // (block + n − 1) never reaches the block after next: blocks whose
    // indices have the same parity in every dimension write disjoint parts
    // of `out` and run in parallel, one parity class after another.
    let target = SharedMut(out.as_mut_ptr());
    let parities: Vec<usize> = counts.iter().map(|&c| c.min(2)).collect();
    let alone = block_list.len() == 1;
    for parity in MultiIndex::new(&parities) {
        block_list
            .par_iter()
            .filter(|start| (0..rank).all(|d| (start[d] / blocks[d].block) % 2 == parity[d]))
            .for_each(|start| {
                let extent: Vec<usize> = (0..rank)
                    .map(|d| blocks[d].block.min(ashape[d] - start[d]))
                    .collect();
                let mut spec = plans.forward(a, ashape, start, &extent, false);
                if rank == 1 {
                    spec.iter_mut()
                        .zip(kernel.iter())
                        .for_each(|(s, k)| *s = *s * *k);
                } else {
                    plans.convolve_first_axis(&mut spec, &kernel);
                }
                // SAFETY: blocks running at the same time write disjoint
                // elements of `out` (see above), which outlives the loop.
                unsafe { plans.inverse_add(spec, spans, start, target, total, alone) };
            });
    }
    out
}

/// Forward and inverse complex transforms of one length.
type FftPair<F> = (Arc<dyn Fft<F>>, Arc<dyn Fft<F>>);

/// The transforms of one FFT shape.
struct Plans<F: FftFloat, T: FftElem<F>> {
    /// FFT length per dimension.
    lens: Vec<usize>,
    /// Spectrum shape: `lens` with the last length replaced by the spectrum length.
    spec: Vec<usize>,
    last: LastAxis<F>,
    /// Forward and inverse complex transforms along each leading dimension.
    lead: Vec<FftPair<F>>,
    _elem: std::marker::PhantomData<T>,
}

/// Columns gathered per tile for transforms along a leading dimension.
const TILE: usize = 64;

impl<F: FftFloat, T: FftElem<F>> Plans<F, T> {
    fn new(lens: &[usize]) -> Self {
        let rank = lens.len();
        let mut planner = FftPlanner::<F>::new();
        let lead = lens[..rank - 1]
            .iter()
            .map(|&l| (planner.plan_fft_forward(l), planner.plan_fft_inverse(l)))
            .collect();
        let mut spec = lens.to_vec();
        spec[rank - 1] = T::spectrum_len(lens[rank - 1]);
        Plans {
            lens: lens.to_vec(),
            spec,
            last: T::plan(lens[rank - 1]),
            lead,
            _elem: std::marker::PhantomData,
        }
    }

    /// Spectrum of the part `start .. start + extent` of `x` (shape `shape`),
    /// zero-padded to the FFT lengths; along dimension 0 only when
    /// `first_axis` is set (see [`Plans::convolve_first_axis`]).
    fn forward(
        &self,
        x: &[T],
        shape: &[usize],
        start: &[usize],
        extent: &[usize],
        first_axis: bool,
    ) -> Pooled<F> {
        let rank = shape.len();
        let (w, h) = (self.lens[rank - 1], self.spec[rank - 1]);
        let mut spec = Pooled::any(self.spec.iter().product());
        let scratch_len = self.last.scratch_len();
        // Last axis: rows that hold data are transformed, the others zeroed
        // (so every element is written and the buffer needs no clearing).
        spec.par_chunks_mut(h)
            .enumerate()
            .map(|(r, target)| {
                let (mut rest, mut src, mut stride) = (r, 0, 1);
                for d in (0..rank - 1).rev() {
                    let j = rest % self.lens[d];
                    rest /= self.lens[d];
                    if j >= extent[d] {
                        return (None, target);
                    }
                    src += (start[d] + j) * stride;
                    stride *= shape[d];
                }
                (Some(src), target)
            })
            .for_each_init(
                || (vec![T::zero(); w], vec![Complex::zero(); scratch_len]),
                |(row, scratch), (src, target)| match src {
                    None => target.fill(Complex::zero()),
                    Some(src) => {
                        let x_row =
                            &x[src * shape[rank - 1] + start[rank - 1]..][..extent[rank - 1]];
                        row[..x_row.len()].copy_from_slice(x_row);
                        row[x_row.len()..].fill(T::zero());
                        T::forward(&self.last, row, target, scratch);
                    }
                },
            );
        let stop = if first_axis { 0 } else { 1 };
        for d in (stop..rank - 1).rev() {
            self.along(&mut spec, d, false);
        }
        spec
    }

    /// Inverse transform of `spec` (already inverted along dimension 0),
    /// added into (or, when the block is `alone`, stored in) the kept
    /// part of the output (`total` elements at `out`, shape of `spans`) for a
    /// block starting at `start`. Only rows that land in the output are
    /// transformed back along the last dimension.
    ///
    /// # Safety
    /// `out` must point to `total` elements that no other thread touches in
    /// the positions this block writes.
    unsafe fn inverse_add(
        &self,
        mut spec: Pooled<F>,
        spans: &[Span],
        start: &[usize],
        out: SharedMut<T>,
        total: usize,
        alone: bool,
    ) {
        let rank = self.lens.len();
        for d in 1..rank - 1 {
            self.along(&mut spec, d, true);
        }
        let h = self.spec[rank - 1];
        let pos: Vec<Vec<(usize, usize)>> = (0..rank)
            .map(|d| self.positions(spans[d], start[d], d).collect())
            .collect();
        // (output row, spectrum row) for every kept row.
        let counts: Vec<usize> = pos[..rank - 1].iter().map(Vec::len).collect();
        let rows: Vec<(usize, usize)> = MultiIndex::new(&counts)
            .map(|idx| {
                let (mut o_row, mut p_row) = (0, 0);
                for d in 0..rank - 1 {
                    let (o, p) = pos[d][idx[d]];
                    o_row = o_row * spans[d].len + o;
                    p_row = p_row * self.lens[d] + p;
                }
                (o_row, p_row)
            })
            .collect();
        let width = spans[rank - 1].len;
        // Along the last dimension the kept positions are one contiguous run.
        let (o0, p0, run) = match pos[rank - 1].first() {
            Some(&(o, p)) => (o, p, pos[rank - 1].len()),
            None => return,
        };
        let scratch_len = self.last.scratch_len();
        let spec_rows = SharedMut(spec.as_mut_ptr());
        rows.par_iter().for_each_init(
            || {
                (
                    vec![T::zero(); self.lens[rank - 1]],
                    vec![Complex::zero(); scratch_len],
                )
            },
            |(row, scratch), &(o_row, p_row)| {
                debug_assert!((o_row + 1) * width <= total);
                // SAFETY: each spectrum row and each output row appears in
                // one task only (distinct kept indices map to distinct
                // positions); the caller guarantees the output rows.
                let (s, dst) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(spec_rows.ptr().add(p_row * h), h),
                        std::slice::from_raw_parts_mut(out.ptr().add(o_row * width), width),
                    )
                };
                T::inverse(&self.last, s, row, scratch);
                if alone {
                    // The only block: plain stores, no read of the output.
                    dst[o0..o0 + run].copy_from_slice(&row[p0..p0 + run]);
                } else {
                    for (d, &r) in dst[o0..o0 + run].iter_mut().zip(&row[p0..p0 + run]) {
                        *d = *d + r;
                    }
                }
            },
        );
    }

    /// Pairs (kept index, position in the circular block result) along
    /// dimension `d` for a block starting at signal index `start`.
    fn positions(
        &self,
        span: Span,
        start: usize,
        d: usize,
    ) -> impl Iterator<Item = (usize, usize)> + '_ {
        let l = self.lens[d] as isize;
        // A lone block's length leaves the kept span free of wrap-around, and
        // a block among several has no wrap-around at all (l ≥ block + n − 1),
        // so the position is the offset itself when it lies in 0..l.
        (0..span.len).filter_map(move |o| {
            let j = span.start + o as isize - start as isize;
            (0..l).contains(&j).then_some((o, j as usize))
        })
    }

    /// In-place complex FFT of `spec` along leading dimension `d`.
    fn along(&self, spec: &mut [Complex<F>], d: usize, inverse: bool) {
        let plan = if inverse {
            &self.lead[d].1
        } else {
            &self.lead[d].0
        };
        self.tiles(spec, d, true, |buf, _, _, scratch| {
            plan.process_with_scratch(buf, scratch)
        });
    }

    /// The full spectrum of the kernel `b` (zero-padded from `shape`). For
    /// rank ≥ 2 it is stored column by column along dimension 0 (element
    /// `(t, c)` at `c · lens[0] + t`, with `c` the flat index of the other
    /// dimensions), the order in which [`Plans::convolve_first_axis`] reads it.
    fn kernel_spectrum(&self, b: &[T], shape: &[usize]) -> Pooled<F> {
        let zero = vec![0; shape.len()];
        if shape.len() == 1 {
            return self.forward(b, shape, &zero, shape, true);
        }
        let mut spec = self.forward(b, shape, &zero, shape, false);
        let n = self.spec[0];
        // Every element is written below: tiles cover all columns.
        let mut columns = Pooled::any(spec.len());
        let dst = SharedMut(columns.as_mut_ptr());
        let fwd = &self.lead[0].0;
        self.tiles(&mut spec, 0, false, |buf, _, c0, scratch| {
            fwd.process_with_scratch(buf, scratch);
            // SAFETY: columns c0 .. c0 + cols of `columns` belong to this
            // tile alone; `columns` outlives the parallel loop.
            unsafe {
                std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.ptr().add(c0 * n), buf.len())
            };
        });
        columns
    }

    /// The spectrum product along dimension 0, fused: per tile of columns,
    /// forward FFT, multiply by the kernel (from [`Plans::kernel_spectrum`]),
    /// inverse FFT, while the tile is in cache. `spec` must be transformed
    /// along every other dimension already.
    fn convolve_first_axis(&self, spec: &mut [Complex<F>], kernel: &[Complex<F>]) {
        let (fwd, inv) = &self.lead[0];
        let n = self.spec[0];
        self.tiles(spec, 0, true, |buf, _, c0, scratch| {
            fwd.process_with_scratch(buf, scratch);
            for (v, k) in buf.iter_mut().zip(&kernel[c0 * n..]) {
                *v = *v * *k;
            }
            inv.process_with_scratch(buf, scratch);
        });
    }

    /// Runs `f(lines, outer index, first column, scratch)` on tiles of about
    /// [`TILE`] columns along leading dimension `d`, gathered into contiguous
    /// lines of length `spec[d]` and, when `scatter` is set, written back
    /// afterwards; in parallel.
    fn tiles(
        &self,
        spec: &mut [Complex<F>],
        d: usize,
        scatter: bool,
        f: impl Fn(&mut [Complex<F>], usize, usize, &mut [Complex<F>]) + Sync,
    ) {
        let n = self.spec[d];
        let outer: usize = self.spec[..d].iter().product();
        let inner: usize = self.spec[d + 1..].iter().product();
        let scratch_len = self.lead[d]
            .0
            .get_inplace_scratch_len()
            .max(self.lead[d].1.get_inplace_scratch_len());
        // Equal tiles, a multiple of the thread count when there are few.
        let threads = rayon::current_num_threads();
        let mut tiles = inner.div_ceil(TILE);
        if outer * tiles < 8 * threads {
            tiles = tiles.div_ceil(threads) * threads;
        }
        let tiles = tiles.min(inner);
        let width = inner.div_ceil(tiles);
        let tiles = inner.div_ceil(width);
        let base = SharedMut(spec.as_mut_ptr());
        (0..outer * tiles).into_par_iter().for_each_init(
            || {
                (
                    vec![Complex::zero(); width * n],
                    vec![Complex::zero(); scratch_len],
                )
            },
            |(buf, scratch), task| {
                let (o, c0) = (task / tiles, (task % tiles) * width);
                let cols = width.min(inner - c0);
                // SAFETY: task (o, c0) reads and writes only the elements
                // (o, t, c0 .. c0 + cols) for t < n; tasks are disjoint and
                // `spec` outlives the parallel loop.
                // Rows are moved in groups of ROWS so that each line of
                // `buf` receives ROWS consecutive values per visit.
                const ROWS: usize = 8;
                let line = |t: usize| unsafe { base.ptr().add((o * n + t) * inner + c0) };
                for t0 in (0..n).step_by(ROWS) {
                    let rows = ROWS.min(n - t0);
                    for c in 0..cols {
                        for r in 0..rows {
                            // SAFETY: element (o, t0 + r, c0 + c) of this task's tile.
                            buf[c * n + t0 + r] = unsafe { *line(t0 + r).add(c) };
                        }
                    }
                }
                f(&mut buf[..cols * n], o, c0, scratch);
                if !scatter {
                    return;
                }
                for t0 in (0..n).step_by(ROWS) {
                    let rows = ROWS.min(n - t0);
                    for c in 0..cols {
                        for r in 0..rows {
                            // SAFETY: as above.
                            unsafe { *line(t0 + r).add(c) = buf[c * n + t0 + r] };
                        }
                    }
                }
            },
        );
    }
}

/// A pointer shared by parallel tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn ptr(self) -> *mut T {
        self.0
    }
}

// SAFETY: used only where each task touches a disjoint set of elements.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// Row-major iteration over all multi-indices below `counts`.
pub(crate) struct MultiIndex {
    counts: Vec<usize>,
    next: Option<Vec<usize>>,
}

impl MultiIndex {
    pub(crate) fn new(counts: &[usize]) -> Self {
        let next = (!counts.contains(&0)).then(|| vec![0; counts.len()]);
        MultiIndex {
            counts: counts.to_vec(),
            next,
        }
    }
}

impl Iterator for MultiIndex {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        let cur = self.next.take()?;
        let mut nxt = cur.clone();
        for d in (0..nxt.len()).rev() {
            nxt[d] += 1;
            if nxt[d] < self.counts[d] {
                self.next = Some(nxt);
                return Some(cur);
            }
            nxt[d] = 0;
        }
        Some(cur)
    }
}
