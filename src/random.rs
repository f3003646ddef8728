//! Seeded pseudo-random data for benchmarks, demos and examples: the same
//! seed gives the same values on every machine (ChaCha8).

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An array of the given shape with values uniform in [−0.5, 0.5).
pub fn uniform(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random::<f64>() - 0.5)
}
