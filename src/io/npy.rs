//! `.npy` files (NumPy's array format) as [`DynArray`]s.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::signal::DynArray;
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement, WriteNpyExt};
use num_complex::Complex;
use std::io::Cursor;
use std::path::Path;

/// Reads a `.npy` file. `int32`, `int64`, `float32`, `float64`,
/// `complex64` and `complex128` keep their type; narrower integers and
/// booleans become `int32`, `uint32` becomes `int64`, and `uint64` becomes
/// `int64` when every value fits. C and Fortran order are both accepted.
pub fn read_npy(path: &Path) -> Result<DynArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |e: ReadNpyError| Error::format(path, format!("not a valid .npy file: {e}"));

    /// Reads as `T`; `Ok(None)` when the file holds another type.
    fn attempt<T: ReadableElement + Clone>(
        bytes: &[u8],
    ) -> Result<Option<ArrayD<T>>, ReadNpyError> {
        match ArrayD::<T>::read_npy(Cursor::new(bytes)) {
            Ok(a) => Ok(Some(a.as_standard_layout().into_owned())),
            Err(ReadNpyError::WrongDescriptor(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    macro_rules! try_types {
        ($($t:ty => $wrap:expr),* $(,)?) => {
            $(if let Some(a) = attempt::<$t>(&bytes).map_err(fail)? {
                return $wrap(a);
            })*
        };
    }
    try_types!(
        f64 => |a| Ok(DynArray::F64(a)),
        f32 => |a| Ok(DynArray::F32(a)),
        i64 => |a| Ok(DynArray::I64(a)),
        i32 => |a| Ok(DynArray::I32(a)),
        Complex<f64> => |a| Ok(DynArray::C128(a)),
        Complex<f32> => |a| Ok(DynArray::C64(a)),
        i16 => |a: ArrayD<i16>| Ok(DynArray::I32(a.mapv(i32::from))),
        i8 => |a: ArrayD<i8>| Ok(DynArray::I32(a.mapv(i32::from))),
        u16 => |a: ArrayD<u16>| Ok(DynArray::I32(a.mapv(i32::from))),
        u8 => |a: ArrayD<u8>| Ok(DynArray::I32(a.mapv(i32::from))),
        bool => |a: ArrayD<bool>| Ok(DynArray::I32(a.mapv(i32::from))),
        u32 => |a: ArrayD<u32>| Ok(DynArray::I64(a.mapv(i64::from))),
        u64 => |a: ArrayD<u64>| {
            if a.iter().all(|&v| i64::try_from(v).is_ok()) {
                Ok(DynArray::I64(a.mapv(|v| v as i64)))
            } else {
                Err(Error::format(path, "uint64 values above the int64 range are not supported"))
            }
        },
    );
    Err(Error::format(
        path,
        "unsupported .npy element type: expected an integer, float or complex array",
    ))
}

/// Writes `array` as a `.npy` file (C order, little endian), atomically.
pub fn write_npy(path: &Path, array: &DynArray) -> Result<()> {
    write_atomic(path, |w| {
        let r = match array {
            DynArray::I32(x) => x.write_npy(w),
            DynArray::I64(x) => x.write_npy(w),
            DynArray::F32(x) => x.write_npy(w),
            DynArray::F64(x) => x.write_npy(w),
            DynArray::C64(x) => x.write_npy(w),
            DynArray::C128(x) => x.write_npy(w),
        };
        r.map_err(|e| Error::format(path, format!("cannot write .npy: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, arr2};

    #[test]
    fn round_trip_every_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let base = arr2(&[[1i32, -2, 3], [4, 5, -6]]).into_dyn();
        for a in [
            DynArray::I32(base.clone()),
            DynArray::I64(base.mapv(i64::from)),
            DynArray::F32(base.mapv(|v| v as f32 / 3.0)),
            DynArray::F64(base.mapv(|v| v as f64 / 7.0)),
            DynArray::C64(base.mapv(|v| Complex::new(v as f32, 1.5))),
            DynArray::C128(base.mapv(|v| Complex::new(0.25, v as f64))),
        ] {
            write_npy(&p, &a).unwrap();
            assert_eq!(read_npy(&p).unwrap(), a);
        }
    }

    #[test]
    fn narrow_integers_widen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u8.npy");
        let a = ArrayD::<u8>::from_shape_vec(IxDyn(&[3]), vec![0, 200, 255]).unwrap();
        let mut f = std::fs::File::create(&p).unwrap();
        a.write_npy(&mut f).unwrap();
        assert_eq!(read_npy(&p).unwrap(), DynArray::I32(a.mapv(i32::from)));
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        std::fs::write(&p, b"\x93NUMPY\x01\x00garbage").unwrap();
        let msg = read_npy(&p).unwrap_err().to_string();
        assert!(msg.contains("bad.npy"), "{msg}");
        // A valid header with data cut short.
        let good = dir.path().join("good.npy");
        write_npy(&good, &DynArray::F64(ArrayD::zeros(IxDyn(&[4, 4])))).unwrap();
        let mut bytes = std::fs::read(&good).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_npy(&p).unwrap_err().to_string().contains("bad.npy"));
        assert!(read_npy(&dir.path().join("missing.npy")).is_err());
    }
}
