//! The graph behind [`Tensor`]: each recorded result keeps its inputs and a
//! closure from its output gradient to its inputs' gradients. `backward`
//! orders the graph once (depth-first, reverse post-order), then runs each
//! node after every consumer of its output has added its share, so a tensor
//! used twice (a residual connection) receives the sum of both gradients.

use super::Tensor;
use crate::error::{Error, Result};
use std::cell::Cell;
use std::collections::HashMap;

/// The backward closure of one recorded operation.
type BackwardFn = Box<dyn Fn(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + Sync>;

pub(super) struct Node {
    name: &'static str,
    inputs: Vec<Tensor>,
    backward: BackwardFn,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether operations on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Grad mode switched off until the guard is dropped (PyTorch
/// `torch.no_grad()`); inference under it records and saves nothing.
pub struct GradMode {
    previous: bool,
}

impl GradMode {
    /// Switches grad mode off on this thread.
    pub fn off() -> GradMode {
        GradMode {
            previous: GRAD_ENABLED.with(|g| g.replace(false)),
        }
    }
}

impl Drop for GradMode {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with grad mode off.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = GradMode::off();
    f()
}

pub(super) fn records(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.is_tracked())
}

pub(super) fn attach(
    out: &Tensor,
    name: &'static str,
    inputs: &[&Tensor],
    backward: impl Fn(Vec<f32>, &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + Sync + 'static,
) {
    *lock(&out.0.node) = Some(Node {
        name,
        inputs: inputs.iter().map(|&t| t.clone()).collect(),
        backward: Box::new(backward),
    });
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tensor {
    /// Back-propagates from this one-element tensor (a loss): adds
    /// `∂self/∂leaf` to the gradient of every tracked leaf it depends on.
    /// The graph is freed as it is walked; a second call is an error, as in
    /// PyTorch.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::invalid(format!(
                "backward() needs a one-element tensor (a loss), this one has shape {:?}",
                self.shape()
            )));
        }
        self.backward_with(vec![1.0])
    }

    /// Back-propagates an explicit gradient of this tensor's values
    /// (PyTorch `y.backward(dy)`).
    pub fn backward_with(&self, grad: Vec<f32>) -> Result<()> {
        if grad.len() != self.numel() {
            return Err(Error::invalid(format!(
                "backward: gradient has {} values, the tensor {}",
                grad.len(),
                self.numel()
            )));
        }
        if !self.is_tracked() {
            return Err(Error::invalid(
                "backward: the tensor does not require a gradient (no tracked input, or computed under no_grad)",
            ));
        }
        let order = topological(self);
        let mut grads: HashMap<usize, Vec<f32>> = HashMap::from([(self.id(), grad)]);
        for t in order {
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            let Some(node) = lock(&t.0.node).take() else {
                if t.is_leaf() {
                    accumulate_leaf(&t, g);
                    continue;
                }
                return Err(Error::invalid(
                    "backward: the graph was already freed by an earlier backward()",
                ));
            };
            let needs: Vec<bool> = node.inputs.iter().map(Tensor::is_tracked).collect();
            let input_grads = (node.backward)(g, &needs)?;
            for ((input, grad), need) in node.inputs.iter().zip(input_grads).zip(needs) {
                let Some(grad) = grad.filter(|_| need) else {
                    continue;
                };
                if grad.len() != input.numel() {
                    return Err(Error::invalid(format!(
                        "backward of {}: gradient of {} values for an input of {}",
                        node.name,
                        grad.len(),
                        input.numel()
                    )));
                }
                match grads.get_mut(&input.id()) {
                    Some(sum) => {
                        add_into(sum, &grad);
                        super::recycle::give(grad);
                    }
                    None => {
                        grads.insert(input.id(), grad);
                    }
                }
            }
        }
        Ok(())
    }

    /// A tracked tensor that no operation produced (a parameter).
    fn is_leaf(&self) -> bool {
        self.is_tracked() && !self.0.is_result
    }
}

fn accumulate_leaf(t: &Tensor, g: Vec<f32>) {
    let mut slot = lock(&t.0.grad);
    match slot.as_mut() {
        Some(sum) => add_into(sum, &g),
        None => *slot = Some(g),
    }
}

/// `sum += g`, element-wise, split over the threads when large (the two
/// gradients of a residual connection's input are whole activations).
fn add_into(sum: &mut [f32], g: &[f32]) {
    use rayon::prelude::*;
    sum.par_iter_mut()
        .zip(g)
        .with_min_len(1 << 14)
        .for_each(|(s, v)| *s += v);
}

/// Tracked tensors reachable from `root`, each after all its consumers.
fn topological(root: &Tensor) -> Vec<Tensor> {
    let mut seen = std::collections::HashSet::new();
    let mut post = Vec::new();
    // Iterative depth-first search: (tensor, inputs already pushed).
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            post.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs: Vec<Tensor> = lock(&t.0.node)
            .as_ref()
            .map(|n| {
                n.inputs
                    .iter()
                    .filter(|i| i.is_tracked())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        stack.push((t, true));
        for i in inputs {
            if !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    post.reverse();
    post
}
