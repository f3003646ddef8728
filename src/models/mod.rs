//! The seed article's networks, built from [`crate::nn`] with pytorchcv's
//! structure and `state_dict` names: ResNeXt (CIFAR and ImageNet) and
//! ShuffleNet v1, plus a registry of model names.

mod blocks;
mod registry;
mod resnext;
mod shufflenet;

pub use blocks::ConvBlock;
pub use registry::{Head, build, build_for, input_shape, names};
pub use resnext::{ResNeXt, ResNeXtBottleneck, ResNeXtConfig, ResNeXtUnit};
pub use shufflenet::{ShuffleNet, ShuffleNetConfig, ShuffleUnit};
