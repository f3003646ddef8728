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
    let s = Conv2dShape {
        stride: args.stride,
        padding: args.padding,
        dilation: args.dilation,
        ..Conv2dShape::new(n, c, co, [h, w], [kh, kw], args.groups)
    }
    .validate()?;
    let [oh, ow] = s.output();
    // Every kernel writes all of `y` and of the gradients.
    let mut y = crate::tensor::recycle::take(s.lens().2);
    {
        let (xd, wd) = (x.data(), weight.data());
        let bd = bias.map(|b| b.data());
        kernels::conv2d_forward(&s, &xd, &wd, bd.as_deref().map(|v| v.as_slice()), &mut y)?;
    }
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let (xs, ws) = (x.clone(), weight.clone());
    Ok(Tensor::from_op(
        "conv2d",
        y,
        vec![n, co, oh, ow],
        &inputs,
        move |dy, needs| {
            let (xd, wd) = (xs.data(), ws.data());
            let (xl, wl, _) = s.lens();
            let mut grads = super::grad_buffers(
                needs,
                [xl, wl, s.out_channels],
                crate::tensor::recycle::take,
            );
            kernels::conv2d_backward(&s, &xd, &wd, dy, super::wanted(needs, &mut grads))?;
            Ok(super::keep_wanted(needs, grads))
        },
    ))
}
