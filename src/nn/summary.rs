//! A model's layer table: what each operation of a forward pass makes,
//! with its parameters and multiply-adds (the papers' "FLOPs").

use super::{Kind, Module};
use crate::error::Result;
use crate::no_grad;
use crate::tensor::Tensor;
use crate::tensor::trace::{TracedOp, trace};

/// One operation of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The module that owns the operation's parameters
    /// (`features.stage1.unit1.compress_conv1`); parameter-free steps are
    /// named after the operation inside the last such module
    /// (`features.stage1.unit1.channel_shuffle`), or in the scope given by
    /// [`scoped`](crate::tensor::trace::scoped).
    pub name: String,
    /// The operation with its geometry (`Conv2d 3×3/2 dw`, `BatchNorm2d`).
    pub kind: String,
    /// Output shape for one image: `[C, H, W]` or `[features]`.
    pub output_shape: Vec<usize>,
    /// Learnable values the operation uses (counted at first use).
    pub params: usize,
    /// Multiply-adds per image: convolutions and linear layers only, as the
    /// ShuffleNet and ResNeXt papers count.
    pub macs: u64,
}

/// The table and its totals for one input size.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `[C, H, W]` of one input image.
    pub input_shape: Vec<usize>,
    pub layers: Vec<Layer>,
    /// All learnable values of the model (used or not).
    pub params: usize,
    /// Multiply-adds per image.
    pub macs: u64,
}

/// Runs the model once on a zero image of `input_shape` (`[C, H, W]`)
/// and tabulates its operations. Put the model in eval mode first: in
/// training mode its batch norms would update their running statistics.
pub fn summary(model: &dyn Module, input_shape: &[usize]) -> Result<Summary> {
    let mut shape = vec![1];
    shape.extend_from_slice(input_shape);
    let x = Tensor::zeros(&shape);
    let (out, ops) = trace(|| no_grad(|| model.forward(&x)));
    out?;
    let mut names: Vec<(Tensor, String)> = Vec::new();
    model.visit("", &mut |name, t, kind| {
        if kind == Kind::Parameter {
            names.push((t.clone(), name.to_string()));
        }
    });
    let mut counted = vec![false; names.len()];
    let mut scope = String::new();
    let mut layers = Vec::with_capacity(ops.len());
    for op in &ops {
        let mut owner = None;
        let mut params = 0;
        for input in &op.inputs {
            if let Some(i) = names.iter().position(|(t, _)| t.same(input)) {
                let name = &names[i].1;
                owner.get_or_insert_with(|| parent(name).to_string());
                if !counted[i] {
                    counted[i] = true;
                    params += input.numel();
                }
            }
        }
        let name = match owner {
            Some(owner) => {
                scope = parent(&owner).to_string();
                owner
            }
            None => {
                let scope = resolve(&scope, op.scope);
                if scope.is_empty() {
                    op.op.to_string()
                } else {
                    format!("{scope}.{}", op.op)
                }
            }
        };
        layers.push(Layer {
            name,
            kind: kind(op),
            output_shape: op.output.shape()[1..].to_vec(),
            params,
            macs: macs(op),
        });
    }
    Ok(Summary {
        input_shape: input_shape.to_vec(),
        params: super::num_parameters(model),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    })
}

/// `a.b.c → a.b`; `a → ""`.
fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |p| p.0)
}

/// The module path for a parameter-free operation: `current` (the module
/// of the last operation with parameters) adjusted by a `scoped` directive.
fn resolve<'a>(current: &'a str, directive: Option<&'a str>) -> &'a str {
    match directive {
        None => current,
        Some(d) if d.starts_with("..") => d.split('/').fold(current, |s, _| parent(s)),
        Some(path) => path,
    }
}

/// Multiply-adds per image of a convolution or linear layer.
fn macs(op: &TracedOp) -> u64 {
    let per_output = match op.op {
        "conv2d" => op.inputs[1].shape()[1..].iter().product::<usize>(),
        "linear" => op.inputs[1].shape()[1],
        _ => return 0,
    };
    let n = op.output.shape()[0].max(1);
    (op.output.numel() / n * per_output) as u64
}

/// A readable operation type: convolutions with kernel, stride and groups.
fn kind(op: &TracedOp) -> String {
    match op.op {
        "conv2d" => {
            let (x, w, y) = (
                op.inputs[0].shape(),
                op.inputs[1].shape(),
                op.output.shape(),
            );
            let groups = x[1] / w[1];
            let stride = x[2].div_ceil(y[2]);
            let mut s = format!("Conv2d {}×{}", w[2], w[3]);
            if stride > 1 {
                s += &format!("/{stride}");
            }
            if groups > 1 && groups == x[1] {
                s += " dw";
            } else if groups > 1 {
                s += &format!(" g{groups}");
            }
            s
        }
        "batch_norm" => "BatchNorm2d".into(),
        "batch_norm_relu" => "BatchNorm2d+ReLU".into(),
        "relu" => "ReLU".into(),
        "linear" => "Linear".into(),
        "channel_shuffle" => "ChannelShuffle".into(),
        "max_pool2d" => "MaxPool2d".into(),
        "avg_pool2d" => "AvgPool2d".into(),
        "global_avg_pool2d" => "GlobalAvgPool2d".into(),
        "add" => "Add".into(),
        "add_relu" => "Add+ReLU".into(),
        "cat" => "Cat".into(),
        other => other.into(),
    }
}
