//! Convolution-network kernels on plain slices (NCHW, row-major): no
//! tensors, no autograd. Each kernel family has a plain reference
//! implementation, the oracle for faster versions and for gradient checks.

pub mod bench;
pub mod conv;
pub mod conv_gemm;
pub mod direct;
pub mod linear;
pub(crate) mod matmul;
pub mod norm;
mod phase;
pub mod pool;
pub mod shuffle;

pub use conv::Conv2dShape;

use crate::error::Result;

/// `y = conv2d(x, w) + bias` (float32) with the kernel that suits `s`:
/// [`direct`] for depthwise and few-channel groups with a spatial kernel,
/// [`conv_gemm`] otherwise.
pub fn conv2d_forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    if direct::suits(s) {
        direct::forward(s, x, w, bias, y)
    } else {
        conv_gemm::forward(s, x, w, bias, y)
    }
}

/// Gradients of `Σ dy · conv2d(x, w)` (those whose buffers are given) with
/// the kernel that suits `s`, as [`conv2d_forward`].
pub fn conv2d_backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
) -> Result<()> {
    if direct::suits(s) {
        direct::backward(s, x, w, dy, dx, dw, db)
    } else {
        conv_gemm::backward(s, x, w, dy, dx, dw, db)
    }
}

#[cfg(test)]
mod tests;
