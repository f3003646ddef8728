//! Safetensors files (Hugging Face's format, what `safetensors.torch`
//! writes): a JSON header naming each tensor's dtype, shape and byte range,
//! then the little-endian data. gconv computes in f32; reading converts
//! every numeric dtype to f32, writing stores f32 or i64 (PyTorch keeps
//! `num_batches_tracked` as int64).

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Named arrays: name → (shape, row-major values).
pub type NamedArrays = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// How a tensor is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredAs {
    F32,
    /// Integer counters; the values must be whole numbers.
    I64,
}

/// One tensor to write.
pub struct Entry<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: &'a [f32],
    pub stored_as: StoredAs,
}

/// A file's tensors (converted to f32) and its free-form metadata.
#[derive(Debug)]
pub struct Loaded {
    pub arrays: NamedArrays,
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors file. Corrupt headers, data that
/// does not match its header, unsupported dtypes and non-finite values are
/// errors naming the file and the tensor.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|reason| Error::format(path, reason))
}

fn parse(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut arrays = NamedArrays::new();
    for (name, view) in file.iter() {
        let values = to_f32(&view).map_err(|e| format!("tensor {name:?}: {e}"))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor {name:?} holds a non-finite value ({}) at index {i}",
                values[i]
            ));
        }
        arrays.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(Loaded {
        arrays,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

fn to_f32(view: &TensorView<'_>) -> std::result::Result<Vec<f32>, String> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => each(data, f32::from_le_bytes),
        Dtype::F64 => each(data, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => each(data, |b| f16_to_f32(u16::from_le_bytes(b))),
        Dtype::BF16 => each(data, |b| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
        }),
        Dtype::I64 => each(data, |b| i64::from_le_bytes(b) as f32),
        Dtype::I32 => each(data, |b| i32::from_le_bytes(b) as f32),
        Dtype::I16 => each(data, |b| i16::from_le_bytes(b) as f32),
        Dtype::I8 => each(data, |[b]| b as i8 as f32),
        Dtype::U8 | Dtype::BOOL => each(data, |[b]| b as f32),
        other => return Err(format!("dtype {other:?} is not supported")),
    })
}

/// IEEE half precision to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: value = frac · 2^-24.
        (0, _) => return sign_of(h) * frac as f32 * 2f32.powi(-24),
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

fn sign_of(h: u16) -> f32 {
    if h >> 15 == 1 { -1.0 } else { 1.0 }
}

/// Writes `entries` (names must be unique) with optional metadata,
/// atomically.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    entries: &[Entry<'_>],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut buffers = Vec::with_capacity(entries.len());
    for e in entries {
        if e.values.len() != e.shape.iter().product::<usize>() {
            return Err(Error::invalid(format!(
                "{}: {} values for shape {:?}",
                e.name,
                e.values.len(),
                e.shape
            )));
        }
        let bytes: Vec<u8> = match e.stored_as {
            StoredAs::F32 => e.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoredAs::I64 => {
                if let Some(v) = e.values.iter().find(|v| v.fract() != 0.0 || !v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{}: {v} is not a whole number",
                        e.name
                    )));
                }
                e.values
                    .iter()
                    .flat_map(|&v| (v as i64).to_le_bytes())
                    .collect()
            }
        };
        buffers.push(bytes);
    }
    let mut views = Vec::with_capacity(entries.len());
    for (e, bytes) in entries.iter().zip(&buffers) {
        let dtype = match e.stored_as {
            StoredAs::F32 => Dtype::F32,
            StoredAs::I64 => Dtype::I64,
        };
        let view = TensorView::new(dtype, e.shape.to_vec(), bytes)
            .map_err(|err| Error::invalid(format!("{}: {err}", e.name)))?;
        views.push((e.name, view));
    }
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|err| Error::invalid(format!("{}: {err}", path.display())))?;
    super::write_atomic(path, |w| {
        w.write_all(&bytes).map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_dtypes_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let w = [0.5f32, -1.25, 3.0, 1e-7, -0.0, 7.0];
        let entries = [
            Entry {
                name: "a.weight",
                shape: &[2, 3],
                values: &w,
                stored_as: StoredAs::F32,
            },
            Entry {
                name: "a.count",
                shape: &[],
                values: &[12.0],
                stored_as: StoredAs::I64,
            },
        ];
        let meta = HashMap::from([("epoch".to_string(), "3".to_string())]);
        write_safetensors(&path, &entries, Some(meta.clone())).unwrap();
        let loaded = read_safetensors(&path).unwrap();
        assert_eq!(loaded.arrays["a.weight"], (vec![2, 3], w.to_vec()));
        assert_eq!(loaded.arrays["a.count"], (vec![], vec![12.0]));
        assert_eq!(loaded.metadata, meta);
        let file = std::fs::read(&path).unwrap();
        let header = String::from_utf8_lossy(&file[8..]);
        assert!(header.contains("\"I64\""), "{header}");
    }

    #[test]
    fn half_precision_converts_exactly() {
        for (h, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x8001, -5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), want, "{h:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn corrupt_and_non_finite_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let entries = [Entry {
            name: "x",
            shape: &[4],
            values: &[1.0, 2.0, 3.0, 4.0],
            stored_as: StoredAs::F32,
        }];
        write_safetensors(&path, &entries, None).unwrap();
        let good = std::fs::read(&path).unwrap();

        let truncated = dir.path().join("t.safetensors");
        std::fs::write(&truncated, &good[..good.len() - 3]).unwrap();
        let err = read_safetensors(&truncated).unwrap_err().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("not a safetensors file"),
            "{err}"
        );

        std::fs::write(&truncated, b"\x05\0\0\0\0\0\0\0{oops").unwrap();
        assert!(read_safetensors(&truncated).is_err());
        std::fs::write(&truncated, b"ab").unwrap();
        assert!(read_safetensors(&truncated).is_err());

        let mut nan = good.clone();
        let n = nan.len();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&truncated, &nan).unwrap();
        let err = read_safetensors(&truncated).unwrap_err().to_string();
        assert!(
            err.contains("non-finite") && err.contains("index 3"),
            "{err}"
        );
    }
}
