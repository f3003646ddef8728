//! Training runs: SGD over a data set with augmentation and a learning-rate
//! schedule, evaluation after every epoch, and a run directory holding
//! `config.json`, `metrics.jsonl`, the resumable `checkpoint.safetensors`,
//! the weights `latest.safetensors` and `best.safetensors`, and plots.

pub mod checkpoint;
mod config;
mod evaluate;
mod plots;

pub use config::TrainConfig;
pub use evaluate::{Evaluation, evaluate};

use crate::data::{Augment, Dataset, Normalize, Split, batch, epoch_order};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::models::{self, Head};
use crate::nn::{self, Module, Strictness};
use crate::ops;
use crate::optim::{Schedule, Sgd, SgdConfig};
use checkpoint::Progress;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images per evaluation batch. Small batches keep the activations in the
/// cache: the default model's test pass with flip TTA (`gconv eval
/// --flip-tta`, 10,000 images, three alternating rounds) took 7.8-8.1 s at
/// 32 against 9.3-9.8 s at 256.
pub const EVAL_BATCH: usize = 32;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub test_top5: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch (training and evaluation).
    pub seconds: f64,
    pub images_per_s: f64,
}

/// What the training loop reports as it goes (a progress bar, a log).
pub trait Observer {
    /// Epoch `epoch` (1-based) of `epochs` starts, with `batches` steps.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A step finished; the running means of the epoch so far.
    fn step(&mut self, _done: usize, _loss: f64, _acc: f64, _images_per_s: f64) {}
    /// Evaluation after the epoch finished and its checkpoint was written.
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
    /// Asked after every epoch: stop the run here (it can be resumed).
    fn stop(&mut self) -> bool {
        false
    }
}

/// An observer that reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// The data sets of a run, with the normalisation of its training images.
pub struct Data {
    pub train: Dataset,
    pub test: Dataset,
    pub normalize: Normalize,
}

impl Data {
    pub fn load(config: &TrainConfig) -> Result<Data> {
        let kind = config.dataset;
        let train = kind.load(&config.data_dir, Split::Train, config.input_size)?;
        let test = kind.load(&config.data_dir, Split::Test, config.input_size)?;
        let train = train.take(config.train_limit.unwrap_or(usize::MAX));
        let test = test.take(config.test_limit.unwrap_or(usize::MAX));
        if train.shape != test.shape || train.classes.len() != test.classes.len() {
            return Err(Error::invalid(format!(
                "{}: training images {:?} in {} classes, test images {:?} in {}",
                config.data_dir.display(),
                train.shape,
                train.classes.len(),
                test.shape,
                test.classes.len()
            )));
        }
        let (mean, std) = train.channel_stats();
        Ok(Data {
            train,
            test,
            normalize: Normalize { mean, std },
        })
    }
}

/// The files of a run directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn latest(&self) -> PathBuf {
        self.0.join("latest.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("best.safetensors")
    }
}

