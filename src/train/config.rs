//! What a training run does, saved as `config.json` in the run directory.

use crate::data::Kind;
use crate::error::{Error, Result};
use crate::optim::ScheduleKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A training run's settings. The defaults train a small-input ShuffleNet
/// on Fashion-MNIST.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: String,
    pub dataset: Kind,
    pub data_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub schedule: ScheduleKind,
    /// Warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// For the step schedule: epochs between decays and the factor.
    pub step_epochs: usize,
    pub gamma: f64,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// Also decay batch-norm parameters and biases.
    pub decay_1d: bool,
    pub label_smoothing: f32,
    /// Random-crop zero padding (0: no cropping).
    pub crop_padding: usize,
    pub flip: bool,
    pub seed: u64,
    /// Use only the first N training / test images.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// Image size for folder data sets `[H, W]`.
    pub input_size: [usize; 2],
    /// Run each batch as two halves side by side (forward and backward on
    /// separate threads, gradients summed) instead of one batch whose
    /// operations each use all threads. Batch statistics then come from
    /// each half, as with PyTorch's data-parallel training without
    /// synchronised batch norm; the running statistics follow the first.
    /// On by default: 1.45× the images/s of the whole batch on 2 cores
    /// (`shufflenet_g3_wd2_cifar`, batch 64, 28×28). Runs saved before the
    /// option existed read back as `false`.
    #[serde(default)]
    pub split_batch: bool,
    /// Evaluate with flip test-time augmentation: each test image's logits
    /// averaged with those of its mirror image (the training flips the
    /// images too). Twice the evaluation work. Off in runs saved before
    /// the option existed.
    #[serde(default)]
    pub flip_tta: bool,
    /// Flip each image in alternate epochs instead of at random every
    /// epoch (see `data::Augment::alternate`). Off in runs saved before the
    /// option existed.
    #[serde(default)]
    pub alternate_flip: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "shufflenet_g1_w3d4_cifar".into(),
            dataset: Kind::FashionMnist,
            data_dir: Kind::FashionMnist.default_dir(),
            epochs: 15,
            batch_size: 64,
            lr: 0.1,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            step_epochs: 30,
            gamma: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            decay_1d: false,
            label_smoothing: 0.1,
            crop_padding: 0,
            flip: true,
            seed: 0,
            train_limit: None,
            test_limit: None,
            input_size: [32, 32],
            split_batch: true,
            flip_tta: true,
            alternate_flip: false,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch size {} is too small: batch norm needs at least 2 images",
                self.batch_size
            ));
        }
        if self.split_batch && self.batch_size < 4 {
            return bad(format!(
                "batch size {} is too small to split: each half needs 2 images",
                self.batch_size
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing {} is not in [0, 1)",
                self.label_smoothing
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return bad(format!(
                "warm-up {} epochs must be non-negative",
                self.warmup_epochs
            ));
        }
        if matches!(self.train_limit, Some(0)) || matches!(self.test_limit, Some(0)) {
            return bad("image limits must be at least 1".into());
        }
        Ok(())
    }
}
