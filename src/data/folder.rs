//! A folder data set: `DIR/train/CLASS/IMAGE` and `DIR/test/CLASS/IMAGE`
//! (`val` is accepted for `test`), classes in sorted order of their folder
//! names (as torchvision's `ImageFolder`), every image resized to one size.

use super::dataset::{Dataset, Split};
use crate::error::{Error, Result};
use crate::io::decode_image;
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

pub(super) fn load(dir: &Path, split: Split, [h, w]: [usize; 2]) -> Result<Dataset> {
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "folder images need a size, got {h}×{w}"
        )));
    }
    let root = match split {
        Split::Train => dir.join("train"),
        Split::Test if dir.join("test").is_dir() => dir.join("test"),
        Split::Test => dir.join("val"),
    };
    let classes = sorted_entries(&root, true)?;
    if classes.is_empty() {
        return Err(Error::format(&root, "no class folders"));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for file in sorted_entries(class, false)? {
            let img = decode_image(&file)?
                .resize_exact(w as u32, h as u32, FilterType::Triangle)
                .into_rgb8();
            let raw = img.into_raw();
            for c in 0..3 {
                pixels.extend(raw.iter().skip(c).step_by(3));
            }
            labels.push(label);
        }
    }
    let names = classes
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok(Dataset {
        shape: [3, h, w],
        pixels,
        labels,
        classes: names,
    })
}

/// The directories (or files) in `dir`, sorted by name; hidden entries are
/// skipped.
fn sorted_entries(dir: &Path, dirs: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_dir() == dirs {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_sorted_folders_and_bad_images_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (class, colour) in [("cat", [200u8, 10, 10]), ("ant", [0, 0, 250])] {
            let d = dir.path().join("train").join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::from_pixel(9, 7, image::Rgb(colour))
                .save(d.join("a.png"))
                .unwrap();
        }
        let d = load(dir.path(), Split::Train, [4, 5]).unwrap();
        assert_eq!(
            (d.shape, d.classes.clone(), d.labels.clone()),
            ([3, 4, 5], vec!["ant".into(), "cat".into()], vec![0, 1])
        );
        assert_eq!(
            (d.image(0)[0], d.image(0)[40], d.image(1)[0]),
            (0, 250, 200)
        );

        std::fs::write(dir.path().join("train/cat/b.png"), b"broken").unwrap();
        let e = load(dir.path(), Split::Train, [4, 5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.png") && e.contains("decode"), "{e}");
        let e = load(dir.path(), Split::Test, [4, 5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("val"), "{e}");
    }
}
