//! `BatchNorm2d`.

use super::{Conv2d, Kind, Module};
use crate::error::Result;
use crate::ops::{self, BatchNormArgs};
use crate::tensor::{Tensor, is_grad_enabled, trace};
use std::cell::Cell;

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
        self.run(x, true, None)
    }

    /// `self(conv(x))`, or its ReLU when `relu`. For inference (evaluation
    /// mode, gradients off, no [`trace`] recording) without the ReLU, the
    /// normalisation is folded into the convolution — weights scaled by
    /// `γ / sqrt(var + eps)` per output channel, bias `β − mean · γ /
    /// sqrt(var + eps)` — which saves a pass over the output, where the
    /// output is at least as large as the weights. (With the ReLU the fused
    /// normalisation is that pass already.)
    pub fn after_conv(&self, conv: &Conv2d, x: &Tensor, relu: bool) -> Result<Tensor> {
        let c = &conv.config;
        // Folding rewrites the weights on every call; it pays where the
        // output (the pass it saves) is at least as large as the weights.
        let outputs =
            x.numel() / c.in_channels.max(1) * c.out_channels / (c.stride[0] * c.stride[1]);
        let folds = !relu
            && !self.training
            && !is_grad_enabled()
            && !trace::is_tracing()
            && self.weight.numel() == c.out_channels
            && outputs >= conv.weight.numel();
        if !folds {
            return self.run(&conv.forward(x)?, relu, None);
        }
        let (weight, bias) = self.folded(conv)?;
        ops::conv2d(x, &weight, Some(&bias), conv.config.args())
    }

    /// `relu(self(conv(x)) + residual)` (a residual unit's end). In
    /// training the normalisation, the residual and the ReLU are one pass
    /// over the output ([`ops::batch_norm_add_relu`]); otherwise, and
    /// inside a [`trace`] (so that summaries list the addition), it is
    /// [`after_conv`](Self::after_conv) followed by [`ops::add_relu`] under
    /// `scope` (see [`trace::scoped`]).
    pub fn after_conv_add_relu(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        residual: &Tensor,
        scope: Option<&'static str>,
    ) -> Result<Tensor> {
        if self.training && !trace::is_tracing() {
            return self.run(&conv.forward(x)?, true, Some(residual));
        }
        let y = self.after_conv(conv, x, false)?;
        match scope {
            Some(scope) => trace::scoped(scope, || ops::add_relu(&y, residual)),
            None => ops::add_relu(&y, residual),
        }
    }

    /// The weight and bias of `bn(conv(·))` as one convolution (evaluation
    /// mode: running statistics).
    pub(crate) fn folded(&self, conv: &Conv2d) -> Result<(Tensor, Tensor)> {
        let (gamma, beta) = (self.weight.to_vec(), self.bias.to_vec());
        let (mean, var) = (self.running_mean.to_vec(), self.running_var.to_vec());
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| g / (v + self.eps).sqrt())
            .collect();
        let w = conv.weight.to_vec();
        let per_channel = w.len() / scale.len();
        let weight: Vec<f32> = w
            .chunks_exact(per_channel)
            .zip(&scale)
            .flat_map(|(row, &s)| row.iter().map(move |&v| v * s))
            .collect();
        let conv_bias = conv.bias.as_ref().map(Tensor::to_vec);
        let bias: Vec<f32> = (0..scale.len())
            .map(|c| {
                let b = conv_bias.as_ref().map_or(0.0, |b| b[c]);
                beta[c] + (b - mean[c]) * scale[c]
            })
            .collect();
        Ok((
            Tensor::from_vec(weight, conv.weight.shape())?,
            Tensor::from_vec(bias, &[scale.len()])?,
        ))
    }

    /// `self(x)`, its ReLU when `relu`, or `relu(self(x) + residual)`.
    fn run(&self, x: &Tensor, relu: bool, residual: Option<&Tensor>) -> Result<Tensor> {
        let args = BatchNormArgs {
            training: self.training,
            momentum: self.momentum,
            eps: self.eps,
            relu,
        };
        let tracks = !self.training || TRACKS_RUNNING_STATS.with(Cell::get);
        let running = tracks.then_some((&self.running_mean, &self.running_var));
        let affine = Some((&self.weight, &self.bias));
        let y = match residual {
            Some(r) => ops::batch_norm_add_relu(x, r, running, affine, args)?,
            None => ops::batch_norm(x, running, affine, args)?,
        };
        if self.training && tracks {
            self.num_batches_tracked.data_mut()[0] += 1.0;
        }
        Ok(y)
    }
}

thread_local! {
    static TRACKS_RUNNING_STATS: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` (a forward pass in training mode) with batch norm using batch
/// statistics without updating the running ones: the second replica of a
/// data-parallel step, whose statistics would otherwise race with the
/// first's.
pub fn without_running_stats<R>(f: impl FnOnce() -> R) -> R {
    // Restores the previous setting on return and on unwinding alike.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRACKS_RUNNING_STATS.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TRACKS_RUNNING_STATS.with(|t| t.replace(false)));
    f()
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false, None)
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
