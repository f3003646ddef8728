//! MATLAB-compatible convolution of n-dimensional arrays.
//!
//! [`conv`] is MATLAB's `convn` (and so `conv` for vectors and `conv2` for
//! matrices): the true convolution, kernel flipped, in modes
//! [`Mode::Full`], [`Mode::Same`] and [`Mode::Valid`]. [`correlate`] is the
//! unflipped form (`filter2`, what CNN layers compute) and [`conv2_sep`] is
//! `conv2(u, v, A)`.
//!
//! Arrays of different rank are aligned by appending trailing singleton
//! dimensions, as MATLAB does; the result has the larger rank (at least 1).
//!
//! Integer inputs give exact integer results: sums are formed in an integer
//! type wide enough for the worst case of the given data, and a result that
//! does not fit the output type is an [`Error::Overflow`], never a wrapped
//! value. Floating-point inputs may use the FFT ([`Method`]).

mod direct;
mod dynamic;
mod fft;
mod mode;

pub use dynamic::{DType, DynArray, conv_dyn, correlate_dyn};
pub use mode::{Method, Mode};

use crate::error::{Error, Result};
use crate::simd::Isa;
use mode::Span;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use num_complex::Complex;
use num_traits::Zero;
use std::ops::{Add, Mul};

/// Arithmetic the convolution kernels need: a ring with zero, shareable
/// across threads.
pub trait Scalar:
    Copy + Send + Sync + Zero + Add<Output = Self> + Mul<Output = Self> + 'static
{
}
impl<T: Copy + Send + Sync + Zero + Add<Output = T> + Mul<Output = T> + 'static> Scalar for T {}

/// Element types [`conv`] accepts: `i32`, `i64`, `f32`, `f64`,
/// `Complex<f32>` and `Complex<f64>`.
pub trait ConvElement: Scalar + private::ConvImpl {}

mod private {
    use super::{Method, Result, Span};
    /// The per-type algorithm choice (sealed: not implementable outside).
    pub trait ConvImpl: Sized {
        fn conv_flat(
            a: Flat<'_, Self>,
            b: Flat<'_, Self>,
            spans: &[Span],
            method: Method,
        ) -> Result<Vec<Self>>;
    }

    /// A contiguous row-major array: data and shape.
    #[derive(Clone, Copy)]
    pub struct Flat<'a, T> {
        pub data: &'a [T],
        pub shape: &'a [usize],
    }
}
use private::Flat;

/// Full convolution of `a` and `b` cut to `mode`, by the best method
/// (MATLAB `convn(a, b, mode)`).
///
/// ```
/// use gconv::signal::{conv, Mode};
/// use ndarray::arr1;
/// let a = arr1(&[1i64, 2, 3]).into_dyn();
/// let b = arr1(&[0i64, 1, 2]).into_dyn();
/// let c = conv(&a.view(), &b.view(), Mode::Full).unwrap();
/// assert_eq!(c.as_slice().unwrap(), &[0, 1, 4, 7, 6]);
/// ```
pub fn conv<T: ConvElement>(a: &ArrayViewD<T>, b: &ArrayViewD<T>, mode: Mode) -> Result<ArrayD<T>> {
    conv_with(a, b, mode, Method::Auto)
}

/// [`conv`] with an explicit [`Method`]. `Method::Fft` on integers is an
/// error: the FFT would not be exact.
pub fn conv_with<T: ConvElement>(
    a: &ArrayViewD<T>,
    b: &ArrayViewD<T>,
    mode: Mode,
    method: Method,
) -> Result<ArrayD<T>> {
    let (ashape, bshape, spans) = operands(a.shape(), b.shape(), mode);
    let out_shape: Vec<usize> = spans.iter().map(|s| s.len).collect();
    let a_std = a.as_standard_layout();
    let b_std = b.as_standard_layout();
    let a_flat = Flat {
        data: a_std.as_slice().expect("standard layout"),
        shape: &ashape,
    };
    let b_flat = Flat {
        data: b_std.as_slice().expect("standard layout"),
        shape: &bshape,
    };
    // Full convolution is commutative and the kept span is given in full
    // coordinates, so the smaller operand can always act as the kernel.
    let (big, small) = if a_flat.data.len() >= b_flat.data.len() {
        (a_flat, b_flat)
    } else {
        (b_flat, a_flat)
    };
    let data = <T as private::ConvImpl>::conv_flat(big, small, &spans, method)?;
    Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), data).expect("output length matches its shape"))
}

