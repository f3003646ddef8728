//! ShuffleNet v1 (Zhang et al., arXiv 1707.01083) with pytorchcv's
//! structure and names: `features.init_block.{conv,bn}`,
//! `features.stage{i}.unit{j}.{compress_conv1, compress_bn1, dw_conv2,
//! dw_bn2, expand_conv3, expand_bn3}`, `output`.

use super::blocks::{POOL_3X3_S2, Trunk, kaiming_conv};
use crate::error::{Error, Result};
use crate::infer::{Builder, Epilogue, Value};
use crate::nn::{BatchNorm2d, Conv2d, Kind, Linear, Module};
use crate::ops;
use crate::tensor::{Tensor, is_grad_enabled, trace};
use rand::Rng;

/// Stage output channels at width 1× (paper, Table 1), by group count.
const STAGE_CHANNELS: [(usize, [usize; 3]); 5] = [
    (1, [144, 288, 576]),
    (2, [200, 400, 800]),
    (3, [240, 480, 960]),
    (4, [272, 544, 1088]),
    (8, [384, 768, 1536]),
];
const UNITS: [usize; 3] = [4, 8, 4];
const STEM_CHANNELS: usize = 24;

/// How to build a ShuffleNet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShuffleNetConfig {
    /// Groups of the 1×1 convolutions: 1, 2, 3, 4 or 8.
    pub groups: usize,
    /// Multiplies every channel count (stem included), truncating.
    pub width_scale: f64,
    pub in_channels: usize,
    pub num_classes: usize,
    /// A stem for small images (3×3 stride-1 conv, no max pool) instead of
    /// ImageNet's (3×3 stride-2 conv, 3×3 stride-2 max pool).
    pub small_input: bool,
}

impl ShuffleNetConfig {
    /// ImageNet defaults: 3 input channels, 1000 classes.
    pub fn new(groups: usize, width_scale: f64) -> Self {
        ShuffleNetConfig {
            groups,
            width_scale,
            in_channels: 3,
            num_classes: 1000,
            small_input: false,
        }
    }

    /// Stem channels and each stage's output channels.
    ///
    /// Counts are `int(c · width_scale)` as in pytorchcv. Where that breaks
    /// the group structure (pytorchcv fails there, e.g. g = 8 at 0.5×), the
    /// count is rounded up: a stage width whose bottleneck (`width / 4`) is
    /// not a multiple of the groups goes up to a multiple of `4 · groups`,
    /// and a stem whose difference to the first stage is not a multiple of
    /// the groups goes up to a multiple of the groups. Every model that
    /// pytorchcv builds keeps its numbers.
    pub fn channels(&self) -> Result<(usize, [usize; 3])> {
        let g = self.groups;
        let Some(&(_, base)) = STAGE_CHANNELS.iter().find(|(k, _)| *k == g) else {
            return Err(Error::invalid(format!(
                "ShuffleNet: groups = {g} is not supported (1, 2, 3, 4 or 8)"
            )));
        };
        if !(self.width_scale > 0.0 && self.width_scale.is_finite()) {
            return Err(Error::invalid(format!(
                "ShuffleNet: width scale {} must be positive",
                self.width_scale
            )));
        }
        let scale = |c: usize| ((c as f64 * self.width_scale) as usize).max(1);
        let stages = base.map(|c| {
            let c = scale(c).max(4 * g);
            if c.is_multiple_of(g) && (c / 4).is_multiple_of(g) {
                c
            } else {
                c.next_multiple_of(4 * g)
            }
        });
        let mut stem = scale(STEM_CHANNELS);
        if !(stages[0] - stem.min(stages[0])).is_multiple_of(g) || stem >= stages[0] {
            stem = stem.next_multiple_of(g).min(stages[0] - g);
        }
        Ok((stem, stages))
    }
}

/// A ShuffleNet unit (paper, Fig. 2 b/c): 1×1 group conv + BN + ReLU,
/// channel shuffle, 3×3 depthwise conv + BN, 1×1 group conv + BN; then
/// `relu(x + branch)`, or when downsampling (stride 2)
/// `relu(cat[branch, avg_pool3x3/2(x)])`.
pub struct ShuffleUnit {
    pub compress_conv1: Conv2d,
    pub compress_bn1: BatchNorm2d,
    pub dw_conv2: Conv2d,
    pub dw_bn2: BatchNorm2d,
    pub expand_conv3: Conv2d,
    pub expand_bn3: BatchNorm2d,
    pub groups: usize,
    pub downsample: bool,
}

impl ShuffleUnit {
    /// `in → out` channels; the bottleneck is `out / 4`; a downsampling
    /// unit's branch makes `out − in` channels. `ignore_group` makes the
    /// first 1×1 conv dense (the network's very first unit).
    pub fn new(
        [cin, cout]: [usize; 2],
        groups: usize,
        downsample: bool,
        ignore_group: bool,
        rng: &mut impl Rng,
    ) -> Result<ShuffleUnit> {
        let mid = cout / 4;
        let branch_out = if downsample { cout - cin } else { cout };
        let compress_groups = if ignore_group { 1 } else { groups };
        Ok(ShuffleUnit {
            compress_conv1: kaiming_conv([cin, mid], 1, 1, compress_groups, rng)?,
            compress_bn1: BatchNorm2d::new(mid),
            dw_conv2: kaiming_conv([mid, mid], 3, if downsample { 2 } else { 1 }, mid, rng)?,
            dw_bn2: BatchNorm2d::new(mid),
            expand_conv3: kaiming_conv([mid, branch_out], 1, 1, groups, rng)?,
            expand_bn3: BatchNorm2d::new(branch_out),
            groups,
            downsample,
        })
    }
}

