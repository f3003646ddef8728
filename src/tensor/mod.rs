//! `Tensor`: float32 values with a shape (NCHW for images, like PyTorch),
//! contiguous row-major storage shared between clones, and reverse-mode
//! automatic differentiation.
//!
//! Operations (in [`crate::ops`]) record themselves on the graph when grad
//! mode is on and one of their inputs requires a gradient; `loss.backward()`
//! then walks the graph once in reverse topological order and accumulates
//! gradients into the leaves that require them (parameters), as PyTorch
//! does. Under [`no_grad`] nothing is recorded and nothing is saved.

mod autograd;
pub(crate) mod recycle;
pub mod trace;

pub use autograd::{GradMode, is_grad_enabled, no_grad};

use crate::error::{Error, Result};
use rand::Rng;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A float32 n-dimensional array that can take part in automatic
/// differentiation. Cloning is cheap: clones share values and gradient.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    shape: Vec<usize>,
    /// Row-major values; shared with reshaped views of the same tensor.
    data: Arc<RwLock<Vec<f32>>>,
    requires_grad: bool,
    /// Made by an operation (gradients pass through) rather than a leaf
    /// (gradients accumulate in `grad`).
    is_result: bool,
    /// Accumulated gradient of a leaf (same length as `data`).
    grad: Mutex<Option<Vec<f32>>>,
    /// How a non-leaf was computed; taken (freed) by `backward`.
    node: Mutex<Option<autograd::Node>>,
}

/// The values of a tensor that no view shares any more go back to the
/// [`recycle`] pool.
impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(values) = Arc::get_mut(&mut self.data) {
            let values = values.get_mut().unwrap_or_else(|e| e.into_inner());
            recycle::give(std::mem::take(values));
        }
    }
}

