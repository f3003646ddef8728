//! `softmax`, `log_softmax` over the classes of `[N, K]` scores, and the
//! `cross_entropy` loss.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn rows(op: &str, x: &Tensor) -> Result<[usize; 2]> {
    match *x.shape() {
        [n, k] if k > 0 => Ok([n, k]),
        ref s => Err(Error::invalid(format!(
            "{op}: expected [N, classes] scores, got shape {s:?}"
        ))),
    }
}

/// Row-wise log-softmax, stable: `x − max − log Σ exp(x − max)`.
fn log_softmax_rows(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(k) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = row
            .iter()
            .map(|&v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
        out.extend(row.iter().map(|&v| v - max - lse));
    }
    out
}

/// `softmax(x, dim=1)` of `[N, K]` scores.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let [n, k] = rows("softmax", x)?;
    let y: Vec<f32> = log_softmax_rows(&x.data(), k)
        .iter()
        .map(|v| v.exp())
        .collect();
    let saved = y.clone();
    Ok(Tensor::from_op(
        "softmax",
        y,
        vec![n, k],
        &[x],
        move |dy, _| {
            // dx = y · (dy − Σ dy · y), row by row.
            let mut dx = Vec::with_capacity(dy.len());
            for (g, y) in dy.chunks_exact(k).zip(saved.chunks_exact(k)) {
                let dot: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
                dx.extend(g.iter().zip(y).map(|(&g, &y)| y * (g - dot)));
            }
            Ok(vec![Some(dx)])
        },
    ))
}

/// `log_softmax(x, dim=1)` of `[N, K]` scores.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let [n, k] = rows("log_softmax", x)?;
    let y = log_softmax_rows(&x.data(), k);
    let saved = y.clone();
    Ok(Tensor::from_op(
        "log_softmax",
        y,
        vec![n, k],
        &[x],
        move |dy, _| {
            // dx = dy − softmax · Σ dy, row by row.
            let mut dx = Vec::with_capacity(dy.len());
            for (g, y) in dy.chunks_exact(k).zip(saved.chunks_exact(k)) {
                let total: f32 = g.iter().sum();
                dx.extend(g.iter().zip(y).map(|(&g, &y)| g - y.exp() * total));
            }
            Ok(vec![Some(dx)])
        },
    ))
}

/// Mean cross-entropy of `[N, K]` scores against class indices (PyTorch
/// `F.cross_entropy(logits, targets, label_smoothing=ε)`): per sample
/// `−(1 − ε) · log p[target] − ε / K · Σ_k log p[k]`. Errors on a target
/// outside `0..K`, an empty batch, ε outside `[0, 1]`, or non-finite scores.
pub fn cross_entropy(logits: &Tensor, targets: &[usize], label_smoothing: f32) -> Result<Tensor> {
    let [n, k] = rows("cross_entropy", logits)?;
    if n == 0 || targets.len() != n {
        return Err(Error::invalid(format!(
            "cross_entropy: {} targets for {n} rows of scores",
            targets.len()
        )));
    }
    if let Some(t) = targets.iter().find(|&&t| t >= k) {
        return Err(Error::invalid(format!(
            "cross_entropy: target {t} is not a class index below {k}"
        )));
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::invalid(format!(
            "cross_entropy: label_smoothing = {label_smoothing} must lie in [0, 1]"
        )));
    }
    let logp = {
        let x = logits.data();
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "cross_entropy: score {} of row {} is {}",
                i % k,
                i / k,
                x[i]
            )));
        }
        log_softmax_rows(&x, k)
    };
    let eps = label_smoothing as f64;
    let loss: f64 = logp
        .chunks_exact(k)
        .zip(targets)
        .map(|(row, &t)| {
            let mean_all = row.iter().map(|&v| v as f64).sum::<f64>() / k as f64;
            -(1.0 - eps) * row[t] as f64 - eps * mean_all
        })
        .sum::<f64>()
        / n as f64;
    let targets = targets.to_vec();
    Ok(Tensor::from_op(
        "cross_entropy",
        vec![loss as f32],
        Vec::new(),
        &[logits],
        move |dy, _| {
            // d loss / d x = (softmax − q) / N with q = (1 − ε)·onehot + ε/K.
            let scale = dy[0] / n as f32;
            let (off, on) = (label_smoothing / k as f32, 1.0 - label_smoothing);
            let mut dx = Vec::with_capacity(n * k);
            for (row, &t) in logp.chunks_exact(k).zip(&targets) {
                dx.extend(row.iter().enumerate().map(|(j, &lp)| {
                    let q = off + if j == t { on } else { 0.0 };
                    (lp.exp() - q) * scale
                }));
            }
            Ok(vec![Some(dx)])
        },
    ))
}
