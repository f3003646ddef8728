//! Differentiable operations on [`Tensor`]s with PyTorch's semantics and,
//! where it makes sense, its argument names (`torch.nn.functional`). Each
//! checks its arguments (an error names the shapes), runs a kernel from
//! [`crate::kernels`], and records its backward pass when gradients are
//! needed.

mod channels;
mod conv;
mod elementwise;
mod linear;
mod loss;
mod norm;
mod pool;

pub use channels::{cat, channel_shuffle};
pub use conv::{Conv2dArgs, conv2d, conv2d_after_shuffle};
pub use elementwise::{add, add_relu, mul, relu, sum};
pub use linear::linear;
pub use loss::{cross_entropy, log_softmax, softmax};
pub use norm::{BatchNormArgs, batch_norm, batch_norm_add_relu};
pub use pool::{Pool2dArgs, avg_pool2d, global_avg_pool2d, max_pool2d};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The shape of an `[N, C, H, W]` tensor, or an error naming `op`.
fn nchw(op: &str, x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(Error::invalid(format!(
            "{op}: expected an [N, C, H, W] input, got shape {s:?}"
        ))),
    }
}

/// `len` zeros, written by all threads when `len` is large: outputs and
/// gradients of tens of megabytes are zeroed before the kernels add into
/// them, and one thread alone would leave the others idle.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    if len < 4 * CHUNK {
        return vec![0.0; len];
    }
    crate::kernels::par_collect(len, CHUNK, |_, _| {})
}

/// Gradient buffers of the given lengths from `alloc` for the inputs that
/// `needs` one, empty for the others: zeroed for a backward kernel that
/// adds into them, or [`recycle::take`] for one that overwrites them
/// whole.
///
/// [`recycle::take`]: crate::tensor::recycle::take
fn grad_buffers<const K: usize>(
    needs: &[bool],
    lens: [usize; K],
    alloc: impl Fn(usize) -> Vec<f32>,
) -> [Vec<f32>; K] {
    let mut i = 0;
    lens.map(|len| {
        let need = needs.get(i).copied().unwrap_or(false);
        i += 1;
        alloc(if need { len } else { 0 })
    })
}

/// Views of an op's gradient buffers for its backward kernel: `Some`
/// where `needs[i]` (input `i` is tracked).
fn wanted<'a, const K: usize>(
    needs: &[bool],
    grads: &'a mut [Vec<f32>; K],
) -> [Option<&'a mut [f32]>; K] {
    let mut i = 0;
    grads.each_mut().map(|g| {
        let need = needs.get(i).copied().unwrap_or(false);
        i += 1;
        need.then_some(g.as_mut_slice())
    })
}

/// The gradients of [`wanted`] inputs, `None` for the others.
fn keep_wanted<const K: usize>(needs: &[bool], grads: [Vec<f32>; K]) -> Vec<Option<Vec<f32>>> {
    grads
        .into_iter()
        .enumerate()
        .map(|(i, g)| needs.get(i).copied().unwrap_or(false).then_some(g))
        .collect()
}

#[cfg(test)]
mod tests;
