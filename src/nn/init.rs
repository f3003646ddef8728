//! Weight initialisation as PyTorch's `torch.nn.init`.

use crate::tensor::Tensor;
use rand::Rng;

/// Gain of the `leaky_relu` nonlinearity with negative slope `a`:
/// `sqrt(2 / (1 + a²))` (`a = 0` is ReLU's `sqrt(2)`).
pub fn leaky_relu_gain(a: f32) -> f32 {
    (2.0 / (1.0 + a * a)).sqrt()
}

/// Kaiming (He) uniform values: `U(−b, b)` with `b = gain · sqrt(3 / fan_in)`
/// (PyTorch `kaiming_uniform_(w, a, mode='fan_in')` with `gain =
/// leaky_relu_gain(a)`).
pub fn kaiming_uniform(shape: &[usize], fan_in: usize, gain: f32, rng: &mut impl Rng) -> Tensor {
    let bound = gain * (3.0 / fan_in.max(1) as f32).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

/// PyTorch's default initialisation of conv and linear layers: weights
/// Kaiming uniform with `a = sqrt(5)` (so `b = 1 / sqrt(fan_in)`), biases
/// `U(−1 / sqrt(fan_in), 1 / sqrt(fan_in))`.
pub fn default_weight_and_bias(
    weight_shape: &[usize],
    fan_in: usize,
    bias: bool,
    rng: &mut impl Rng,
) -> (Tensor, Option<Tensor>) {
    let weight = kaiming_uniform(weight_shape, fan_in, leaky_relu_gain(5f32.sqrt()), rng);
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    let bias = bias.then(|| Tensor::uniform(&[weight_shape[0]], -bound, bound, rng));
    (weight.requires_grad(), bias.map(Tensor::requires_grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bounds_follow_pytorch() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Conv 16 → 32, 3×3: fan_in 144, default bound 1/12.
        let (w, b) = default_weight_and_bias(&[32, 16, 3, 3], 144, true, &mut rng);
        let max = w.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 1.0 / 12.0 && max > 0.08, "{max}");
        assert_eq!(b.unwrap().shape(), [32]);
        assert!(w.is_tracked());
        let k = kaiming_uniform(&[1000], 6, leaky_relu_gain(0.0), &mut rng);
        let max = k.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 1.0 && max > 0.99, "{max}");
    }
}
