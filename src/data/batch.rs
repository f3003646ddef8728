//! Mini-batches: a shuffled order per epoch, augmentation (random crop with
//! zero padding, horizontal flip) and per-channel normalisation. All
//! randomness derives from one seed, the epoch and the image index, so a
//! batch does not depend on thread count or on what ran before it.

use super::dataset::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Training-time augmentation (torchvision `RandomCrop(size, padding=pad)`
/// then `RandomHorizontalFlip()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on every side before cropping back to the image size.
    pub pad: usize,
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// With `flip`: draw each image's flip once per run and invert it every
    /// other epoch, so that every two epochs show each image both ways
    /// (the "alternating flip" of Jordan, 2024), instead of an independent
    /// draw every epoch.
    pub alternate: bool,
}

/// `(x / 255 − mean[c]) / std[c]` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Images `[B, C, H, W]` and their labels.
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
}

/// A generator for one purpose (`stream`) of one epoch, or of one image.
fn rng(seed: u64, stream: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, stream, epoch, index]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The order in which epoch `epoch` visits `n` images: a permutation drawn
/// from `seed` and the epoch alone.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, 1, epoch, 0));
    order
}

/// The images `indices` of `data`, normalised, and augmented with
/// randomness from `(seed, epoch, index)` when `augment` is given.
pub fn batch(
    data: &Dataset,
    indices: &[usize],
    normalize: &Normalize,
    augment: Option<(Augment, u64, u64)>,
) -> Result<Batch> {
    let [c, h, w] = data.shape;
    if normalize.mean.len() != c || normalize.std.len() != c {
        return Err(Error::invalid(format!(
            "normalisation for {} channels, the images have {c}",
            normalize.mean.len()
        )));
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= data.len()) {
        return Err(Error::invalid(format!(
            "image {i} of a data set of {}",
            data.len()
        )));
    }
    let mut images = vec![0f32; indices.len() * c * h * w];
    images
        .par_chunks_mut(c * h * w)
        .zip(indices)
        .for_each(|(out, &i)| {
            let (dy, dx, flip) = match augment {
                Some((a, seed, epoch)) => {
                    let mut r = rng(seed, 2, epoch, i as u64);
                    let p = a.pad as i64;
                    let dy = r.random_range(-p..=p) as isize;
                    let dx = r.random_range(-p..=p) as isize;
                    let flip = if a.alternate {
                        rng(seed, 3, 0, i as u64).random_bool(0.5) ^ (epoch % 2 == 1)
                    } else {
                        r.random_bool(0.5)
                    };
                    (dy, dx, a.flip && flip)
                }
                None => (0, 0, false),
            };
            let img = data.image(i);
            for ch in 0..c {
                let (m, s) = (normalize.mean[ch], normalize.std[ch]);
                // The padded value 0 normalised, as torchvision pads before Normalize.
                let zero = -m / s;
                for y in 0..h {
                    let sy = y as isize + dy;
                    let row = &mut out[(ch * h + y) * w..(ch * h + y + 1) * w];
                    for (x, o) in row.iter_mut().enumerate() {
                        let x = if flip { w - 1 - x } else { x };
                        let sx = x as isize + dx;
                        *o = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                            let p = img[(ch * h + sy as usize) * w + sx as usize];
                            (p as f32 / 255.0 - m) / s
                        } else {
                            zero
                        };
                    }
                }
            }
        });
    Ok(Batch {
        images: Tensor::from_vec(images, &[indices.len(), c, h, w])?,
        labels: indices.iter().map(|&i| data.labels[i]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset {
            shape: [1, 3, 4],
            pixels: (0..24).map(|v| v * 10).collect(),
            labels: vec![1, 0],
            classes: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn batches_normalise_and_augment_reproducibly() {
        let d = tiny();
        let norm = Normalize {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let plain = batch(&d, &[1], &norm, None).unwrap();
        assert_eq!(plain.labels, [0]);
        assert_eq!(plain.images.to_vec()[0], (120.0 / 255.0 - 0.5) / 0.25);

        let aug = Augment {
            pad: 1,
            flip: true,
            alternate: false,
        };
        let a = batch(&d, &[0, 1], &norm, Some((aug, 9, 3)))
            .unwrap()
            .images
            .to_vec();
        let b = batch(&d, &[1], &norm, Some((aug, 9, 3)))
            .unwrap()
            .images
            .to_vec();
        // Image 1 is augmented the same alone or in a batch; other epochs differ.
        assert_eq!(&a[12..], &b[..]);
        let differs = (0..20u64).any(|e| {
            batch(&d, &[1], &norm, Some((aug, 9, e)))
                .unwrap()
                .images
                .to_vec()
                != b
        });
        assert!(differs);
        // Every augmented value is a shifted/mirrored pixel or the padding.
        let zero = -0.5 / 0.25;
        let pixels: Vec<f32> = (0..24)
            .map(|v| (v as f32 * 10.0 / 255.0 - 0.5) / 0.25)
            .collect();
        assert!(a.iter().all(|v| *v == zero || pixels.contains(v)));

        // Alternating flips: consecutive epochs show each image both ways.
        let alt = Augment {
            pad: 0,
            flip: true,
            alternate: true,
        };
        let view = |e| {
            batch(&d, &[0, 1], &norm, Some((alt, 9, e)))
                .unwrap()
                .images
                .to_vec()
        };
        let mirrored = |v: Vec<f32>| {
            let mut v = v;
            v.chunks_exact_mut(4).for_each(<[f32]>::reverse);
            v
        };
        for e in 0..4 {
            assert_eq!(view(e + 1), mirrored(view(e)));
            assert_eq!(view(e + 2), view(e));
        }

        let o = epoch_order(10, 5, 0);
        assert_eq!(o, epoch_order(10, 5, 0));
        assert_ne!(o, epoch_order(10, 5, 1));
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());

        assert!(batch(&d, &[2], &norm, None).is_err());
        let e = batch(
            &d,
            &[0],
            &Normalize {
                mean: vec![0.0; 3],
                std: vec![1.0; 3],
            },
            None,
        );
        assert!(e.is_err());
    }
}
