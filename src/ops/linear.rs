//! `linear`: the fully connected layer.

use crate::error::{Error, Result};
use crate::kernels::linear::{self as kernel, LinearShape};
use crate::tensor::Tensor;

/// `y = x · weightᵀ + bias` (PyTorch `F.linear`): `x` `[N, in]`, `weight`
/// `[out, in]`, `bias` `[out]`, result `[N, out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (&[n, i], &[o, i2]) = (x.shape(), weight.shape()) else {
        return Err(Error::invalid(format!(
            "linear: expected input [N, in] and weight [out, in], got {:?} and {:?}",
            x.shape(),
            weight.shape()
        )));
    };
    if i != i2 || bias.is_some_and(|b| b.shape() != [o]) {
        return Err(Error::invalid(format!(
            "linear: input {:?}, weight {:?} and bias {:?} do not fit together",
            x.shape(),
            weight.shape(),
            bias.map(|b| b.shape().to_vec())
        )));
    }
    let s = LinearShape {
        batch: n,
        in_features: i,
        out_features: o,
    };
    let mut y = vec![0f32; n * o];
    {
        let bd = bias.map(|b| b.data());
        kernel::forward(
            &s,
            &x.data(),
            &weight.data(),
            bd.as_deref().map(|v| v.as_slice()),
            &mut y,
        )?;
    }
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let (xs, ws) = (x.clone(), weight.clone());
    Ok(Tensor::from_op(
        "linear",
        y,
        vec![n, o],
        &inputs,
        move |dy, needs| {
            let mut grads = super::grad_buffers(needs, [n * i, o * i, o], super::zeroed);
            kernel::backward(
                &s,
                &xs.data(),
                &ws.data(),
                dy,
                super::wanted(needs, &mut grads),
            )?;
            Ok(super::keep_wanted(needs, grads))
        },
    ))
}
