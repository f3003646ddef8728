//! Model names (pytorchcv's, extended to every ShuffleNet group count and
//! width) and their constructors.

use super::{ResNeXt, ResNeXtConfig, ShuffleNet, ShuffleNetConfig};
use crate::error::{Error, Result};
use crate::nn::Module;
use rand::Rng;

/// ShuffleNet width suffixes: 2×, 1.5×, 1×, 0.75×, 0.5×, 0.25×.
const WIDTHS: [(&str, f64); 6] = [
    ("w2", 2.0),
    ("w3d2", 1.5),
    ("w1", 1.0),
    ("w3d4", 0.75),
    ("wd2", 0.5),
    ("wd4", 0.25),
];

/// A registered ResNeXt: name, CIFAR depth (0 for ImageNet), ImageNet
/// units per stage, cardinality, base width, classes.
type ResNeXtEntry = (&'static str, usize, [usize; 4], usize, usize, usize);

const RESNEXTS: [ResNeXtEntry; 6] = [
    ("resnext29_32x4d_cifar10", 29, [0; 4], 32, 4, 10),
    ("resnext29_32x4d_cifar100", 29, [0; 4], 32, 4, 100),
    ("resnext29_16x64d_cifar10", 29, [0; 4], 16, 64, 10),
    ("resnext29_8x64d_cifar10", 29, [0; 4], 8, 64, 10),
    ("resnext50_32x4d", 0, [3, 4, 6, 3], 32, 4, 1000),
    ("resnext101_32x4d", 0, [3, 4, 23, 3], 32, 4, 1000),
];

/// Every registered model name. ShuffleNets also come with the suffix
/// `_cifar`: a stem for 28×28 and 32×32 images (3×3 stride-1 conv, no max
/// pool).
pub fn names() -> Vec<String> {
    let mut out = Vec::new();
    for small in ["", "_cifar"] {
        for g in [1, 2, 3, 4, 8] {
            for (suffix, _) in WIDTHS {
                out.push(format!("shufflenet_g{g}_{suffix}{small}"));
            }
        }
    }
    out.extend(RESNEXTS.iter().map(|r| r.0.to_string()));
    out
}

/// The nominal input `[C, H, W]` of a registered model: 32×32 for CIFAR
/// models, 224×224 for ImageNet ones.
pub fn input_shape(name: &str) -> Result<[usize; 3]> {
    if !names().iter().any(|n| n == name) {
        return Err(unknown(name));
    }
    let side = if name.contains("_cifar") { 32 } else { 224 };
    Ok([3, side, side])
}

fn unknown(name: &str) -> Error {
    Error::invalid(format!(
        "unknown model {name:?}; known models: {}",
        names().join(", ")
    ))
}

/// Builds the named model with freshly initialised weights, for 3-channel
/// images and the classes of its name (1000 for ImageNet models).
pub fn build(name: &str, rng: &mut impl Rng) -> Result<Box<dyn Module>> {
    build_for(name, None, rng)
}

/// The input channels and classes of a data set, for [`build_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub in_channels: usize,
    pub num_classes: usize,
}

/// Builds the named model, with the input channels and class count of
/// `head` when given (pytorchcv's `in_channels` and `num_classes`).
pub fn build_for(name: &str, head: Option<Head>, rng: &mut impl Rng) -> Result<Box<dyn Module>> {
    if let Some(h) = head
        && (h.in_channels == 0 || h.num_classes == 0)
    {
        return Err(Error::invalid(format!(
            "{name}: {} input channels and {} classes",
            h.in_channels, h.num_classes
        )));
    }
    if let Some(&(_, depth, units, card, width, classes)) = RESNEXTS.iter().find(|r| r.0 == name) {
        let mut config = if depth > 0 {
            ResNeXtConfig::cifar(depth, card, width, classes)?
        } else {
            ResNeXtConfig::imagenet(units.to_vec(), card, width)
        };
        if let Some(h) = head {
            (config.in_channels, config.num_classes) = (h.in_channels, h.num_classes);
        }
        return Ok(Box::new(ResNeXt::new(config, rng)?));
    }
    let (base, small_input) = match name.strip_suffix("_cifar") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let shuffle = base.strip_prefix("shufflenet_g").and_then(|rest| {
        let (g, suffix) = rest.split_once('_')?;
        let scale = WIDTHS.iter().find(|w| w.0 == suffix)?.1;
        Some((g.parse::<usize>().ok()?, scale))
    });
    let Some((groups, scale)) = shuffle else {
        return Err(unknown(name));
    };
    let mut config = ShuffleNetConfig {
        small_input,
        ..ShuffleNetConfig::new(groups, scale)
    };
    if let Some(h) = head {
        (config.in_channels, config.num_classes) = (h.in_channels, h.num_classes);
    }
    Ok(Box::new(ShuffleNet::new(config, rng)?))
}
