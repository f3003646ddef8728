//! ResNeXt (Xie et al., arXiv 1611.05431) with pytorchcv's structure and
//! names: `features.init_block…`, `features.stage{i}.unit{j}.body.conv{1,2,3}.{conv,bn}`,
//! `…identity_conv.{conv,bn}`, `output`.

use super::blocks::{ConvBlock, POOL_3X3_S2, Trunk};
use crate::error::{Error, Result};
use crate::infer::{Builder, Epilogue, Value};
use crate::nn::{Kind, Linear, Module};
use crate::ops;
use crate::tensor::Tensor;
use crate::tensor::trace::scoped;
use rand::Rng;

/// The bottleneck block with the article's parameters: width
/// `D = cardinality · floor(base_width · out / (widen_factor · 64))`;
/// 1×1 reduce (in → D) + BN + ReLU, 3×3 conv with `groups = cardinality`
/// (stride, padding 1) + BN + ReLU, 1×1 expand (D → out) + BN.
pub struct ResNeXtBottleneck {
    pub conv1: ConvBlock,
    pub conv2: ConvBlock,
    pub conv3: ConvBlock,
}

impl ResNeXtBottleneck {
    pub fn new(
        [cin, cout]: [usize; 2],
        stride: usize,
        cardinality: usize,
        base_width: usize,
        widen_factor: usize,
        rng: &mut impl Rng,
    ) -> Result<ResNeXtBottleneck> {
        let d = cardinality * (base_width * cout / (widen_factor * 64));
        if d == 0 {
            return Err(Error::invalid(format!(
                "ResNeXt: bottleneck width is 0 for {cout} channels, base width {base_width}, widen factor {widen_factor}"
            )));
        }
        Ok(ResNeXtBottleneck {
            conv1: ConvBlock::new([cin, d], 1, 1, 1, true, rng)?,
            conv2: ConvBlock::new([d, d], 3, stride, cardinality, true, rng)?,
            conv3: ConvBlock::new([d, cout], 1, 1, 1, false, rng)?,
        })
    }
}

impl ResNeXtBottleneck {
    /// `relu(self.forward(x) + shortcut)`: a unit's end, the addition and
    /// the ReLU fused into the last block (in summaries: `unit.add`, not
    /// `unit.body.conv3.add`).
    fn forward_add_relu(&self, x: &Tensor, shortcut: &Tensor) -> Result<Tensor> {
        let y = self.conv2.forward(&self.conv1.forward(x)?)?;
        self.conv3.forward_add_relu(&y, shortcut, Some("../.."))
    }
}

impl Module for ResNeXtBottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv3
            .forward(&self.conv2.forward(&self.conv1.forward(x)?)?)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.conv1.visit(&format!("{prefix}conv1."), f);
        self.conv2.visit(&format!("{prefix}conv2."), f);
        self.conv3.visit(&format!("{prefix}conv3."), f);
    }

    fn set_training(&mut self, training: bool) {
        for c in [&mut self.conv1, &mut self.conv2, &mut self.conv3] {
            c.set_training(training);
        }
    }
}

/// `relu(body(x) + shortcut(x))`; the shortcut is the identity, or a 1×1
/// conv (with the stride) + BN when the channels or the size change.
pub struct ResNeXtUnit {
    pub body: ResNeXtBottleneck,
    pub identity_conv: Option<ConvBlock>,
}

impl Module for ResNeXtUnit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shortcut = match &self.identity_conv {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        self.body.forward_add_relu(x, &shortcut)
    }

    /// The shortcut first, then the body, whose last conv adds the
    /// shortcut and applies the ReLU in its output pass.
    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        let shortcut = match &self.identity_conv {
            Some(c) => c.lower(plan, x)?,
            None => x,
        };
        let b = &self.body;
        let y = b.conv1.lower(plan, x)?;
        let y = b.conv2.lower(plan, y)?;
        let tail = Epilogue {
            relu: true,
            residual: Some(shortcut),
            ..Epilogue::default()
        };
        b.conv3.lower_with(plan, y, tail)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        self.body.visit(&format!("{prefix}body."), f);
        if let Some(c) = &self.identity_conv {
            c.visit(&format!("{prefix}identity_conv."), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        self.body.set_training(training);
        if let Some(c) = &mut self.identity_conv {
            c.set_training(training);
        }
    }
}

