//! gconv: convolution as signal processing and deep learning use it.
//!
//! - [`signal`]: MATLAB-compatible `conv`/`conv2`/`convn` (modes full, same,
//!   valid), separable and correlation forms, exact for integers, with direct
//!   and FFT algorithms.
//! - [`filter`]: image filtering as in MATLAB (`im2double`, `rgb2gray`,
//!   `conv2`, `normalize`) with named kernels.
//! - [`io`]: `.npy` arrays and images, written atomically.
//! - [`kernels`]: grouped convolution and channel shuffle on NCHW slices,
//!   with reference implementations (the engine of the networks grows here).
//! - [`tensor`]: float32 tensors with reverse-mode automatic differentiation.
//! - [`ops`]: differentiable operations (PyTorch's `torch.nn.functional`).
//! - [`nn`]: modules with named parameters (`Conv2d`, `BatchNorm2d`, …).
//! - [`models`]: ResNeXt and ShuffleNet v1 with pytorchcv's names.
//! - [`infer`]: inference plans, models lowered into fused steps.
//! - [`random`]: seeded data for benchmarks and demos.

// The kernels' documentation names the private constants and helpers that
// set their block sizes; CI builds it with `--document-private-items`, where
// those links resolve (and a broken one is an error).
#![allow(rustdoc::private_intra_doc_links)]

pub mod data;
pub mod error;
pub mod filter;
pub mod infer;
pub mod io;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod optim;
pub mod parallel;

pub mod ops;
pub mod random;
pub mod signal;
pub mod simd;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tensor::{Tensor, no_grad};
