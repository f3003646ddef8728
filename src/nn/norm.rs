//! `BatchNorm2d`.

use super::{Kind, Module};
use crate::error::Result;
use crate::ops::{self, BatchNormArgs};
use crate::tensor::Tensor;

/// Batch normalisation over the channels of `[N, C, H, W]` (PyTorch
/// `nn.BatchNorm2d(C)`: eps 1e-5, momentum 0.1, affine, tracking running
/// statistics). Starts in training mode, like PyTorch.
pub struct BatchNorm2d {
    /// `γ`, `[C]`, initially ones.
    pub weight: Tensor,
    /// `β`, `[C]`, initially zeros.
    pub bias: Tensor,
    /// `[C]`, initially zeros.
    pub running_mean: Tensor,
    /// `[C]`, initially ones.
    pub running_var: Tensor,
    /// Training batches seen, `[]` (PyTorch stores it as int64).
    pub num_batches_tracked: Tensor,
    pub momentum: f32,
    pub eps: f32,
    training: bool,
}

impl BatchNorm2d {
    pub fn new(channels: usize) -> BatchNorm2d {
        BatchNorm2d {
            weight: Tensor::full(&[channels], 1.0).requires_grad(),
            bias: Tensor::zeros(&[channels]).requires_grad(),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::full(&[channels], 1.0),
            num_batches_tracked: Tensor::scalar(0.0),
            momentum: 0.1,
            eps: 1e-5,
            training: true,
        }
    }

    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl BatchNorm2d {
    /// `relu(self.forward(x))` in one pass (forward and backward).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let args = BatchNormArgs {
            training: self.training,
            momentum: self.momentum,
            eps: self.eps,
            relu,
        };
        let y = ops::batch_norm(
            x,
            Some((&self.running_mean, &self.running_var)),
            Some((&self.weight, &self.bias)),
            args,
        )?;
        if self.training {
            self.num_batches_tracked.data_mut()[0] += 1.0;
        }
        Ok(y)
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&format!("{prefix}weight"), &self.weight, Kind::Parameter);
        f(&format!("{prefix}bias"), &self.bias, Kind::Parameter);
        f(
            &format!("{prefix}running_mean"),
            &self.running_mean,
            Kind::Buffer,
        );
        f(
            &format!("{prefix}running_var"),
            &self.running_var,
            Kind::Buffer,
        );
        f(
            &format!("{prefix}num_batches_tracked"),
            &self.num_batches_tracked,
            Kind::Buffer,
        );
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
