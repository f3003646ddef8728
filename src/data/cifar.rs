//! CIFAR binary version: records of label byte(s) then 3 × 32 × 32 pixels
//! (R, G, B planes). CIFAR-10: `data_batch_{1..5}.bin` and
//! `test_batch.bin`, one label byte; CIFAR-100: `train.bin` and
//! `test.bin`, a coarse and a fine label byte (gconv uses the fine one).

use super::dataset::{Dataset, Split, check_labels, cifar10_classes};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

pub(super) fn load(dir: &Path, split: Split, hundred: bool) -> Result<Dataset> {
    let files: Vec<PathBuf> = match (hundred, split) {
        (false, Split::Train) => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        (false, Split::Test) => vec![dir.join("test_batch.bin")],
        (true, Split::Train) => vec![dir.join("train.bin")],
        (true, Split::Test) => vec![dir.join("test.bin")],
    };
    let (label_bytes, classes) = if hundred { (2, 100) } else { (1, 10) };
    let record = label_bytes + PIXELS;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(Error::format(
                path,
                format!(
                    "{} bytes is not a whole number of {record}-byte records",
                    bytes.len()
                ),
            ));
        }
        let records = bytes.chunks_exact(record);
        labels.extend(check_labels(
            path,
            records.clone().map(|r| r[label_bytes - 1] as usize),
            classes,
        )?);
        for r in records {
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    let names = if hundred {
        read_names(&dir.join("fine_label_names.txt"), 100)
    } else {
        read_names(&dir.join("batches.meta.txt"), 10).or_else(|| Some(cifar10_classes()))
    };
    Ok(Dataset {
        shape: [3, 32, 32],
        pixels,
        labels,
        classes: names.unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect()),
    })
}

/// Class names from the data set's text file, when it has `n` of them.
fn read_names(path: &Path, n: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == n).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar100_records_load_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for (coarse, fine) in [(3u8, 42u8), (19, 99)] {
            bytes.extend([coarse, fine]);
            bytes.extend((0..PIXELS).map(|i| (i % 251) as u8));
        }
        std::fs::write(dir.path().join("test.bin"), &bytes).unwrap();
        let d = load(dir.path(), Split::Test, true).unwrap();
        assert_eq!(
            (d.len(), d.labels.clone(), d.shape),
            (2, vec![42, 99], [3, 32, 32])
        );
        assert_eq!(d.image(1)[250..252], [250, 0]);
        assert_eq!(d.classes.len(), 100);

        std::fs::write(dir.path().join("test.bin"), &bytes[..bytes.len() - 5]).unwrap();
        let e = load(dir.path(), Split::Test, true).unwrap_err().to_string();
        assert!(
            e.contains("test.bin") && e.contains("3074-byte records"),
            "{e}"
        );
        bytes[1] = 100;
        std::fs::write(dir.path().join("test.bin"), &bytes).unwrap();
        let e = load(dir.path(), Split::Test, true).unwrap_err().to_string();
        assert!(e.contains("label 100 of record 0"), "{e}");
        // CIFAR-10 reads one label byte per record.
        std::fs::write(
            dir.path().join("test_batch.bin"),
            [&[7u8][..], &[1; PIXELS]].concat(),
        )
        .unwrap();
        let d = load(dir.path(), Split::Test, false).unwrap();
        assert_eq!((d.labels[0], d.classes[7].as_str()), (7, "horse"));
    }
}
