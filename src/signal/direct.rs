//! Direct convolution: every output is the sum of its products, in a fixed
//! order (kernel index ascending), so results do not depend on the thread
//! count or the instruction set.

use super::Scalar;
use super::mode::Span;
use crate::simd::Isa;
use rayon::prelude::*;

/// Products summed per parallel task; smaller jobs stay on one thread.
const WORK_PER_TASK: usize = 1 << 17;

/// `window(full(a, b))`: the part of the full n-d convolution of `a`
/// (row-major, shape `ashape`) and `b` (shape `bshape`, same rank ≥ 1) kept by
/// `spans` (one per dimension). Returns the kept values, row-major, with shape
/// `spans[d].len`.
pub(crate) fn direct<T: Scalar>(
    a: &[T],
    ashape: &[usize],
    b: &[T],
    bshape: &[usize],
    spans: &[Span],
    isa: Isa,
) -> Vec<T> {
    let rank = ashape.len();
    debug_assert!(rank >= 1 && bshape.len() == rank && spans.len() == rank);
    let width = spans[rank - 1].len;
    let total: usize = spans.iter().map(|s| s.len).product();
    let mut out = vec![T::zero(); total];
    if total == 0 || a.is_empty() || b.is_empty() {
        return out;
    }
    let rows = total / width;
    let lead = Lead::new(&ashape[..rank - 1], &bshape[..rank - 1], &spans[..rank - 1]);
    let (m_last, n_last) = (ashape[rank - 1], bshape[rank - 1]);
    let start_last = spans[rank - 1].start;

    // Split long rows into segments when there are too few rows to share.
    let threads = rayon::current_num_threads();
    let per_row = width * n_last.min(ashape[rank - 1]) * lead.kernel_rows;
    let want_tasks = (rows * per_row / WORK_PER_TASK).clamp(1, 8 * threads);
    let seg = if rows >= want_tasks {
        width
    } else {
        width.div_ceil(want_tasks.div_ceil(rows)).max(256)
    };
    let rows_per_task = (WORK_PER_TASK / (per_row.max(1))).max(1);

    // Output row `q`, segment `i` of it.
    let job = |q: usize, i: usize, part: &mut [T]| {
        let mut scratch = vec![0isize; 2 * (rank - 1)];
        let start = start_last + (i * seg) as isize;
        lead.each_pair(q, &mut scratch, |a_row, b_row| {
            let a_row = &a[a_row * m_last..][..m_last];
            let b_row = &b[b_row * n_last..][..n_last];
            row_taps_isa(isa, part, a_row, b_row, start);
        });
    };
    out.par_chunks_mut(width)
        .with_min_len(rows_per_task)
        .enumerate()
        .for_each(|(q, row)| {
            if seg == width {
                job(q, 0, row);
            } else {
                row.par_chunks_mut(seg)
                    .enumerate()
                    .for_each(|(i, part)| job(q, i, part));
            }
        });
    out
}

/// The leading (all but last) dimensions: which rows of `a` and `b` meet in
/// a given output row.
struct Lead<'s> {
    a: &'s [usize],
    b: &'s [usize],
    spans: &'s [Span],
    /// Number of kernel rows (product of `b`'s leading lengths).
    kernel_rows: usize,
}

impl<'s> Lead<'s> {
    fn new(a: &'s [usize], b: &'s [usize], spans: &'s [Span]) -> Self {
        Lead {
            a,
            b,
            spans,
            kernel_rows: b.iter().product(),
        }
    }

    /// Calls `f(a_row, b_row)` for every pair of rows (flat row indices of
    /// `a` and `b`) that contributes to output row `q`, kernel rows ascending.
    /// `scratch` has 2 · (rank − 1) elements.
    fn each_pair(&self, q: usize, scratch: &mut [isize], mut f: impl FnMut(usize, usize)) {
        let dims = self.a.len();
        if dims == 0 {
            f(0, 0);
            return;
        }
        // Full index of this output row, and the kernel index per dimension.
        let (full, k) = scratch.split_at_mut(dims);
        let mut rest = q;
        for d in (0..dims).rev() {
            let len = self.spans[d].len;
            full[d] = self.spans[d].start + (rest % len) as isize;
            rest /= len;
        }
        let lo = |d: usize| (full[d] - self.a[d] as isize + 1).max(0);
        let hi = |d: usize| (full[d] + 1).min(self.b[d] as isize);
        for (d, k) in k.iter_mut().enumerate() {
            if lo(d) >= hi(d) {
                return;
            }
            *k = lo(d);
        }
        loop {
            let (mut a_row, mut b_row) = (0usize, 0usize);
            for d in 0..dims {
                a_row = a_row * self.a[d] + (full[d] - k[d]) as usize;
                b_row = b_row * self.b[d] + k[d] as usize;
            }
            f(a_row, b_row);
            // Odometer over the kernel ranges, last dimension fastest.
            let mut d = dims;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                k[d] += 1;
                if k[d] < hi(d) {
                    break;
                }
                k[d] = lo(d);
            }
        }
    }
}

/// One output row segment: `out[o] += Σ_k b[k] · a[start + o − k]` over the
/// `k` with `0 ≤ start + o − k < a.len()`.
#[inline(always)]
fn row_taps<T: Scalar>(out: &mut [T], a: &[T], b: &[T], start: isize) {
    let w = out.len() as isize;
    let m = a.len() as isize;
    for (k, &bk) in b.iter().enumerate() {
        let off = start - k as isize;
        let lo = (-off).clamp(0, w);
        let hi = (m - off).clamp(0, w);
        if lo >= hi {
            continue;
        }
        let src = &a[(lo + off) as usize..(hi + off) as usize];
        for (o, &x) in out[lo as usize..hi as usize].iter_mut().zip(src) {
            *o = *o + bk * x;
        }
    }
}

crate::dispatch!(fn row_taps_isa<T: Scalar>(out: &mut [T], a: &[T], b: &[T], start: isize) => row_taps);

/// The plain reference: one nested loop over outputs and kernel taps, for
/// testing the fast path. Same contract as [`direct`].
#[cfg(test)]
pub(crate) fn reference<T: Scalar>(
    a: &[T],
    ashape: &[usize],
    b: &[T],
    bshape: &[usize],
    spans: &[Span],
) -> Vec<T> {
    let rank = ashape.len();
    let total: usize = spans.iter().map(|s| s.len).product();
    let mut out = vec![T::zero(); total];
    for (q, o) in out.iter_mut().enumerate() {
        let mut full = vec![0isize; rank];
        let mut rest = q;
        for d in (0..rank).rev() {
            full[d] = spans[d].start + (rest % spans[d].len) as isize;
            rest /= spans[d].len;
        }
        for (kb, &bk) in b.iter().enumerate() {
            let (mut rest, mut ia, mut stride, mut inside) = (kb, 0usize, 1usize, true);
            for d in (0..rank).rev() {
                let k = (rest % bshape[d]) as isize;
                rest /= bshape[d];
                let i = full[d] - k;
                inside &= i >= 0 && i < ashape[d] as isize;
                ia += i.max(0) as usize * stride;
                stride *= ashape[d];
            }
            if inside {
                *o = *o + bk * a[ia];
            }
        }
    }
    out
}
