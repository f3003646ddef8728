//! `Conv2d`: a grouped 2-D convolution layer.

use super::{BatchNorm2d, Kind, Module, init};
use crate::error::{Error, Result};
use crate::infer::{Builder, ConvSpec, Epilogue, Value};
use crate::ops::{self, Conv2dArgs};
use crate::tensor::Tensor;
use rand::Rng;

/// Configuration of a [`Conv2d`], with PyTorch's defaults from
/// [`Conv2dConfig::new`]: stride 1, padding 0, dilation 1, groups 1, bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    /// Must divide both channel counts; `in_channels` makes it depthwise.
    pub groups: usize,
    pub bias: bool,
}

impl Conv2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: [usize; 2]) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }

    /// The weight's shape `[C_out, C_in / groups, kH, kW]`; errors when
    /// `groups` does not divide the channel counts or a size is zero.
    pub fn weight_shape(&self) -> Result<[usize; 4]> {
        let c = self;
        crate::kernels::conv::check_groups("Conv2d", c.groups, [c.in_channels, c.out_channels])?;
        let sizes = [
            c.in_channels,
            c.out_channels,
            c.kernel_size[0],
            c.kernel_size[1],
        ];
        if sizes.contains(&0) || c.stride.contains(&0) || c.dilation.contains(&0) {
            return Err(Error::invalid(format!(
                "Conv2d: sizes must be positive, got {c:?}"
            )));
        }
        Ok([
            c.out_channels,
            c.in_channels / c.groups,
            c.kernel_size[0],
            c.kernel_size[1],
        ])
    }

    pub(crate) fn args(&self) -> Conv2dArgs {
        Conv2dArgs {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

/// A convolution layer (PyTorch `nn.Conv2d`): input `[N, C_in, H, W]`,
/// output `[N, C_out, H_out, W_out]`.
pub struct Conv2d {
    pub config: Conv2dConfig,
    /// `[C_out, C_in / groups, kH, kW]`.
    pub weight: Tensor,
    /// `[C_out]`.
    pub bias: Option<Tensor>,
}

impl Conv2d {
    /// A layer with PyTorch's default initialisation drawn from `rng`.
    /// Errors when `groups` does not divide the channel counts or a size
    /// is zero.
    pub fn new(config: Conv2dConfig, rng: &mut impl Rng) -> Result<Conv2d> {
        let shape = config.weight_shape()?;
        let fan_in = shape[1] * shape[2] * shape[3];
        let (weight, bias) = init::default_weight_and_bias(&shape, fan_in, config.bias, rng);
        Ok(Conv2d {
            config,
            weight,
            bias,
        })
    }

    /// Multiply-adds of one forward pass over an `[N, C_in, H, W]` input
    /// of height and width `input`.
    pub fn macs(&self, batch: usize, input: [usize; 2]) -> Result<usize> {
        let c = &self.config;
        let s = crate::kernels::Conv2dShape {
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            ..crate::kernels::Conv2dShape::new(
                batch,
                c.in_channels,
                c.out_channels,
                input,
                c.kernel_size,
                c.groups,
            )
        }
        .validate()?;
        Ok(s.macs())
    }

    /// `self(channel_shuffle(x, groups))`, the shuffle read in place where
    /// the layer is depthwise ([`ops::conv2d_after_shuffle`]).
    pub fn forward_after_shuffle(&self, x: &Tensor, groups: usize) -> Result<Tensor> {
        ops::conv2d_after_shuffle(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.config.args(),
            groups,
        )
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.config.args())
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&format!("{prefix}weight"), &self.weight, Kind::Parameter);
        if let Some(b) = &self.bias {
            f(&format!("{prefix}bias"), b, Kind::Parameter);
        }
    }

    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        plan.conv(x, self.spec(None)?, Epilogue::default())
    }
}

impl Conv2d {
    /// The layer as an inference convolution, followed by `bn` (evaluation
    /// mode) folded into its weights and bias when given.
    pub fn spec(&self, bn: Option<&BatchNorm2d>) -> Result<ConvSpec> {
        let (weight, bias) = match bn {
            Some(bn) if bn.weight.numel() != self.config.out_channels => {
                return Err(Error::invalid(format!(
                    "cannot fold a batch norm of {} channels into a conv with {} outputs",
                    bn.weight.numel(),
                    self.config.out_channels
                )));
            }
            Some(bn) => {
                let (w, b) = bn.folded(self)?;
                (w.to_vec(), b.to_vec())
            }
            None => (
                self.weight.to_vec(),
                self.bias
                    .as_ref()
                    .map_or_else(|| vec![0.0; self.config.out_channels], Tensor::to_vec),
            ),
        };
        let c = &self.config;
        Ok(ConvSpec {
            weight,
            bias,
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel_size,
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: c.groups,
        })
    }
}