impl Module for ShuffleUnit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self
            .compress_bn1
            .after_conv(&self.compress_conv1, x, true)?;
        let y = if is_grad_enabled() && !trace::is_tracing() {
            // Training: the depthwise conv reads the shuffled channels where
            // they are (no shuffled copy, forward or backward).
            let y = self.dw_conv2.forward_after_shuffle(&y, self.groups)?;
            self.dw_bn2.forward(&y)?
        } else {
            let y = ops::channel_shuffle(&y, self.groups)?;
            self.dw_bn2.after_conv(&self.dw_conv2, &y, false)?
        };
        if self.downsample {
            let y = self.expand_bn3.after_conv(&self.expand_conv3, &y, false)?;
            ops::relu(&ops::cat(&[&y, &ops::avg_pool2d(x, POOL_3X3_S2)?])?)
        } else {
            self.expand_bn3
                .after_conv_add_relu(&self.expand_conv3, &y, x, None)
        }
    }

    /// Batch norms folded; the shuffle folded into the compress conv's
    /// output order; the residual add or the concatenation (the shortcut's
    /// pooling writes its part in place) and the ReLU fused into the
    /// expand conv.
    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        let compress = Epilogue {
            relu: true,
            shuffle: Some(self.groups),
            ..Epilogue::default()
        };
        let y = plan.conv(
            x,
            self.compress_conv1.spec(Some(&self.compress_bn1))?,
            compress,
        )?;
        let y = plan.conv(
            y,
            self.dw_conv2.spec(Some(&self.dw_bn2))?,
            Epilogue::default(),
        )?;
        let expand = self.expand_conv3.spec(Some(&self.expand_bn3))?;
        if self.downsample {
            let branch = expand.out_channels;
            let size = [x.size[0].div_ceil(2), x.size[1].div_ceil(2)];
            let out = plan.parts(branch + x.channels, size);
            let into = Some((out, 0));
            plan.conv(
                y,
                expand,
                Epilogue {
                    relu: true,
                    into,
                    ..Epilogue::default()
                },
            )?;
            plan.avg_pool(x, POOL_3X3_S2, true, Some((out, branch)))
        } else {
            let residual = Some(x);
            plan.conv(
                y,
                expand,
                Epilogue {
                    relu: true,
                    residual,
                    ..Epilogue::default()
                },
            )
        }
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        let parts: [(&str, &dyn Module); 6] = [
            ("compress_conv1", &self.compress_conv1),
            ("compress_bn1", &self.compress_bn1),
            ("dw_conv2", &self.dw_conv2),
            ("dw_bn2", &self.dw_bn2),
            ("expand_conv3", &self.expand_conv3),
            ("expand_bn3", &self.expand_bn3),
        ];
        for (name, m) in parts {
            m.visit(&format!("{prefix}{name}."), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for bn in [
            &mut self.compress_bn1,
            &mut self.dw_bn2,
            &mut self.expand_bn3,
        ] {
            bn.set_training(training);
        }
    }
}

/// ShuffleNet v1: stem, three stages of 4/8/4 units (the first of each
/// downsamples), global average pooling and a linear classifier. Input
/// `[N, in_channels, H, W]`, output `[N, num_classes]` logits.
pub struct ShuffleNet {
    pub config: ShuffleNetConfig,
    pub stem_conv: Conv2d,
    pub stem_bn: BatchNorm2d,
    /// The units (`stages[i][j]` is `features.stage{i+1}.unit{j+1}`) and
    /// the classifier (`output`).
    trunk: Trunk<ShuffleUnit>,
}

impl ShuffleNet {
    pub fn new(config: ShuffleNetConfig, rng: &mut impl Rng) -> Result<ShuffleNet> {
        let (stem, widths) = config.channels()?;
        let stride = if config.small_input { 1 } else { 2 };
        let stem_conv = kaiming_conv([config.in_channels, stem], 3, stride, 1, rng)?;
        let mut stages = Vec::new();
        let mut cin = stem;
        for (i, (&width, &units)) in widths.iter().zip(&UNITS).enumerate() {
            let mut stage = Vec::new();
            for j in 0..units {
                stage.push(ShuffleUnit::new(
                    [cin, width],
                    config.groups,
                    j == 0,
                    i == 0 && j == 0,
                    rng,
                )?);
                cin = width;
            }
            stages.push(stage);
        }
        Ok(ShuffleNet {
            config,
            stem_conv,
            stem_bn: BatchNorm2d::new(stem),
            trunk: Trunk {
                stages,
                output: Linear::new(cin, config.num_classes, true, rng),
            },
        })
    }
}

impl Module for ShuffleNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.stem_bn.after_conv(&self.stem_conv, x, true)?;
        if !self.config.small_input {
            y = ops::max_pool2d(&y, POOL_3X3_S2)?;
        }
        self.trunk.forward(y)
    }

    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        let stem = Epilogue {
            relu: true,
            ..Epilogue::default()
        };
        let mut y = plan.conv(x, self.stem_conv.spec(Some(&self.stem_bn))?, stem)?;
        if !self.config.small_input {
            y = plan.max_pool(y, POOL_3X3_S2)?;
        }
        self.trunk.lower(plan, y)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.stem_conv
            .visit(&format!("{prefix}features.init_block.conv."), f);
        self.stem_bn
            .visit(&format!("{prefix}features.init_block.bn."), f);
        self.trunk.visit(prefix, f);
    }

    fn set_training(&mut self, training: bool) {
        self.stem_bn.set_training(training);
        self.trunk.set_training(training);
    }
}
