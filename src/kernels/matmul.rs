//! Float32 matrix products on slices with arbitrary strides, through the
//! `gemm` crate: the one place that calls it.

use gemm::Parallelism;

/// Threads for one GEMM: all of them when there are fewer tasks than
/// threads, else one (the tasks themselves run in parallel).
pub(crate) fn inner_parallelism(tasks: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if tasks < threads {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// A read-only matrix operand: a slice with its row and column strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub(crate) fn cols(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// The same data read as the transposed matrix.
    fn transposed(self) -> Self {
        Mat {
            data: self.data,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether element `(rows − 1, cols − 1)` is inside the slice.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst (m × n, row-major) = [dst +] lhs (m × k) · rhs (k × n)`, with
/// `m = dst.len() / n` and `k` read from `lhs`'s slice length.
pub(crate) fn matmul(
    dst: &mut [f32],
    n: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) {
    let m = dst.len() / n;
    let k = lhs.data.len() / m;
    assert!(
        dst.len() == m * n && lhs.holds(m, k) && rhs.holds(k, n),
        "matmul operands out of bounds"
    );
    // `gemm` packs `lhs` in panels of many rows: a product with few rows
    // and many columns runs faster transposed, `dstᵀ = rhsᵀ · lhsᵀ`.
    let swap = m < n;
    let (m, n, dst_cs, dst_rs, a, b) = if swap {
        (n, m, n, 1, rhs.transposed(), lhs.transposed())
    } else {
        (m, n, 1, n, lhs, rhs)
    };
    // SAFETY: the assertion above keeps every index of the three operands
    // inside their slices (transposing swaps sizes and strides together);
    // dst does not alias the inputs (it is `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
