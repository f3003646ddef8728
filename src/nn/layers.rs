//! Layers without buffers: `Linear`, `ReLU`, `ChannelShuffle`, pools,
//! `Flatten`.

use super::{Kind, Module, init};
use crate::error::Result;
use crate::ops::{self, Pool2dArgs};
use crate::tensor::Tensor;
use rand::Rng;

/// A fully connected layer (PyTorch `nn.Linear`): `[N, in] → [N, out]`.
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation drawn from `rng`.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Linear {
        let (weight, bias) =
            init::default_weight_and_bias(&[out_features, in_features], in_features, bias, rng);
        Linear { weight, bias }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        f(&format!("{prefix}weight"), &self.weight, Kind::Parameter);
        if let Some(b) = &self.bias {
            f(&format!("{prefix}bias"), b, Kind::Parameter);
        }
    }
}

/// `max(x, 0)` element-wise.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReLU;

/// ShuffleNet's channel shuffle of `[N, C, H, W]`, `groups` dividing `C`.
#[derive(Clone, Copy, Debug)]
pub struct ChannelShuffle {
    pub groups: usize,
}

/// Max pooling of `[N, C, H, W]`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    pub args: Pool2dArgs,
}

/// Average pooling of `[N, C, H, W]` (padding counted in the divisor).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d {
    pub args: Pool2dArgs,
}

/// `[N, C, H, W] → [N, C, 1, 1]` plane means.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAvgPool2d;

/// `[N, ...] → [N, rest]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

/// Implements [`Module`] for a layer without parameters or buffers.
macro_rules! stateless {
    ($($name:ident => |$s:ident, $x:ident| $body:expr;)*) => {$(
        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                let $s = self;
                $body
            }

            fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, Kind)) {}
        }
    )*};
}

stateless! {
    ReLU => |_s, x| ops::relu(x);
    ChannelShuffle => |s, x| ops::channel_shuffle(x, s.groups);
    MaxPool2d => |s, x| ops::max_pool2d(x, s.args);
    AvgPool2d => |s, x| ops::avg_pool2d(x, s.args);
    GlobalAvgPool2d => |_s, x| ops::global_avg_pool2d(x);
    Flatten => |_s, x| x.flatten();
}
