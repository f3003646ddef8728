//! `ConvBlock`: convolution (no bias) + batch norm + optional ReLU, named
//! `conv` and `bn` like pytorchcv's `conv1x1_block` / `conv3x3_block`.

use crate::error::Result;
use crate::infer::{Builder, Epilogue, Value};
use crate::nn::{BatchNorm2d, Conv2d, Conv2dConfig, Kind, Linear, Module};
use crate::ops::{self, Pool2dArgs};
use crate::tensor::Tensor;
use crate::tensor::trace::scoped;
use rand::Rng;

pub struct ConvBlock {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
    pub relu: bool,
}

impl ConvBlock {
    /// A `k × k` block with padding `k / 2`, `groups` and `stride`.
    pub fn new(
        [cin, cout]: [usize; 2],
        k: usize,
        stride: usize,
        groups: usize,
        relu: bool,
        rng: &mut impl Rng,
    ) -> Result<ConvBlock> {
        Ok(ConvBlock {
            conv: kaiming_conv([cin, cout], k, stride, groups, rng)?,
            bn: BatchNorm2d::new(cout),
            relu,
        })
    }
}

/// A bias-free `k × k` convolution (padding `k / 2`) initialised as
/// pytorchcv does: `kaiming_uniform_` with its defaults (ReLU gain).
pub(crate) fn kaiming_conv(
    [cin, cout]: [usize; 2],
    k: usize,
    stride: usize,
    groups: usize,
    rng: &mut impl Rng,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        stride: [stride; 2],
        padding: [k / 2; 2],
        groups,
        bias: false,
        ..Conv2dConfig::new(cin, cout, [k, k])
    };
    let shape = config.weight_shape()?;
    let fan_in = shape[1] * shape[2] * shape[3];
    let gain = crate::nn::init::leaky_relu_gain(0.0);
    let weight = crate::nn::init::kaiming_uniform(&shape, fan_in, gain, rng).requires_grad();
    Ok(Conv2d {
        config,
        weight,
        bias: None,
    })
}

impl ConvBlock {
    /// `relu(self.forward(x) + residual)`, the addition and the ReLU in
    /// batch norm's output pass when training (see
    /// [`BatchNorm2d::after_conv_add_relu`], which places the addition
    /// under `scope` in summaries).
    pub fn forward_add_relu(
        &self,
        x: &Tensor,
        residual: &Tensor,
        scope: Option<&'static str>,
    ) -> Result<Tensor> {
        self.bn.after_conv_add_relu(&self.conv, x, residual, scope)
    }

    /// The block in an inference plan, batch norm folded, followed by
    /// `epilogue` (whose ReLU is the block's own, or forced on).
    pub fn lower_with(&self, plan: &mut Builder, x: Value, epilogue: Epilogue) -> Result<Value> {
        let relu = self.relu || epilogue.relu;
        plan.conv(
            x,
            self.conv.spec(Some(&self.bn))?,
            Epilogue { relu, ..epilogue },
        )
    }
}

impl Module for ConvBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.after_conv(&self.conv, x, self.relu)
    }

    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        self.lower_with(plan, x, Epilogue::default())
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.conv.visit(&format!("{prefix}conv."), f);
        self.bn.visit(&format!("{prefix}bn."), f);
    }

    fn set_training(&mut self, training: bool) {
        self.bn.set_training(training);
    }
}

/// The 3×3, stride-2, padding-1 window of the ImageNet stems' max pool and
/// of ShuffleNet's downsampling shortcut.
pub(crate) const POOL_3X3_S2: Pool2dArgs = Pool2dArgs {
    kernel_size: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
};

/// The body and head shared by both networks: `stages[i][j]` is
/// `features.stage{i+1}.unit{j+1}`, followed by global average pooling and
/// the `output` classifier.
pub(crate) struct Trunk<U> {
    pub stages: Vec<Vec<U>>,
    pub output: Linear,
}

impl<U: Module> Trunk<U> {
    /// Runs the units, pools globally and classifies: `[N, C, H, W] → [N, classes]`.
    pub fn forward(&self, mut y: Tensor) -> Result<Tensor> {
        for unit in self.stages.iter().flatten() {
            y = unit.forward(&y)?;
        }
        let pooled = scoped("features", || ops::global_avg_pool2d(&y))?;
        self.output.forward(&pooled.flatten()?)
    }

    /// The units, global pooling and classifier in an inference plan.
    pub fn lower(&self, plan: &mut Builder, mut y: Value) -> Result<Value> {
        for unit in self.stages.iter().flatten() {
            y = unit.lower(plan, y)?;
        }
        let out = &self.output;
        let classes = out.weight.shape()[0];
        let bias = out
            .bias
            .as_ref()
            .map_or_else(|| vec![0.0; classes], Tensor::to_vec);
        plan.head(y, out.weight.to_vec(), bias)
    }

    pub fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, unit) in stage.iter().enumerate() {
                unit.visit(
                    &format!("{prefix}features.stage{}.unit{}.", i + 1, j + 1),
                    f,
                );
            }
        }
        self.output.visit(&format!("{prefix}output."), f);
    }

    pub fn set_training(&mut self, training: bool) {
        self.stages
            .iter_mut()
            .flatten()
            .for_each(|u| u.set_training(training));
    }
}