/// How to build a ResNeXt.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNeXtConfig {
    /// Units per stage; stage `i` outputs `256 · 2^i` channels.
    pub units: Vec<usize>,
    pub cardinality: usize,
    pub base_width: usize,
    pub widen_factor: usize,
    /// CIFAR stem (3×3 conv 64 + BN + ReLU) instead of ImageNet's
    /// (7×7/2 conv 64 + BN + ReLU, 3×3/2 max pool).
    pub cifar: bool,
    pub in_channels: usize,
    pub num_classes: usize,
}

impl ResNeXtConfig {
    /// CIFAR ResNeXt of depth `9k + 2`: three stages of `k` units.
    pub fn cifar(
        depth: usize,
        cardinality: usize,
        base_width: usize,
        num_classes: usize,
    ) -> Result<Self> {
        if depth < 11 || !(depth - 2).is_multiple_of(9) {
            return Err(Error::invalid(format!(
                "CIFAR ResNeXt: depth {depth} is not 9k + 2 (29 is the paper's)"
            )));
        }
        Ok(ResNeXtConfig {
            units: vec![(depth - 2) / 9; 3],
            cardinality,
            base_width,
            widen_factor: 4,
            cifar: true,
            in_channels: 3,
            num_classes,
        })
    }

    /// ImageNet ResNeXt-50 (`[3, 4, 6, 3]`) or -101 (`[3, 4, 23, 3]`).
    pub fn imagenet(units: Vec<usize>, cardinality: usize, base_width: usize) -> Self {
        ResNeXtConfig {
            units,
            cardinality,
            base_width,
            widen_factor: 4,
            cifar: false,
            in_channels: 3,
            num_classes: 1000,
        }
    }
}

/// ResNeXt: stem, stages of units (stride 2 at the first unit of every
/// stage but the first), global average pooling, linear classifier. Input
/// `[N, in_channels, H, W]`, output `[N, num_classes]` logits.
pub struct ResNeXt {
    pub config: ResNeXtConfig,
    pub stem: ConvBlock,
    /// The units (`stages[i][j]` is `features.stage{i+1}.unit{j+1}`) and
    /// the classifier (`output`).
    trunk: Trunk<ResNeXtUnit>,
}

impl ResNeXt {
    pub fn new(config: ResNeXtConfig, rng: &mut impl Rng) -> Result<ResNeXt> {
        let c = &config;
        let stem_k = if c.cifar { 3 } else { 7 };
        let stem = ConvBlock::new(
            [c.in_channels, 64],
            stem_k,
            if c.cifar { 1 } else { 2 },
            1,
            true,
            rng,
        )?;
        let mut cin = 64;
        let mut stages = Vec::new();
        for (i, &units) in c.units.iter().enumerate() {
            let cout = 256 << i;
            let mut stage = Vec::new();
            for j in 0..units {
                let stride = if j == 0 && i != 0 { 2 } else { 1 };
                let body = ResNeXtBottleneck::new(
                    [cin, cout],
                    stride,
                    c.cardinality,
                    c.base_width,
                    c.widen_factor,
                    rng,
                )?;
                let identity_conv = (cin != cout || stride != 1)
                    .then(|| ConvBlock::new([cin, cout], 1, stride, 1, false, rng))
                    .transpose()?;
                stage.push(ResNeXtUnit {
                    body,
                    identity_conv,
                });
                cin = cout;
            }
            stages.push(stage);
        }
        let output = Linear::new(cin, c.num_classes, true, rng);
        Ok(ResNeXt {
            config,
            stem,
            trunk: Trunk { stages, output },
        })
    }
}

impl Module for ResNeXt {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.stem.forward(x)?;
        if !self.config.cifar {
            y = scoped("..", || ops::max_pool2d(&y, POOL_3X3_S2))?;
        }
        self.trunk.forward(y)
    }

    fn lower(&self, plan: &mut Builder, x: Value) -> Result<Value> {
        let mut y = self.stem.lower(plan, x)?;
        if !self.config.cifar {
            y = plan.max_pool(y, POOL_3X3_S2)?;
        }
        self.trunk.lower(plan, y)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        // pytorchcv: CIFAR's stem is a conv3x3_block (`init_block.conv`),
        // ImageNet's a ResInitBlock holding a conv7x7_block (`init_block.conv.conv`).
        let stem = if self.config.cifar {
            "features.init_block."
        } else {
            "features.init_block.conv."
        };
        self.stem.visit(&format!("{prefix}{stem}"), f);
        self.trunk.visit(prefix, f);
    }

    fn set_training(&mut self, training: bool) {
        self.stem.set_training(training);
        self.trunk.set_training(training);
    }
}
