//! A module's named tensors: parameters for optimizers, and the
//! `state_dict` view (parameters and buffers) for saving and loading.

use super::{Kind, Module};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

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

/// Copies `values` (name → shape and row-major values) into the module's
/// parameters and buffers. Strict, like PyTorch's default: every module
/// tensor must be present with its exact shape and no extra names may be
/// left over; nothing is changed unless everything fits.
pub fn load_state_dict(
    m: &dyn Module,
    values: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let own = state_dict(m);
    let mut problems = Vec::new();
    for (name, t) in &own {
        match values.get(name) {
            None => problems.push(format!("missing {name}")),
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
    let known: std::collections::HashSet<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
    problems.extend(
        values
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .map(|k| format!("unexpected {k}")),
    );
    if !problems.is_empty() {
        let shown = problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let more = problems.len().saturating_sub(5);
        return Err(Error::invalid(format!(
            "load_state_dict: {shown}{}",
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        )));
    }
    for (name, t) in own {
        t.data_mut().copy_from_slice(&values[&name].1);
    }
    Ok(())
}