/// Correlation: [`conv_with`] of `a` with `b` rotated 180° in every
/// dimension (MATLAB `filter2(b, a, mode)`; no complex conjugation). This is
/// what convolutional layers compute.
pub fn correlate<T: ConvElement>(
    a: &ArrayViewD<T>,
    b: &ArrayViewD<T>,
    mode: Mode,
    method: Method,
) -> Result<ArrayD<T>> {
    let mut flipped = b.to_owned();
    for axis in 0..flipped.ndim() {
        flipped.invert_axis(ndarray::Axis(axis));
    }
    conv_with(a, &flipped.view(), mode, method)
}

/// MATLAB `conv2(u, v, A, mode)`: convolves the columns of the matrix `a`
/// (shape `[rows, cols]`) with the vector `u`, then its rows with the vector
/// `v`. Equals `conv2(A, u(:) * v(:).', mode)` at a fraction of the cost.
pub fn conv2_sep<T: ConvElement>(
    u: &ArrayViewD<T>,
    v: &ArrayViewD<T>,
    a: &ArrayViewD<T>,
    mode: Mode,
    method: Method,
) -> Result<ArrayD<T>> {
    if a.ndim() > 2 {
        return Err(Error::invalid(format!(
            "conv2(u, v, A) needs a matrix A, got shape {:?}",
            a.shape()
        )));
    }
    let as_vector = |x: &ArrayViewD<T>, name: &str, shape: [usize; 2]| -> Result<ArrayD<T>> {
        if x.shape().iter().filter(|&&d| d > 1).count() > 1 {
            return Err(Error::invalid(format!(
                "conv2(u, v, A) needs {name} to be a vector, got shape {:?}",
                x.shape()
            )));
        }
        let values: Vec<T> = x.iter().copied().collect();
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("vector length"))
    };
    let column = as_vector(u, "u", [u.len(), 1])?;
    let row = as_vector(v, "v", [1, v.len()])?;
    let a2 = a
        .to_shape(IxDyn(&aligned(a.shape(), 2)))
        .expect("matrix reshape");
    // Each pass keeps its own dimension's span, so the two passes compose.
    let cols = conv_with(&a2.view(), &column.view(), mode, method)?;
    conv_with(&cols.view(), &row.view(), mode, method)
}

/// Both shapes aligned to one rank (at least 1), and the span of the full
/// result that `mode` keeps in each dimension.
fn operands(a: &[usize], b: &[usize], mode: Mode) -> (Vec<usize>, Vec<usize>, Vec<Span>) {
    let rank = a.len().max(b.len()).max(1);
    let (a, b) = (aligned(a, rank), aligned(b, rank));
    let spans = (0..rank).map(|d| mode.span(a[d], b[d])).collect();
    (a, b, spans)
}

/// `shape` with trailing singleton dimensions appended up to `rank`.
fn aligned(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s.resize(rank.max(s.len()), 1);
    s
}

/// Number of multiply-adds of the direct method.
fn direct_work(a: &[usize], b: &[usize], spans: &[Span]) -> f64 {
    (0..a.len())
        .map(|d| {
            // Σ over kept outputs of the kernel taps that meet the signal.
            let (m, n) = (a[d] as isize, b[d] as isize);
            (0..spans[d].len as isize)
                .map(|o| {
                    let i = spans[d].start + o;
                    ((i + 1).min(n) - (i - m + 1).max(0)).max(0) as f64
                })
                .sum::<f64>()
        })
        .product()
}

/// The method [`Method::Auto`] runs for real floating-point arrays of these
/// shapes (integers always use [`Method::Direct`]).
pub fn auto_method(a: &[usize], b: &[usize], mode: Mode) -> Method {
    let (a, b, spans) = operands(a, b, mode);
    // As in `conv_with`: the larger operand is the signal.
    let (big, small) = if a.iter().product::<usize>() >= b.iter().product::<usize>() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if prefer_fft(big, small, &spans, true) {
        Method::Fft
    } else {
        Method::Direct
    }
}

/// Multiply-adds of the direct method for these shapes: the work measure
/// behind GFLOP/s figures (2 flops each).
pub fn direct_macs(a: &[usize], b: &[usize], mode: Mode) -> f64 {
    let (a, b, spans) = operands(a, b, mode);
    direct_work(&a, &b, &spans)
}

