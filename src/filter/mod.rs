//! Image filtering as in MATLAB: `conv2(im2double(I), k, mode)` followed by
//! `normalize`, with named kernels.

mod kernels;
mod normalize;

pub use kernels::{parse_kernel, parse_matrix};
pub use normalize::{NormScope, Normalize, normalize};

use crate::error::{Error, Result};
use crate::signal::{Method, Mode, conv_with};
use ndarray::ArrayD;

/// Convolves an image (`[H, W]`, or `[H, W, C]` with each channel filtered
/// separately) with the 2-D `kernel` (true convolution: the kernel is
/// rotated 180°, as `conv2` does).
pub fn filter_image(
    image: &ArrayD<f64>,
    kernel: &ArrayD<f64>,
    mode: Mode,
    method: Method,
) -> Result<ArrayD<f64>> {
    if kernel.ndim() != 2 {
        return Err(Error::invalid(format!(
            "an image kernel must be a matrix, got shape {:?}",
            kernel.shape()
        )));
    }
    if !(2..=3).contains(&image.ndim()) {
        return Err(Error::invalid(format!(
            "an image must have shape [H, W] or [H, W, C], got {:?}",
            image.shape()
        )));
    }
    // A 2-D kernel is aligned to [kh, kw, 1]: every channel on its own.
    conv_with(&image.view(), &kernel.view(), mode, method)
}
