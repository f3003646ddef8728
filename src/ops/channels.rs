//! Operations across channels: `cat` and `channel_shuffle`.

use super::nchw;
use crate::error::{Error, Result};
use crate::kernels::{par_concat, shuffle};
use crate::tensor::Tensor;

/// Concatenates `[N, C_i, H, W]` tensors along the channels (PyTorch
/// `torch.cat(xs, dim=1)`).
pub fn cat(xs: &[&Tensor]) -> Result<Tensor> {
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("cat: needs at least one tensor"))?;
    let [n, _, h, w] = nchw("cat", first)?;
    let mut channels = Vec::with_capacity(xs.len());
    for x in xs {
        let [n2, c, h2, w2] = nchw("cat", x)?;
        if (n2, h2, w2) != (n, h, w) {
            return Err(Error::invalid(format!(
                "cat: shapes {:?} and {:?} differ outside the channels",
                first.shape(),
                x.shape()
            )));
        }
        channels.push(c);
    }
    let plane = h * w;
    let total: usize = channels.iter().sum();
    // Per output channel: its input and the channel there.
    let from: Vec<(usize, usize)> = channels
        .iter()
        .enumerate()
        .flat_map(|(t, &c)| (0..c).map(move |k| (t, k)))
        .collect();
    let datas: Vec<_> = xs.iter().map(|x| x.data()).collect();
    let y = par_concat(n * total, plane, |k| {
        let (i, (t, ch)) = (k / total, from[k % total]);
        &datas[t][(i * channels[t] + ch) * plane..][..plane]
    });
    drop(datas);
    Ok(Tensor::from_op(
        "cat",
        y,
        vec![n, total, h, w],
        xs,
        move |dy, _| {
            let mut offset = 0;
            let grads = channels.iter().map(|&c| {
                let first = offset;
                offset += c;
                Some(par_concat(n * c, plane, |k| {
                    &dy[((k / c) * total + first + k % c) * plane..][..plane]
                }))
            });
            Ok(grads.collect())
        },
    ))
}

/// ShuffleNet's channel shuffle (PyTorch `nn.ChannelShuffle(groups)`): view
/// `[N, g, C/g, H, W]`, swap axes 1 and 2, flatten. `C % groups` must be 0.
/// With 1 or `C` groups the permutation is the identity and `x` itself is
/// returned (no copy, no autograd node).
pub fn channel_shuffle(x: &Tensor, groups: usize) -> Result<Tensor> {
    let [n, c, h, w] = nchw("channel_shuffle", x)?;
    if groups == 1 || (groups == c && c > 0) {
        return Ok(x.clone());
    }
    let y = shuffle::channel_shuffle(&x.data(), n, c, h * w, groups)?;
    Ok(Tensor::from_op(
        "channel_shuffle",
        y,
        vec![n, c, h, w],
        &[x],
        move |dy, _| {
            let dx = shuffle::channel_shuffle(dy, n, c, h * w, c / groups)?;
            Ok(vec![Some(dx)])
        },
    ))
}
