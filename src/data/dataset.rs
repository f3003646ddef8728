//! Labelled image data sets held in memory as bytes: Fashion-MNIST and
//! MNIST (IDX), CIFAR-10 and CIFAR-100 (binary version), and folders of
//! images with one sub-folder per class.

use super::idx::read_idx;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Images `[N, C, H, W]` as bytes (0–255) with one class index each.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[C, H, W]` of every image.
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image (`C · H · W`).
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image `i`, `[C, H, W]` bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The first `n` images (all of them when there are fewer).
    pub fn take(mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.pixels.truncate(n * self.image_len());
        self.labels.truncate(n);
        self
    }

    /// Per-channel mean and standard deviation of the pixels scaled to
    /// [0, 1] (what `Normalize` uses).
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let [c, h, w] = self.shape;
        let mut sums = vec![(0f64, 0f64); c];
        for img in self.pixels.chunks_exact(c * h * w) {
            for (ch, plane) in img.chunks_exact(h * w).enumerate() {
                for &p in plane {
                    let v = p as f64 / 255.0;
                    sums[ch].0 += v;
                    sums[ch].1 += v * v;
                }
            }
        }
        let count = (self.len() * h * w).max(1) as f64;
        sums.iter()
            .map(|&(s, s2)| {
                let mean = s / count;
                (
                    mean as f32,
                    (s2 / count - mean * mean).max(1e-12).sqrt() as f32,
                )
            })
            .unzip()
    }
}

/// The data sets gconv reads.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
    /// `DIR/train/CLASS/*` and `DIR/test/CLASS/*` (or `val`) image files.
    Folder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

impl Kind {
    /// Where the data set is looked for without `--data-dir`.
    pub fn default_dir(self) -> PathBuf {
        PathBuf::from(match self {
            Kind::FashionMnist => "/usr/share/datasets/fashion-mnist",
            Kind::Mnist => "/usr/share/datasets/mnist",
            Kind::Cifar10 => "data/cifar-10-batches-bin",
            Kind::Cifar100 => "data/cifar-100-binary",
            Kind::Folder => "data/images",
        })
    }

    /// How to get the data set, for the error when it is missing.
    fn how_to_get(self) -> &'static str {
        match self {
            Kind::FashionMnist => {
                "install it with `sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu) \
                 or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                 t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a directory \
                 given with --data-dir"
            }
            Kind::Mnist => {
                "put the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in a \
                 directory given with --data-dir"
            }
            Kind::Cifar10 => {
                "download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, \
                 unpack it and pass the cifar-10-batches-bin directory with --data-dir"
            }
            Kind::Cifar100 => {
                "download cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, \
                 unpack it and pass the cifar-100-binary directory with --data-dir"
            }
            Kind::Folder => {
                "pass a directory holding train/CLASS/*.png (and test/CLASS/...) with --data-dir"
            }
        }
    }

    /// Reads one split from `dir`. Images of a folder data set are resized
    /// to `folder_size` (`[H, W]`) RGB.
    pub fn load(self, dir: &Path, split: Split, folder_size: [usize; 2]) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(Error::invalid(format!(
                "{}: no such directory; {}",
                dir.display(),
                self.how_to_get()
            )));
        }
        match self {
            Kind::FashionMnist => load_idx_pair(dir, split, &FASHION_CLASSES.map(String::from)),
            Kind::Mnist => load_idx_pair(
                dir,
                split,
                &(0..10).map(|d| d.to_string()).collect::<Vec<_>>(),
            ),
            Kind::Cifar10 | Kind::Cifar100 => {
                super::cifar::load(dir, split, self == Kind::Cifar100)
            }
            Kind::Folder => super::folder::load(dir, split, folder_size),
        }
        .map_err(|e| match e {
            Error::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::invalid(format!(
                    "{}: not found; {}",
                    path.display(),
                    self.how_to_get()
                ))
            }
            other => other,
        })
    }
}

/// The file `stem` in `dir`, gzip-compressed or not.
fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { dir.join(stem) }
}

/// MNIST-style `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
fn load_idx_pair(dir: &Path, split: Split, classes: &[String]) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let image_path = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let label_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let images = read_idx(&image_path)?;
    let labels = read_idx(&label_path)?;
    let &[n, h, w] = images.dims.as_slice() else {
        return Err(Error::format(
            &image_path,
            format!("dimensions {:?}; images are [N, H, W]", images.dims),
        ));
    };
    if labels.dims != [n] {
        return Err(Error::format(
            &label_path,
            format!(
                "dimensions {:?}; {} has {n} images",
                labels.dims,
                image_path.display()
            ),
        ));
    }
    let labels = check_labels(
        &label_path,
        labels.data.iter().map(|&l| l as usize),
        classes.len(),
    )?;
    Ok(Dataset {
        shape: [1, h, w],
        pixels: images.data,
        labels,
        classes: classes.to_vec(),
    })
}

/// Collects labels, each of which must be below `classes`.
pub(super) fn check_labels(
    path: &Path,
    labels: impl Iterator<Item = usize>,
    classes: usize,
) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, l) in labels.enumerate() {
        if l >= classes {
            return Err(Error::format(
                path,
                format!("label {l} of record {i} is not below {classes}"),
            ));
        }
        out.push(l);
    }
    Ok(out)
}

pub(super) fn cifar10_classes() -> Vec<String> {
    CIFAR10_CLASSES.map(String::from).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{Idx, encode_idx};

    #[test]
    fn fashion_mnist_files_load_and_mismatches_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, dims: Vec<usize>, data: Vec<u8>| {
            std::fs::write(dir.path().join(name), encode_idx(&Idx { dims, data })).unwrap()
        };
        write("t10k-images-idx3-ubyte", vec![3, 2, 2], (0..12).collect());
        write("t10k-labels-idx1-ubyte", vec![3], vec![9, 0, 4]);
        let d = Kind::FashionMnist
            .load(dir.path(), Split::Test, [0, 0])
            .unwrap();
        assert_eq!(
            (d.shape, d.len(), d.image(1)),
            ([1, 2, 2], 3, &[4u8, 5, 6, 7][..])
        );
        assert_eq!(d.labels, [9, 0, 4]);
        assert_eq!(d.classes[9], "Ankle boot");
        let (mean, std) = d.channel_stats();
        assert!((mean[0] - 5.5 / 255.0).abs() < 1e-6 && (std[0] - 3.452_052 / 255.0).abs() < 1e-6);

        write("t10k-labels-idx1-ubyte", vec![3], vec![9, 10, 4]);
        let e = Kind::FashionMnist
            .load(dir.path(), Split::Test, [0, 0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 10 of record 1"), "{e}");
        write("t10k-labels-idx1-ubyte", vec![2], vec![9, 1]);
        let e = Kind::FashionMnist
            .load(dir.path(), Split::Test, [0, 0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 images"), "{e}");
        let e = Kind::FashionMnist
            .load(dir.path(), Split::Train, [0, 0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains("apt-get install"),
            "{e}"
        );
        let e = Kind::FashionMnist
            .load(&dir.path().join("nope"), Split::Train, [0, 0])
            .unwrap_err();
        assert!(e.to_string().contains("dataset-fashion-mnist"), "{e}");
    }
}
