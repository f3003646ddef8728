//! Arrays whose element type is known only at run time (read from files),
//! with NumPy's type promotion for mixed inputs.

use super::{ConvElement, Method, Mode, conv_with, correlate};
use crate::error::Result;
use ndarray::ArrayD;
use num_complex::Complex;
use std::fmt;

/// Element types of a [`DynArray`], in NumPy's naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    I32,
    I64,
    F32,
    F64,
    C64,
    C128,
}

impl DType {
    /// The type both operands are converted to, as NumPy promotes them
    /// (`int32 + float32 → float64`, `float32 + complex64 → complex64`, …).
    pub fn promote(self, other: DType) -> DType {
        use DType::*;
        let (lo, hi) = if self.order() <= other.order() {
            (self, other)
        } else {
            (other, self)
        };
        match (lo, hi) {
            (x, y) if x == y => x,
            (I32, I64) => I64,
            (I32 | I64, F32) => F64,
            (I32 | I64 | F32, F64) => F64,
            (F32, C64) => C64,
            (I32 | I64 | F64, C64) => C128,
            (_, C128) => C128,
            _ => unreachable!("pairs are ordered"),
        }
    }

    fn order(self) -> u8 {
        self as u8
    }

    /// NumPy's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An n-d array of one of the supported element types.
#[derive(Clone, Debug, PartialEq)]
pub enum DynArray {
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    C64(ArrayD<Complex<f32>>),
    C128(ArrayD<Complex<f64>>),
}

/// Applies `$body` to the array inside any variant, binding it to `$x`.
macro_rules! each {
    ($v:expr, $x:ident => $body:expr) => {
        match $v {
            DynArray::I32($x) => $body,
            DynArray::I64($x) => $body,
            DynArray::F32($x) => $body,
            DynArray::F64($x) => $body,
            DynArray::C64($x) => $body,
            DynArray::C128($x) => $body,
        }
    };
}

impl DynArray {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            DynArray::I32(_) => DType::I32,
            DynArray::I64(_) => DType::I64,
            DynArray::F32(_) => DType::F32,
            DynArray::F64(_) => DType::F64,
            DynArray::C64(_) => DType::C64,
            DynArray::C128(_) => DType::C128,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        each!(self, x => x.shape())
    }

    /// The same values as `to` (a promotion: integers convert exactly to
    /// `int64`; to floats as NumPy's `astype`).
    pub fn cast(self, to: DType) -> DynArray {
        if self.dtype() == to {
            return self;
        }
        match to {
            DType::I32 => unreachable!("nothing promotes to int32"),
            DType::I64 => match self {
                DynArray::I32(x) => DynArray::I64(x.mapv(i64::from)),
                _ => unreachable!("only int32 promotes to int64"),
            },
            DType::F32 => unreachable!("nothing else promotes to float32"),
            DType::F64 => DynArray::F64(match self {
                DynArray::I32(x) => x.mapv(f64::from),
                DynArray::I64(x) => x.mapv(|v| v as f64),
                DynArray::F32(x) => x.mapv(f64::from),
                _ => unreachable!("only real types promote to float64"),
            }),
            DType::C64 => match self {
                DynArray::F32(x) => DynArray::C64(x.mapv(|v| Complex::new(v, 0.0))),
                _ => unreachable!("only float32 promotes to complex64"),
            },
            DType::C128 => DynArray::C128(self.into_c128()),
        }
    }

    fn into_c128(self) -> ArrayD<Complex<f64>> {
        match self {
            DynArray::I32(x) => x.mapv(|v| Complex::new(v as f64, 0.0)),
            DynArray::I64(x) => x.mapv(|v| Complex::new(v as f64, 0.0)),
            DynArray::F32(x) => x.mapv(|v| Complex::new(v as f64, 0.0)),
            DynArray::F64(x) => x.mapv(|v| Complex::new(v, 0.0)),
            DynArray::C64(x) => x.mapv(|v| Complex::new(v.re as f64, v.im as f64)),
            DynArray::C128(x) => x,
        }
    }
}

/// [`conv_with`] on arrays of any supported types; mixed inputs are
/// promoted first ([`DType::promote`]), so integers in give integers out.
pub fn conv_dyn(a: DynArray, b: DynArray, mode: Mode, method: Method) -> Result<DynArray> {
    dyn_op(a, b, mode, method, false)
}

/// [`correlate`] on arrays of any supported types, promoted as [`conv_dyn`].
pub fn correlate_dyn(a: DynArray, b: DynArray, mode: Mode, method: Method) -> Result<DynArray> {
    dyn_op(a, b, mode, method, true)
}

fn dyn_op(a: DynArray, b: DynArray, mode: Mode, method: Method, flip: bool) -> Result<DynArray> {
    let to = a.dtype().promote(b.dtype());
    Ok(match (a.cast(to), b.cast(to)) {
        (DynArray::I32(a), DynArray::I32(b)) => DynArray::I32(go(&a, &b, mode, method, flip)?),
        (DynArray::I64(a), DynArray::I64(b)) => DynArray::I64(go(&a, &b, mode, method, flip)?),
        (DynArray::F32(a), DynArray::F32(b)) => DynArray::F32(go(&a, &b, mode, method, flip)?),
        (DynArray::F64(a), DynArray::F64(b)) => DynArray::F64(go(&a, &b, mode, method, flip)?),
        (DynArray::C64(a), DynArray::C64(b)) => DynArray::C64(go(&a, &b, mode, method, flip)?),
        (DynArray::C128(a), DynArray::C128(b)) => DynArray::C128(go(&a, &b, mode, method, flip)?),
        _ => unreachable!("both operands were cast to the promoted type"),
    })
}

fn go<T: ConvElement>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    mode: Mode,
    method: Method,
    flip: bool,
) -> Result<ArrayD<T>> {
    if flip {
        correlate(&a.view(), &b.view(), mode, method)
    } else {
        conv_with(&a.view(), &b.view(), mode, method)
    }
}

#[cfg(test)]
mod tests {
    use super::DType::*;

    #[test]
    fn promotion_matches_numpy() {
        assert_eq!(I32.promote(I32), I32);
        assert_eq!(I32.promote(I64), I64);
        assert_eq!(I32.promote(F32), F64);
        assert_eq!(F32.promote(I64), F64);
        assert_eq!(F32.promote(F32), F32);
        assert_eq!(F64.promote(F32), F64);
        assert_eq!(C64.promote(F32), C64);
        assert_eq!(C64.promote(F64), C128);
        assert_eq!(I32.promote(C64), C128);
        assert_eq!(C128.promote(I32), C128);
    }
}
