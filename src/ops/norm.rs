//! `batch_norm` over the channels of `[N, C, H, W]` (or `[N, C]`) data.

use crate::error::{Error, Result};
use crate::kernels::norm::{self as kernel, Layout};
use crate::tensor::Tensor;

/// Options of [`batch_norm`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormArgs {
    /// Batch statistics (and running-statistics updates) when true; the
    /// running statistics when false.
    pub training: bool,
    /// Weight of the new batch statistic in the running averages.
    pub momentum: f32,
    pub eps: f32,
    /// Apply ReLU to the result in the same pass (`relu(batch_norm(x))`,
    /// the conv–BN–ReLU blocks of both networks).
    pub relu: bool,
}

impl Default for BatchNormArgs {
    fn default() -> Self {
        BatchNormArgs {
            training: true,
            momentum: 0.1,
            eps: 1e-5,
            relu: false,
        }
    }
}

/// Batch normalisation (PyTorch `F.batch_norm`): `y = (x − μ) / sqrt(σ² +
/// eps) · weight + bias` per channel. In training μ and σ² are the batch's
/// (biased) statistics, and the running buffers `[C]` (when given) move
/// toward them by `momentum`, the variance unbiased (`· M / (M − 1)`, `M`
/// values per channel). In evaluation the running buffers are used and
/// must be given.
pub fn batch_norm(
    x: &Tensor,
    running: Option<(&Tensor, &Tensor)>,
    affine: Option<(&Tensor, &Tensor)>,
    args: BatchNormArgs,
) -> Result<Tensor> {
    batch_norm_then(x, None, running, affine, args)
}

/// `relu(batch_norm(x) + residual)` (a residual unit's last batch norm,
/// its shortcut and its activation) in one pass over the output, with the
/// values and gradients of the separate operations (`args.relu` is
/// implied); `residual` has `x`'s shape.
pub fn batch_norm_add_relu(
    x: &Tensor,
    residual: &Tensor,
    running: Option<(&Tensor, &Tensor)>,
    affine: Option<(&Tensor, &Tensor)>,
    args: BatchNormArgs,
) -> Result<Tensor> {
    if residual.shape() != x.shape() {
        return Err(Error::invalid(format!(
            "batch_norm_add_relu: residual shape {:?} differs from the input's {:?}",
            residual.shape(),
            x.shape()
        )));
    }
    let args = BatchNormArgs { relu: true, ..args };
    batch_norm_then(x, Some(residual), running, affine, args)
}

/// [`batch_norm`], adding `residual` before the ReLU when given.
fn batch_norm_then(
    x: &Tensor,
    residual: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    affine: Option<(&Tensor, &Tensor)>,
    args: BatchNormArgs,
) -> Result<Tensor> {
    let l = match *x.shape() {
        [n, c, ref rest @ ..] if rest.len() <= 2 => Layout {
            batch: n,
            channels: c,
            plane: rest.iter().product(),
        },
        ref s => {
            return Err(Error::invalid(format!(
                "batch_norm: expected [N, C], [N, C, L] or [N, C, H, W] input, got {s:?}"
            )));
        }
    };
    let c = l.channels;
    for t in running
        .iter()
        .flat_map(|(m, v)| [*m, *v])
        .chain(affine.iter().flat_map(|(w, b)| [*w, *b]))
    {
        if t.shape() != [c] {
            return Err(Error::invalid(format!(
                "batch_norm: statistics and affine parameters must have shape [{c}], got {:?}",
                t.shape()
            )));
        }
    }
    let (y, mean, invstd) = {
        let ad = affine.map(|(w, b)| (w.data(), b.data()));
        let aff = ad.as_ref().map(|(w, b)| (w.as_slice(), b.as_slice()));
        let rd = residual.map(|r| r.data());
        let res = rd.as_deref().map(Vec::as_slice);
        if args.training {
            let m = l.per_channel();
            if m < 2 {
                return Err(Error::invalid(format!(
                    "batch_norm: training needs more than one value per channel, input {:?}",
                    x.shape()
                )));
            }
            let (y, mean, var) =
                kernel::normalize_batch(&l, &x.data(), args.eps, aff, args.relu, res);
            if let Some((rm, rv)) = running {
                let unbias = m as f32 / (m as f32 - 1.0);
                let mo = args.momentum;
                rm.data_mut()
                    .iter_mut()
                    .zip(&mean)
                    .for_each(|(r, &v)| *r = (1.0 - mo) * *r + mo * v);
                rv.data_mut()
                    .iter_mut()
                    .zip(&var)
                    .for_each(|(r, &v)| *r = (1.0 - mo) * *r + mo * v * unbias);
            }
            (y, mean, kernel::inv_std(&var, args.eps))
        } else {
            let (rm, rv) = running.ok_or_else(|| {
                Error::invalid("batch_norm: evaluation mode needs the running mean and variance")
            })?;
            let (mean, var) = (rm.to_vec(), rv.to_vec());
            let invstd = kernel::inv_std(&var, args.eps);
            let y = kernel::normalize(&l, &x.data(), &mean, &invstd, aff, args.relu, res);
            (y, mean, invstd)
        }
    };
    let mut inputs = vec![x];
    if let Some((w, b)) = affine {
        inputs.extend([w, b]);
    }
    inputs.extend(residual);
    let xs = x.clone();
    let affine_saved = affine.map(|(w, b)| (w.clone(), b.clone()));
    let name = match (residual.is_some(), args.relu) {
        (true, _) => "batch_norm_add_relu",
        (false, true) => "batch_norm_relu",
        (false, false) => "batch_norm",
    };
    let adds = residual.is_some();
    Ok(Tensor::from_op_in_place(
        name,
        y,
        x.shape().to_vec(),
        &inputs,
        move |dy, needs, y| {
            // With a residual the ReLU's mask comes from the output (the
            // sum): the kernel masks `dy` in its buffer, which is then the
            // residual's gradient, and `dx` goes to another buffer (the
            // kernel overwrites it whole).
            let keep_dy = adds && needs[needs.len() - 1];
            let dx_into = (keep_dy && needs[0]).then(|| crate::tensor::recycle::take(dy.len()));
            let ad = affine_saved.as_ref().map(|(w, b)| (w.data(), b.data()));
            let aff = ad.as_ref().map(|(w, b)| (w.as_slice(), b.as_slice()));
            let kernel::Gradients {
                dx,
                dgamma,
                dbeta,
                dy,
            } = kernel::backward(
                &l,
                &xs.data(),
                dy,
                &mean,
                &invstd,
                aff,
                args.training,
                args.relu && !adds,
                needs[0],
                dx_into,
                adds.then_some(y),
            );
            let d_residual = dy.filter(|_| keep_dy);
            let mut grads = vec![dx];
            if aff.is_some() {
                grads.extend([Some(dgamma), Some(dbeta)]);
            }
            if adds {
                grads.push(d_residual);
            }
            Ok(grads)
        },
    ))
}
