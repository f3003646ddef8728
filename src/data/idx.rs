//! IDX files (MNIST, Fashion-MNIST): a 4-byte magic (two zero bytes, a type
//! code, the number of dimensions), big-endian u32 sizes, then the values.
//! Files may be gzip-compressed, as distributed.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// An unsigned-byte IDX array: `dims` (e.g. `[60000, 28, 28]`) and values
/// in row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an unsigned-byte IDX file, raw or gzip-compressed. Anything else
/// (another type code, a size that does not match the data, a truncated or
/// corrupt gzip stream) is an error naming the file.
pub fn read_idx(path: &Path) -> Result<Idx> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("corrupt gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|reason| Error::format(path, reason))
}

fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    let [0, 0, kind, rank] = *bytes.get(..4).ok_or("shorter than an IDX header")? else {
        return Err(format!(
            "bad magic number {:02x?} (IDX files start with two zero bytes)",
            &bytes[..4]
        ));
    };
    if kind != 0x08 {
        return Err(format!(
            "type code {kind:#04x}; only unsigned bytes (0x08) are supported"
        ));
    }
    let rank = rank as usize;
    if rank == 0 {
        return Err("zero dimensions".into());
    }
    let header = 4 + 4 * rank;
    let sizes = bytes.get(4..header).ok_or("header cut short")?;
    let dims: Vec<usize> = sizes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("sizes overflow")?;
    let data = &bytes[header..];
    if data.len() != len {
        return Err(format!(
            "dimensions {dims:?} need {len} bytes of data, the file has {}{}",
            data.len(),
            if data.len() < len { " (truncated)" } else { "" }
        ));
    }
    Ok(Idx {
        dims,
        data: data.to_vec(),
    })
}

/// Encodes `idx` as an uncompressed IDX file (for tests and tools).
pub fn encode_idx(idx: &Idx) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, idx.dims.len() as u8];
    for &d in &idx.dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend(&idx.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn raw_and_gzip_files_read_and_corrupt_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Idx {
            dims: vec![2, 3, 2],
            data: (0..12).collect(),
        };
        let raw = encode_idx(&idx);
        let p = dir.path().join("x-idx3-ubyte");
        std::fs::write(&p, &raw).unwrap();
        assert_eq!(read_idx(&p).unwrap(), idx);

        let gz = dir.path().join("x-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&raw).unwrap();
        let compressed = enc.finish().unwrap();
        std::fs::write(&gz, &compressed).unwrap();
        assert_eq!(read_idx(&gz).unwrap(), idx);

        let check = |bytes: &[u8], needle: &str| {
            std::fs::write(&p, bytes).unwrap();
            let e = read_idx(&p).unwrap_err().to_string();
            assert!(e.contains("x-idx3-ubyte") && e.contains(needle), "{e}");
        };
        check(&raw[..raw.len() - 1], "truncated");
        check(&raw[..6], "header cut short");
        check(&raw[..2], "shorter than");
        check(&[1, 2, 8, 1, 0, 0, 0, 0], "bad magic");
        check(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "type code 0x0d");
        check(&compressed[..compressed.len() / 2], "corrupt gzip");
    }
}
