//! Evaluation: loss, top-1 and top-5 accuracy and the confusion matrix of
//! a model (in eval mode) on a data set.

use crate::data::{Dataset, Normalize, batch};
use crate::error::Result;
use crate::nn::Module;
use crate::{Tensor, no_grad, ops};

/// Results on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    /// `confusion[true][predicted]` image counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Runs `model` over `data` in batches of `batch_size`. The model should
/// be in eval mode. With `flip`, each image's logits are the mean of the
/// logits of the image and of its mirror image (test-time augmentation
/// with the training's horizontal flips; twice the work). The two views,
/// or without `flip` the two halves of each batch, run side by side
/// (`rayon::join`), as training runs its half batches.
pub fn evaluate(
    model: &dyn Module,
    data: &Dataset,
    normalize: &Normalize,
    batch_size: usize,
    flip: bool,
) -> Result<Evaluation> {
    let k = data.classes.len();
    let mut confusion = vec![vec![0; k]; k];
    let (mut loss, mut top5) = (0.0, 0usize);
    let indices: Vec<usize> = (0..data.len()).collect();
    let forward = |x: &Tensor| -> Result<Vec<f32>> { Ok(no_grad(|| model.forward(x))?.to_vec()) };
    // Logits `[n, k]` of the images `part`.
    let logits = |part: &[usize]| forward(&batch(data, part, normalize, None)?.images);
    for chunk in indices.chunks(batch_size.max(1)) {
        let scores: Vec<f32> = if flip {
            let x = batch(data, chunk, normalize, None)?.images;
            let mirrored = mirror(&x)?;
            let (plain, mirrored) = rayon::join(|| forward(&x), || forward(&mirrored));
            (plain?.iter().zip(&mirrored?))
                .map(|(a, b)| 0.5 * (a + b))
                .collect()
        } else if chunk.len() < 2 {
            logits(chunk)?
        } else {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            let (a, b) = rayon::join(|| logits(a), || logits(b));
            [a?, b?].concat()
        };
        let labels: Vec<usize> = chunk.iter().map(|&i| data.labels[i]).collect();
        let batch_logits = Tensor::from_vec(scores.clone(), &[chunk.len(), k])?;
        loss += no_grad(|| ops::cross_entropy(&batch_logits, &labels, 0.0))?.item()? as f64
            * chunk.len() as f64;
        for (row, &label) in scores.chunks_exact(k).zip(&labels) {
            let rank = row.iter().filter(|&&s| s > row[label]).count();
            top5 += usize::from(rank < 5);
            confusion[label][argmax(row)] += 1;
        }
    }
    let n = data.len().max(1) as f64;
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    Ok(Evaluation {
        loss: loss / n,
        top1: correct as f64 / n,
        top5: top5 as f64 / n,
        confusion,
    })
}

/// `[N, C, H, W]` images mirrored left to right.
fn mirror(images: &Tensor) -> Result<Tensor> {
    let w = *images.shape().last().unwrap_or(&1);
    let mut v = images.to_vec();
    v.chunks_exact_mut(w.max(1)).for_each(<[f32]>::reverse);
    Tensor::from_vec(v, images.shape())
}

/// Index of the largest score (the first on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &s)| if s > row[best] { i } else { best })
}
