//! Modules: layers that own named parameters (tracked tensors an optimizer
//! updates) and buffers (state such as running statistics), with train and
//! eval modes, composed into networks. Names follow PyTorch's `state_dict`
//! (`features.0.conv.weight`, `bn.running_mean`), so that weights can move
//! between gconv and PyTorch.
//!
//! ```
//! use gconv::nn::{self, BatchNorm2d, ChannelShuffle, Conv2d, Conv2dConfig, Module, ReLU, Sequential};
//! use gconv::{ops, Tensor};
//! use rand::SeedableRng;
//!
//! # fn main() -> gconv::Result<()> {
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let conv = Conv2dConfig { groups: 3, bias: false, ..Conv2dConfig::new(6, 12, [1, 1]) };
//! let net = Sequential::new()
//!     .add("conv", Conv2d::new(conv, &mut rng)?) // weight [12, 2, 1, 1]
//!     .add("bn", BatchNorm2d::new(12))
//!     .add("activ", ReLU)
//!     .add("shuffle", ChannelShuffle { groups: 3 });
//! let x = Tensor::randn(&[8, 6, 14, 14], &mut rng); // NCHW
//! let y = ops::global_avg_pool2d(&net.forward(&x)?)?.flatten()?; // [8, 12]
//! let loss = ops::cross_entropy(&y, &[0, 1, 2, 3, 4, 5, 6, 7], 0.1)?;
//! loss.backward()?;
//! let names: Vec<String> = nn::parameters(&net).into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["conv.weight", "bn.weight", "bn.bias"]);
//! assert!(nn::parameters(&net).iter().all(|(_, p)| p.grad().is_some()));
//! # Ok(())
//! # }
//! ```

mod conv;
pub mod init;
mod layers;
mod norm;
mod sequential;
mod state;
mod summary;

pub use conv::{Conv2d, Conv2dConfig};
pub use layers::{AvgPool2d, ChannelShuffle, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU};
pub use norm::{BatchNorm2d, without_running_stats};
pub use sequential::Sequential;
pub use state::{
    LoadReport, Strictness, load_safetensors, load_state_dict, num_parameters, parameters,
    save_safetensors, state_dict, stored_as,
};
pub use summary::{Layer, Summary, summary};

use crate::error::{Error, Result};
use crate::infer::{Builder, Value};
use crate::tensor::Tensor;

/// What a named tensor of a module is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Learned by gradient descent (tracked).
    Parameter,
    /// State that is saved and loaded but not learned (running statistics,
    /// counters).
    Buffer,
}

/// A layer or a network of layers.
pub trait Module: Send + Sync {
    /// The layer's output for `x` (shapes documented by each module).
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Calls `f(name, tensor, kind)` for each of the module's parameters and
    /// buffers and those of its children, in PyTorch's `state_dict` order,
    /// with names prefixed by `prefix` (which, when not empty, ends with `.`).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind));

    /// Switches training mode (batch statistics) or evaluation mode
    /// (running statistics) for the module and its children.
    fn set_training(&mut self, _training: bool) {}

    /// Appends the module's forward pass in evaluation mode to an
    /// inference plan ([`crate::infer`]), on input `x`, and returns its
    /// output value. Batch norm is folded into the convolution before it.
    /// Modules without a lowering say so.
    fn lower(&self, _plan: &mut Builder, _x: Value) -> Result<Value> {
        Err(Error::invalid(format!(
            "{} has no inference lowering",
            std::any::type_name::<Self>()
        )))
    }
}

#[cfg(test)]
mod tests;
