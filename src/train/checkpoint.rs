//! Run-directory files: the resumable checkpoint (weights, momentum
//! buffers, counters in one safetensors file), the weights-only exports
//! `latest.safetensors` and `best.safetensors` (pytorchcv names, loadable
//! by `gconv predict` and by PyTorch), all written atomically.

use crate::error::{Error, Result};
use crate::io::{Entry, NamedArrays, StoredAs, read_safetensors, write_safetensors};
use crate::nn::{self, Module, Strictness};
use crate::optim::Sgd;
use std::collections::HashMap;
use std::path::Path;

const MODEL: &str = "model.";
const MOMENTUM: &str = "optimizer.momentum.";
const FORMAT: &str = "gconv-checkpoint-1";

/// Where a run stands after a completed epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: usize,
    /// Best test top-1 so far.
    pub best_top1: f64,
}

/// Writes weights, momentum buffers and progress into one file. All
/// randomness of a run derives from its seed and the epoch, so this is the
/// whole state needed to continue bit for bit.
pub fn save(path: &Path, model: &dyn Module, opt: &Sgd, progress: Progress) -> Result<()> {
    let state = nn::state_dict(model);
    let values: Vec<(String, Vec<usize>, Vec<f32>, StoredAs)> = state
        .iter()
        .map(|(n, t)| {
            (
                format!("{MODEL}{n}"),
                t.shape().to_vec(),
                t.to_vec(),
                nn::stored_as(n),
            )
        })
        .chain(
            opt.state()
                .into_iter()
                .map(|(n, s, v)| (format!("{MOMENTUM}{n}"), s, v, StoredAs::F32)),
        )
        .collect();
    let entries: Vec<Entry<'_>> = values
        .iter()
        .map(|(name, shape, values, stored_as)| Entry {
            name,
            shape,
            values,
            stored_as: *stored_as,
        })
        .collect();
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("epoch".to_string(), progress.epoch.to_string()),
        ("step".to_string(), progress.step.to_string()),
        // Exact: the shortest representation that parses back to the same f64.
        ("best_top1".to_string(), format!("{:?}", progress.best_top1)),
    ]);
    write_safetensors(path, &entries, Some(metadata))
}

/// Restores a checkpoint written by [`save`] into `model` and `opt`.
pub fn load(path: &Path, model: &dyn Module, opt: &mut Sgd) -> Result<Progress> {
    let loaded = read_safetensors(path)?;
    let bad = |reason: String| Error::format(path, reason);
    let meta = &loaded.metadata;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a gconv checkpoint (format {:?})",
            meta.get("format")
        )));
    }
    let number = |key: &str| -> Result<f64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata {key:?} missing or not a number")))
    };
    let progress = Progress {
        epoch: number("epoch")? as usize,
        step: number("step")? as usize,
        best_top1: number("best_top1")?,
    };
    let mut weights = NamedArrays::new();
    let mut momentum = NamedArrays::new();
    for (name, value) in loaded.arrays {
        if let Some(n) = name.strip_prefix(MODEL) {
            weights.insert(n.to_string(), value);
        } else if let Some(n) = name.strip_prefix(MOMENTUM) {
            momentum.insert(n.to_string(), value);
        } else {
            return Err(bad(format!("unexpected tensor {name}")));
        }
    }
    nn::load_state_dict(model, &weights, Strictness::Strict).map_err(|e| bad(e.to_string()))?;
    opt.load_state(&momentum).map_err(|e| bad(e.to_string()))?;
    Ok(progress)
}
