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
//! - [`random`]: seeded data for benchmarks and demos.

pub mod error;
pub mod filter;
pub mod io;
pub mod kernels;
pub mod random;
pub mod signal;
pub mod simd;

pub use error::{Error, Result};
