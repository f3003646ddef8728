//! `conv2d`: grouped 2-D convolution (cross-correlation, as PyTorch).

use super::nchw;
use crate::error::{Error, Result};
use crate::kernels::{self, Conv2dShape};
use crate::tensor::Tensor;

/// Options of [`conv2d`], with PyTorch's defaults: stride 1, padding 0,
/// dilation 1, groups 1. Per-dimension values are `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dArgs {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dArgs {
    fn default() -> Self {
        Conv2dArgs {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// `y = conv2d(x, weight) + bias` (PyTorch `F.conv2d`).
///
/// Shapes: `x` `[N, C_in, H, W]`, `weight` `[C_out, C_in / groups, kH, kW]`,
/// `bias` `[C_out]`, result `[N, C_out, H_out, W_out]`. Depthwise layers
/// and few-channel groups run the direct kernels, the others the grouped
/// GEMM kernels.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
) -> Result<Tensor> {
    conv2d_of(x, weight, bias, conv_shape(x, weight, bias, args)?, None)
}

/// `conv2d(channel_shuffle(x, shuffle_groups), weight, bias, args)`: for
/// depthwise layers that the direct kernels run, each output channel
/// reads its shuffled input channel where it is, with no shuffled copy
/// (forward and backward); other layers shuffle first.
pub fn conv2d_after_shuffle(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
    shuffle_groups: usize,
) -> Result<Tensor> {
    let s = conv_shape(x, weight, bias, args)?;
    if !kernels::gathers(&s) {
        let x = super::channel_shuffle(x, shuffle_groups)?;
        return conv2d(&x, weight, bias, args);
    }
    let perm = kernels::shuffle::Permutation::shuffle(s.in_channels, shuffle_groups)?;
    conv2d_of(x, weight, bias, s, Some(perm))
}

/// The validated geometry of `conv2d(x, weight, bias, args)`.
fn conv_shape(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
) -> Result<Conv2dShape> {
    let [n, c, h, w] = nchw("conv2d", x)?;
    let [co, cig, kh, kw] = match *weight.shape() {
        [a, b, c, d] => [a, b, c, d],
        ref s => {
            return Err(Error::invalid(format!(
                "conv2d: weight must be [C_out, C_in/groups, kH, kW], got shape {s:?}"
            )));
        }
    };
    if cig * args.groups != c {
        return Err(Error::invalid(format!(
            "conv2d: weight {:?} with groups = {} expects {} input channels, the input {:?} has {c}",
            weight.shape(),
            args.groups,
            cig * args.groups,
            x.shape()
        )));
    }
    if let Some(b) = bias.filter(|b| b.shape() != [co]) {
        return Err(Error::invalid(format!(
            "conv2d: bias must have shape [{co}], got {:?}",
            b.shape()
        )));
    }
    Conv2dShape {
        stride: args.stride,
        padding: args.padding,
        dilation: args.dilation,
        ..Conv2dShape::new(n, c, co, [h, w], [kh, kw], args.groups)
    }
    .validate()
}

/// [`conv2d`] of shape `s`, or with `perm`, of the input's channels
/// permuted ([`conv2d_after_shuffle`]).
fn conv2d_of(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: Conv2dShape,
    perm: Option<kernels::shuffle::Permutation>,
) -> Result<Tensor> {
    let [oh, ow] = s.output();
    // Every kernel writes all of `y` and of the gradients.
    let mut y = crate::tensor::recycle::take(s.lens().2);
    {
        let (xd, wd) = (x.data(), weight.data());
        let bd = bias.map(|b| b.data());
        let bd = bd.as_deref().map(|v| v.as_slice());
        match &perm {
            None => kernels::conv2d_forward(&s, &xd, &wd, bd, &mut y)?,
            Some(p) => kernels::direct::forward_gathered(&s, &xd, &wd, bd, p, &mut y)?,
        }
    }
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let (xs, ws) = (x.clone(), weight.clone());
    Ok(Tensor::from_op(
        if perm.is_some() {
            "conv2d_after_shuffle"
        } else {
            "conv2d"
        },
        y,
        vec![s.batch, s.out_channels, oh, ow],
        &inputs,
        move |dy, needs| {
            let (xd, wd) = (xs.data(), ws.data());
            let (xl, wl, _) = s.lens();
            let mut grads = super::grad_buffers(
                needs,
                [xl, wl, s.out_channels],
                crate::tensor::recycle::take,
            );
            let wanted = super::wanted(needs, &mut grads);
            match &perm {
                None => kernels::conv2d_backward(&s, &xd, &wd, dy, wanted)?,
                Some(p) => kernels::direct::backward_gathered(&s, &xd, &wd, dy, p, wanted)?,
            }
            Ok(super::keep_wanted(needs, grads))
        },
    ))
}
