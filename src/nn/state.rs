//! A module's named tensors: parameters for optimizers, and the
//! `state_dict` view (parameters and buffers) for saving and loading.

use super::{Kind, Module};
use crate::error::{Error, Result};
use crate::io::{Entry, NamedArrays, StoredAs, read_safetensors, write_safetensors};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Every parameter and buffer by name, in PyTorch's `state_dict` order.
/// The tensors share storage with the module.
pub fn state_dict(m: &dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, _| {
        out.push((name.to_string(), t.clone()))
    });
    out
}

/// The learnable parameters by name (what an optimizer updates).
pub fn parameters(m: &dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit("", &mut |name, t, kind| {
        if kind == Kind::Parameter {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// The number of learnable values.
pub fn num_parameters(m: &dyn Module) -> usize {
    parameters(m).iter().map(|(_, t)| t.numel()).sum()
}

/// How [`load_state_dict`] treats names present on one side only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Every module tensor must be given and nothing else (PyTorch's
    /// default `strict=True`).
    Strict,
    /// Missing and unexpected names are reported, not errors; the tensors
    /// that match are loaded (`strict=False`).
    Lenient,
}

/// What a lenient load left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module tensors the values did not have (they keep their values).
    pub missing: Vec<String>,
    /// Values the module has no tensor for (ignored).
    pub unexpected: Vec<String>,
}

/// Copies `values` (name → shape and row-major values) into the module's
/// parameters and buffers. A shape mismatch is always an error; missing and
/// unexpected names are errors when `strict`. Nothing is changed unless the
/// load succeeds. A one-element value fits a shape-`[]` tensor (PyTorch
/// scalars such as `num_batches_tracked`).
pub fn load_state_dict(
    m: &dyn Module,
    values: &NamedArrays,
    strictness: Strictness,
) -> Result<LoadReport> {
    let own = state_dict(m);
    let mut report = LoadReport::default();
    let mut problems = Vec::new();
    for (name, t) in &own {
        match values.get(name) {
            None => report.missing.push(name.clone()),
            Some((shape, _))
                if shape.as_slice() != t.shape()
                    && !(t.shape().is_empty() && shape.iter().product::<usize>() == 1) =>
            {
                problems.push(format!(
                    "{name}: shape {shape:?}, the module has {:?}",
                    t.shape()
                ))
            }
            Some((shape, data)) if data.len() != shape.iter().product::<usize>() => {
                problems.push(format!("{name}: {} values for shape {shape:?}", data.len()))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
    report.unexpected = values
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    if strictness == Strictness::Strict {
        let missing = report.missing.iter().map(|n| format!("missing {n}"));
        let unexpected = report.unexpected.iter().map(|n| format!("unexpected {n}"));
        problems = missing.chain(unexpected).chain(problems).collect();
    }
    if !problems.is_empty() {
        let shown = problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let more = problems.len().saturating_sub(5);
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        return Err(Error::invalid(format!("load_state_dict: {shown}{more}")));
    }
    for (name, t) in own {
        if let Some((_, data)) = values.get(&name) {
            t.data_mut().copy_from_slice(data);
        }
    }
    Ok(report)
}

/// Saves the module's `state_dict` as a safetensors file (atomically) with
/// PyTorch's names and dtypes (`num_batches_tracked` as int64), so that
/// `model.load_state_dict(safetensors.torch.load_file(path))` reads it.
pub fn save_safetensors(
    m: &dyn Module,
    path: impl AsRef<Path>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let state = state_dict(m);
    let values: Vec<Vec<f32>> = state.iter().map(|(_, t)| t.to_vec()).collect();
    let entries: Vec<Entry<'_>> = state
        .iter()
        .zip(&values)
        .map(|((name, t), values)| Entry {
            name,
            shape: t.shape(),
            values,
            stored_as: stored_as(name),
        })
        .collect();
    write_safetensors(path, &entries, metadata)
}

/// How PyTorch stores the state_dict entry `name`: batch-norm counters as
/// int64, everything else as float32.
pub fn stored_as(name: &str) -> StoredAs {
    if name.ends_with("num_batches_tracked") {
        StoredAs::I64
    } else {
        StoredAs::F32
    }
}

/// Loads a safetensors file (e.g. `safetensors.torch.save_file(
/// model.state_dict(), path)` of the pytorchcv model) into the module.
pub fn load_safetensors(
    m: &dyn Module,
    path: impl AsRef<Path>,
    strictness: Strictness,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let loaded = read_safetensors(path)?;
    load_state_dict(m, &loaded.arrays, strictness).map_err(|e| Error::format(path, e.to_string()))
}