/// Cost-model choice between direct and FFT for floating-point data:
/// one multiply-add of the direct method costs about as much as
/// `DIRECT_VS_FFT` units of FFT work (points × log2 points), as measured
/// with `gconv bench signal` on the project machine (2 threads, AVX-512).
fn prefer_fft(a: &[usize], b: &[usize], spans: &[Span], real: bool) -> bool {
    const DIRECT_VS_FFT: f64 = 0.17;
    let rank = a.len();
    let blocks: Vec<fft::Blocking> = (0..rank)
        .map(|d| fft::Blocking::choose(a[d], b[d], spans[d], real && d == rank - 1))
        .collect();
    let mut fft_work = fft::Blocking::cost(&blocks, a);
    if real {
        fft_work /= 2.0;
    }
    fft_work < DIRECT_VS_FFT * direct_work(a, b, spans)
}

macro_rules! float_element {
    ($t:ty, $f:ty, $real:expr) => {
        impl ConvElement for $t {}
        impl private::ConvImpl for $t {
            fn conv_flat(
                a: Flat<'_, $t>,
                b: Flat<'_, $t>,
                spans: &[Span],
                method: Method,
            ) -> Result<Vec<$t>> {
                let use_fft = match method {
                    Method::Direct => false,
                    Method::Fft => true,
                    Method::Auto => prefer_fft(a.shape, b.shape, spans, $real),
                };
                Ok(if use_fft {
                    fft::fft::<$f, $t>(a.data, a.shape, b.data, b.shape, spans)
                } else {
                    direct::direct(a.data, a.shape, b.data, b.shape, spans, Isa::best())
                })
            }
        }
    };
}
float_element!(f32, f32, true);
float_element!(f64, f64, true);
float_element!(Complex<f32>, f32, false);
float_element!(Complex<f64>, f64, false);

/// Exact integer convolution: sums in the narrowest of `i32`, `i64`, `i128`
/// that cannot overflow for this data (|sum| ≤ max|a| · max|b| · min(len a,
/// len b)), then a checked conversion to the output type.
fn exact_int<T>(a: Flat<'_, T>, b: Flat<'_, T>, spans: &[Span], method: Method) -> Result<Vec<T>>
where
    T: Scalar + Into<i128> + TryFrom<i128> + std::fmt::Display,
{
    if method == Method::Fft {
        return Err(Error::invalid(
            "the FFT method is not exact for integer arrays: use --method direct (or auto), or convert the inputs to float",
        ));
    }
    let max_abs = |x: &[T]| {
        x.iter()
            .map(|&v| v.into().unsigned_abs())
            .max()
            .unwrap_or(0)
    };
    let terms = a.data.len().min(b.data.len()) as u128;
    let bound = max_abs(a.data)
        .checked_mul(max_abs(b.data))
        .and_then(|p| p.checked_mul(terms));
    let isa = Isa::best();
    let wide: Vec<i128> = match bound {
        Some(bound) if bound <= i32::MAX as u128 => run_as::<T, i32>(a, b, spans, isa),
        Some(bound) if bound <= i64::MAX as u128 => run_as::<T, i64>(a, b, spans, isa),
        // Beyond i128 only with > 2^62 terms of full-range i64 data: not
        // reachable with arrays that fit in memory.
        _ => run_as::<T, i128>(a, b, spans, isa),
    };
    wide.into_iter()
        .map(|v| {
            T::try_from(v).map_err(|_| {
                Error::Overflow(format!(
                    "a convolution sum is {v}, outside the range of the {}-bit integer output; convert the inputs to a wider type",
                    std::mem::size_of::<T>() * 8
                ))
            })
        })
        .collect()
}

/// Direct convolution of integer data computed in the accumulator type `A`.
fn run_as<T, A>(a: Flat<'_, T>, b: Flat<'_, T>, spans: &[Span], isa: Isa) -> Vec<i128>
where
    T: Scalar + Into<i128>,
    A: Scalar + TryFrom<i128> + Into<i128>,
    <A as TryFrom<i128>>::Error: std::fmt::Debug,
{
    let widen = |x: &[T]| -> Vec<A> {
        x.iter()
            .map(|&v| A::try_from(v.into()).expect("value fits the accumulator"))
            .collect()
    };
    direct::direct(&widen(a.data), a.shape, &widen(b.data), b.shape, spans, isa)
        .into_iter()
        .map(Into::into)
        .collect()
}

macro_rules! int_element {
    ($t:ty) => {
        impl ConvElement for $t {}
        impl private::ConvImpl for $t {
            fn conv_flat(
                a: Flat<'_, $t>,
                b: Flat<'_, $t>,
                spans: &[Span],
                method: Method,
            ) -> Result<Vec<$t>> {
                exact_int(a, b, spans, method)
            }
        }
    };
}
int_element!(i32);
int_element!(i64);

#[cfg(test)]
mod tests;
