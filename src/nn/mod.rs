//! Modules: layers that own named parameters (tracked tensors an optimizer
//! updates) and buffers (state such as running statistics), with train and
//! eval modes, composed into networks. Names follow PyTorch's `state_dict`
//! (`features.0.conv.weight`, `bn.running_mean`), so that weights can move
//! between gconv and PyTorch.

mod conv;
pub mod init;
mod layers;
mod norm;
mod sequential;
mod state;

pub use conv::{Conv2d, Conv2dConfig};
pub use layers::{AvgPool2d, ChannelShuffle, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU};
pub use norm::BatchNorm2d;
pub use sequential::Sequential;
pub use state::{load_state_dict, num_parameters, parameters, state_dict};

use crate::error::Result;
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
}

#[cfg(test)]
mod tests;
