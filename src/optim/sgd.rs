//! Stochastic gradient descent with momentum, Nesterov momentum and
//! weight decay, step for step as `torch.optim.SGD` (dampening 0).

use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 penalty added to the gradient: `g + weight_decay · p`.
    pub weight_decay: f32,
    /// Exempt one-dimensional parameters (batch-norm scales and shifts,
    /// biases) from weight decay, as most ImageNet recipes do.
    pub no_decay_1d: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            no_decay_1d: true,
        }
    }
}

/// SGD over named parameters. Momentum buffers are created at the first
/// step, like PyTorch's (the first buffer is the first gradient).
pub struct Sgd {
    pub config: SgdConfig,
    params: Vec<(String, Tensor)>,
    momentum: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Result<Sgd> {
        if !(config.momentum >= 0.0 && config.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "SGD: momentum {} and weight decay {} must be non-negative",
                config.momentum, config.weight_decay
            )));
        }
        if config.nesterov && config.momentum == 0.0 {
            return Err(Error::invalid("SGD: Nesterov momentum needs momentum > 0"));
        }
        let momentum = vec![None; params.len()];
        Ok(Sgd {
            config,
            params,
            momentum,
        })
    }

    /// One update with learning rate `lr` from the accumulated gradients;
    /// parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f32) {
        let c = self.config;
        for ((_, p), buf) in self.params.iter().zip(&mut self.momentum) {
            let decay = if c.no_decay_1d && p.shape().len() <= 1 {
                0.0
            } else {
                c.weight_decay
            };
            let mut values = p.data_mut();
            p.with_grad(|g| {
                if c.momentum == 0.0 {
                    for (v, &g) in values.iter_mut().zip(g) {
                        *v -= lr * (g + decay * *v);
                    }
                    return;
                }
                // PyTorch: the first buffer is d_p itself, later ones
                // momentum · buf + d_p.
                let fresh = buf.is_none();
                let b = buf.get_or_insert_with(|| vec![0.0; g.len()]);
                for ((v, &g), b) in values.iter_mut().zip(g).zip(b.iter_mut()) {
                    let d = g + decay * *v;
                    *b = if fresh { d } else { c.momentum * *b + d };
                    *v -= lr * if c.nesterov { d + c.momentum * *b } else { *b };
                }
            });
        }
    }

    /// Forgets every parameter's gradient.
    pub fn zero_grad(&self) {
        for (_, p) in &self.params {
            p.zero_grad();
        }
    }

    /// The momentum buffers by parameter name (for checkpoints); names
    /// without a buffer yet are left out.
    pub fn state(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.params
            .iter()
            .zip(&self.momentum)
            .filter_map(|((n, p), b)| Some((n.clone(), p.shape().to_vec(), b.clone()?)))
            .collect()
    }

    /// Restores momentum buffers saved by [`state`](Self::state).
    pub fn load_state(&mut self, state: &crate::io::NamedArrays) -> Result<()> {
        let mut buffers = Vec::with_capacity(self.params.len());
        for (name, p) in &self.params {
            buffers.push(match state.get(name) {
                Some((shape, v)) if shape.as_slice() == p.shape() && v.len() == p.numel() => {
                    Some(v.clone())
                }
                Some((shape, _)) => {
                    return Err(Error::invalid(format!(
                        "optimizer state {name}: shape {shape:?}, the parameter has {:?}",
                        p.shape()
                    )));
                }
                None => None,
            });
        }
        if let Some(extra) = state
            .keys()
            .find(|k| !self.params.iter().any(|(n, _)| n == *k))
        {
            return Err(Error::invalid(format!(
                "optimizer state for unknown parameter {extra}"
            )));
        }
        self.momentum = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_match_pytorch() {
        // torch.optim.SGD(lr, momentum=0.9, nesterov=True), weight decay
        // 0.01 on the matrix only, lr 0.1 then 0.05 (PyTorch 2.15 result).
        let p = Tensor::from_vec(vec![1.0, -2.0], &[1, 2])
            .unwrap()
            .requires_grad();
        let b = Tensor::from_vec(vec![0.5], &[1]).unwrap().requires_grad();
        let config = SgdConfig {
            weight_decay: 0.01,
            ..SgdConfig::default()
        };
        let mut opt = Sgd::new(
            vec![("w".into(), p.clone()), ("b".into(), b.clone())],
            config,
        )
        .unwrap();
        for (lr, g, gb) in [(0.1, [0.1, 0.3], 0.2), (0.05, [-0.2, 0.4], 0.1)] {
            opt.zero_grad();
            crate::ops::sum(
                &crate::ops::mul(&p, &Tensor::from_vec(g.to_vec(), &[1, 2]).unwrap()).unwrap(),
            )
            .unwrap()
            .backward()
            .unwrap();
            crate::ops::sum(
                &crate::ops::mul(&b, &Tensor::from_vec(vec![gb], &[1]).unwrap()).unwrap(),
            )
            .unwrap()
            .backward()
            .unwrap();
            opt.step(lr);
        }
        let want = [0.992_714_8, -2.100_589_5, 0.4444];
        let got = [p.to_vec(), b.to_vec()].concat();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // State round trip; a mismatched shape is an error.
        let state: crate::io::NamedArrays = opt
            .state()
            .into_iter()
            .map(|(n, s, v)| (n, (s, v)))
            .collect();
        let mut other = Sgd::new(
            vec![("w".into(), p.clone()), ("b".into(), b.clone())],
            config,
        )
        .unwrap();
        other.load_state(&state).unwrap();
        assert_eq!(other.state(), opt.state());
        let mut bad = state.clone();
        bad.insert("w".into(), (vec![2], vec![0.0; 2]));
        assert!(other.load_state(&bad).is_err());
    }
}