impl Tensor {
    /// A tensor that owns `data`; errors when its length is not the product
    /// of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(Error::invalid(format!(
                "tensor of shape {shape:?} needs {numel} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor::leaf(data, shape.to_vec(), false))
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let numel = shape.iter().product();
        Tensor::leaf(vec![value; numel], shape.to_vec(), false)
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::leaf(vec![value], Vec::new(), false)
    }

    /// Values uniform in `[low, high)` from `rng`.
    pub fn uniform(shape: &[usize], low: f32, high: f32, rng: &mut impl Rng) -> Tensor {
        let numel = shape.iter().product();
        let data = (0..numel)
            .map(|_| low + (high - low) * rng.random::<f32>())
            .collect();
        Tensor::leaf(data, shape.to_vec(), false)
    }

    /// Standard normal values from `rng` (Box–Muller).
    pub fn randn(shape: &[usize], rng: &mut impl Rng) -> Tensor {
        let numel = shape.iter().product();
        let data = (0..numel)
            .map(|_| {
                let u1 = 1.0 - rng.random::<f64>();
                let u2 = rng.random::<f64>();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Tensor::leaf(data, shape.to_vec(), false)
    }

    /// The same values as a new leaf that requires a gradient (a parameter).
    pub fn requires_grad(self) -> Tensor {
        Tensor::leaf(self.to_vec(), self.0.shape.clone(), true)
    }

    /// The same values as a new leaf outside the graph (PyTorch `detach`,
    /// but a copy: the result never shares storage with a graph tensor).
    pub fn detach(&self) -> Tensor {
        Tensor::leaf(self.to_vec(), self.0.shape.clone(), false)
    }

    fn leaf(data: Vec<f32>, shape: Vec<usize>, requires_grad: bool) -> Tensor {
        Tensor::new(Arc::new(RwLock::new(data)), shape, requires_grad, false)
    }

    fn new(
        data: Arc<RwLock<Vec<f32>>>,
        shape: Vec<usize>,
        requires_grad: bool,
        is_result: bool,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            shape,
            data,
            requires_grad,
            is_result,
            grad: Mutex::new(None),
            node: Mutex::new(None),
        }))
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// Whether gradients flow to or through this tensor.
    pub fn is_tracked(&self) -> bool {
        self.0.requires_grad
    }

    /// Read access to the values (row-major).
    pub fn data(&self) -> RwLockReadGuard<'_, Vec<f32>> {
        self.0.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access to the values, for optimizers and running statistics.
    /// Changing values that a recorded graph saved changes its gradients.
    pub fn data_mut(&self) -> RwLockWriteGuard<'_, Vec<f32>> {
        self.0.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the values.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().clone()
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data().as_slice() {
            [v] => Ok(*v),
            d => Err(Error::invalid(format!(
                "item() needs a tensor with one element, this one has {}",
                d.len()
            ))),
        }
    }

    /// The accumulated gradient of a leaf, if `backward` reached it.
    pub fn grad(&self) -> Option<Tensor> {
        let g = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .map(|g| Tensor::leaf(g.clone(), self.0.shape.clone(), false))
    }

    /// Forgets the accumulated gradient (PyTorch `zero_grad(set_to_none)`).
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs `f` on the accumulated gradient of a leaf, if there is one
    /// (optimizers read it without a copy).
    pub fn with_grad<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        let g = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        g.as_deref().map(f)
    }

    /// A tensor with the same values (the same storage) and another shape
    /// of equal size; gradients flow through.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(Error::invalid(format!(
                "cannot reshape {:?} ({} elements) to {shape:?} ({numel} elements)",
                self.shape(),
                self.numel()
            )));
        }
        let recorded = autograd::records(&[self]);
        let out = Tensor::new(Arc::clone(&self.0.data), shape.to_vec(), recorded, recorded);
        if !recorded {
            return Ok(out);
        }
        autograd::attach(&out, "reshape", &[self], |g, _| Ok(vec![Some(g)]));
        Ok(out)
    }

    /// `[N, ...] → [N, rest]` (PyTorch `flatten(1)`).
    pub fn flatten(&self) -> Result<Tensor> {
        let n = self.shape().first().copied().unwrap_or(1);
        self.reshape(&[n, self.numel() / n.max(1)])
    }

    /// The result of an operation: a new tensor holding `data`, recorded on
    /// the graph with `backward` when grad mode is on and some input is
    /// tracked. `backward(dy, needs)` returns one gradient per input (`None`
    /// where `needs[i]` is false).
    pub(crate) fn from_op(
        name: &'static str,
        data: Vec<f32>,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl Fn(&[f32], &[bool]) -> Result<Vec<Option<Vec<f32>>>> + Send + Sync + 'static,
    ) -> Tensor {
        Tensor::from_op_in_place(name, data, shape, inputs, move |dy, needs, _| {
            let grads = backward(&dy, needs);
            recycle::give(dy);
            grads
        })
    }

    /// [`Tensor::from_op`] for an operation whose backward computes an
    /// input's gradient in the buffer of the output gradient, or from the
    /// operation's own output: `backward(dy, needs, y)` gets `dy` by value
    /// and reads the output's values `y` (shared with the result, not a
    /// copy; the graph keeps them alive, not the result tensor).
    pub(crate) fn from_op_in_place(
        name: &'static str,
        data: Vec<f32>,
        shape: Vec<usize>,
        inputs: &[&Tensor],
        backward: impl Fn(Vec<f32>, &[bool], &[f32]) -> Result<Vec<Option<Vec<f32>>>>
        + Send
        + Sync
        + 'static,
    ) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        let recorded = autograd::records(inputs);
        let values = Arc::new(RwLock::new(data));
        let out = Tensor::new(Arc::clone(&values), shape, recorded, recorded);
        if recorded {
            autograd::attach(&out, name, inputs, move |dy, needs| {
                let y = values.read().unwrap_or_else(|e| e.into_inner());
                backward(dy, needs, &y)
            });
        }
        trace::record(name, inputs, &out);
        out
    }

    /// Identity of the tensor node (not of its storage).
    fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Whether `self` and `other` are the same tensor (clones of one
    /// another), not merely equal.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        let head: Vec<f32> = data.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, tracked={}, values={head:?}{})",
            self.shape(),
            self.is_tracked(),
            if data.len() > 8 { " …" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests;
