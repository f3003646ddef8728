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
    // SAFETY: the assertion above keeps every index of the three operands
    // inside their slices; dst does not alias the inputs (it is `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
