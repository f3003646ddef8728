//! Convolution-network kernels on plain slices (NCHW, row-major): no
//! tensors, no autograd. Each kernel family has a plain reference
//! implementation, the oracle for faster versions and for gradient checks.

pub mod bench;
pub mod conv;
pub mod conv_gemm;
pub mod depthwise;
pub mod linear;
pub(crate) mod matmul;
pub mod norm;
pub mod pool;
pub mod shuffle;

pub use conv::Conv2dShape;