/// Reads `config.json` of a run directory.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    let path = RunDir(dir.to_path_buf()).config();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Builds the configured model for the data set's channels and classes,
/// initialised from the run's seed.
pub fn build_model(config: &TrainConfig, data: &Dataset) -> Result<Box<dyn Module>> {
    let head = Head {
        in_channels: data.shape[0],
        num_classes: data.classes.len(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    models::build_for(&config.model, Some(head), &mut rng)
}

/// Trains as `config` says, writing the run directory `out`. With
/// `resume`, continues from `out/checkpoint.safetensors` (the epochs it
/// completed are kept); `init` loads starting weights instead of the
/// random initialisation. Returns the metrics of every epoch of the run.
pub fn train(
    config: &TrainConfig,
    data: &Data,
    out: &Path,
    resume: bool,
    init: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochMetrics>> {
    config.validate()?;
    let run = RunDir(out.to_path_buf());
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut model = build_model(config, &data.train)?;
    if let Some(path) = init {
        nn::load_safetensors(model.as_ref(), path, Strictness::Strict)?;
    }
    let sgd = SgdConfig {
        momentum: config.momentum,
        nesterov: config.nesterov,
        weight_decay: config.weight_decay,
        no_decay_1d: !config.decay_1d,
    };
    let mut opt = Sgd::new(nn::parameters(model.as_ref()), sgd)?;
    let batches = data.train.len() / config.batch_size;
    if batches == 0 {
        return Err(Error::invalid(format!(
            "{} training images do not fill one batch of {}",
            data.train.len(),
            config.batch_size
        )));
    }
    let schedule = Schedule {
        kind: config.schedule,
        base_lr: config.lr,
        warmup_steps: (config.warmup_epochs * batches as f64).round() as usize,
        total_steps: config.epochs * batches,
        step_every: config.step_epochs * batches,
        gamma: config.gamma,
    };
    schedule.validate()?;

    let mut history = Vec::new();
    let mut progress = Progress {
        epoch: 0,
        step: 0,
        best_top1: f64::NEG_INFINITY,
    };
    if resume {
        progress = checkpoint::load(&run.checkpoint(), model.as_ref(), &mut opt)?;
        history = read_metrics(&run.metrics())?;
        history.truncate(progress.epoch);
    }
    let config_json = serde_json::to_string_pretty(config).expect("config serialises");
    write_atomic(&run.config(), |w| {
        w.write_all(config_json.as_bytes())
            .map_err(|e| Error::io(run.config(), e))
    })?;

    let augment = Augment {
        pad: config.crop_padding,
        flip: config.flip,
        alternate: config.alternate_flip,
    };
    for epoch in progress.epoch..config.epochs {
        let start = Instant::now();
        observer.epoch_start(epoch + 1, config.epochs, batches);
        model.set_training(true);
        let order = epoch_order(data.train.len(), config.seed, epoch as u64);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let mut lr = 0.0;
        for (i, indices) in order.chunks_exact(config.batch_size).enumerate() {
            opt.zero_grad();
            let step = Step {
                model: model.as_ref(),
                data,
                augment: Some((augment, config.seed, epoch as u64)),
                label_smoothing: config.label_smoothing,
                batch_size: indices.len(),
            };
            let (value, hits) = if config.split_batch {
                let (a, b) = indices.split_at(indices.len() / 2);
                let (ra, rb) =
                    rayon::join(|| step.run(a), || nn::without_running_stats(|| step.run(b)));
                let ((va, ca), (vb, cb)) = (ra?, rb?);
                (
                    (va * a.len() as f64 + vb * b.len() as f64) / indices.len() as f64,
                    ca + cb,
                )
            } else {
                step.run(indices)?
            };
            if !value.is_finite() {
                return Err(Error::invalid(format!(
                    "epoch {} step {}: the loss is {value}; lower the learning rate ({})",
                    epoch + 1,
                    i + 1,
                    config.lr
                )));
            }
            lr = schedule.lr(progress.step);
            opt.step(lr as f32);
            progress.step += 1;
            correct += hits;
            loss_sum += value * indices.len() as f64;
            seen += indices.len();
            let rate = seen as f64 / start.elapsed().as_secs_f64();
            observer.step(
                i + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                rate,
            );
        }
        let train_seconds = start.elapsed().as_secs_f64();
        model.set_training(false);
        let eval = evaluate(
            model.as_ref(),
            &data.test,
            &data.normalize,
            EVAL_BATCH,
            config.flip_tta,
        )?;
        progress.epoch = epoch + 1;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_acc: correct as f64 / seen as f64,
            test_loss: eval.loss,
            test_acc: eval.top1,
            test_top5: eval.top5,
            lr,
            seconds: start.elapsed().as_secs_f64(),
            images_per_s: seen as f64 / train_seconds,
        };
        history.push(metrics.clone());
        let improved = eval.top1 > progress.best_top1;
        if improved {
            progress.best_top1 = eval.top1;
        }
        // Weights first, the checkpoint last: a crash in between leaves the
        // previous checkpoint, from which the epoch is simply redone.
        nn::save_safetensors(model.as_ref(), run.latest(), None)?;
        if improved {
            nn::save_safetensors(model.as_ref(), run.best(), None)?;
        }
        write_metrics(&run.metrics(), &history)?;
        plots::write(out, &history, &eval.confusion, &data.test.classes)?;
        checkpoint::save(&run.checkpoint(), model.as_ref(), &opt, progress)?;
        observer.epoch_end(&metrics);
        if observer.stop() {
            break;
        }
    }
    Ok(history)
}

/// Reads `metrics.jsonl`; a missing file is an empty history.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

fn write_metrics(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    write_atomic(path, |w| {
        for m in history {
            let line = serde_json::to_string(m).expect("metrics serialise");
            writeln!(w, "{line}").map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    })
}

/// One training step's forward and backward pass over (part of) a batch.
struct Step<'a> {
    model: &'a dyn Module,
    data: &'a Data,
    augment: Option<(Augment, u64, u64)>,
    label_smoothing: f32,
    /// Images in the whole batch: each part's loss is weighted by its share,
    /// so that the parts' gradients add up to the batch's.
    batch_size: usize,
}

impl Step<'_> {
    /// Adds the gradients of the part `indices` of the batch; returns its
    /// mean loss and how many of its images were classified right.
    fn run(&self, indices: &[usize]) -> Result<(f64, usize)> {
        let b = batch(
            &self.data.train,
            indices,
            &self.data.normalize,
            self.augment,
        )?;
        let logits = self.model.forward(&b.images)?;
        let loss = ops::cross_entropy(&logits, &b.labels, self.label_smoothing)?;
        let value = loss.item()? as f64;
        if value.is_finite() {
            loss.backward_with(vec![indices.len() as f32 / self.batch_size as f32])?;
        }
        let k = self.data.train.classes.len();
        let hits = logits
            .to_vec()
            .chunks_exact(k)
            .zip(&b.labels)
            .filter(|(row, l)| evaluate::argmax(row) == **l)
            .count();
        Ok((value, hits))
    }
}
