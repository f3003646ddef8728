//! Eval-mode logits against pytorchcv (fixture from tools/pytorchcv_logits.py):
//! both sides fill every state_dict tensor from the same integer formula,
//! so the fixture needs only the logits. Also a safetensors file written by
//! PyTorch (int64 `num_batches_tracked`) loads and computes the same output.

mod common;

use gconv::io::NamedArrays;
use gconv::models;
use gconv::nn::{self, Module, Sequential, Strictness};
use gconv::{Tensor, no_grad};
use rand::SeedableRng;

fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `u_i ∈ [-0.5, 0.5)`, exact multiples of 2⁻²⁴ (the script's `uniform`).
fn uniform(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let seed = fnv1a64(name);
    (0..n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f64 / (1u64 << 24) as f64 - 0.5
    })
}

/// The script's `fill`: the value of state_dict tensor `name`.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    let last = name.rsplit('.').next().unwrap();
    let f: Box<dyn Fn(f64) -> f64> = if shape.len() >= 2 {
        let scale = (6.0 / shape[1..].iter().product::<usize>() as f64).sqrt();
        Box::new(move |u| u * scale)
    } else {
        match last {
            "weight" => Box::new(|u| 1.0 + 0.4 * u),
            "bias" | "running_mean" => Box::new(|u| 0.2 * u),
            "running_var" => Box::new(|u| 1.0 + 0.8 * u),
            other => panic!("no formula for {other}"),
        }
    };
    uniform(name, n).map(|u| f(u) as f32).collect()
}

fn formula_weights(net: &dyn Module) -> NamedArrays {
    nn::state_dict(net)
        .into_iter()
        .map(|(name, t)| {
            let values = if name.ends_with("num_batches_tracked") {
                t.to_vec()
            } else {
                fill(&name, t.shape())
            };
            (name, (t.shape().to_vec(), values))
        })
        .collect()
}

#[test]
fn eval_logits_match_pytorchcv() {
    let cases = common::load(include_str!("fixtures/pytorchcv_logits.txt"), &["model"]);
    assert_eq!(cases.len(), 4);
    for case in cases {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut net = models::build(&case.name, &mut rng).unwrap();
        nn::load_state_dict(
            net.as_ref(),
            &formula_weights(net.as_ref()),
            Strictness::Strict,
        )
        .unwrap();
        net.set_training(false);
        let shape: Vec<usize> = (0..4).map(|i| case.dim(i)).collect();
        let n = shape.iter().product();
        let x: Vec<f32> = uniform("input", n).map(|u| (2.0 * u) as f32).collect();
        let x = Tensor::from_vec(x, &shape).unwrap();
        let y = no_grad(|| net.forward(&x)).unwrap();
        common::assert_close(&y.to_vec(), case.get("logits"), &case.name);
    }
}

#[test]
fn safetensors_written_by_pytorch_load_and_agree() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let conv = nn::Conv2dConfig {
        padding: [1, 1],
        groups: 2,
        bias: false,
        ..nn::Conv2dConfig::new(4, 6, [3, 3])
    };
    let mut net = Sequential::new()
        .add("conv", nn::Conv2d::new(conv, &mut rng).unwrap())
        .add("bn", nn::BatchNorm2d::new(6));
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_conv_bn.safetensors"
    );
    let report = nn::load_safetensors(&net, path, Strictness::Strict).unwrap();
    assert_eq!(report, nn::LoadReport::default());
    let state = nn::state_dict(&net);
    let count = state
        .iter()
        .find(|(n, _)| n == "bn.num_batches_tracked")
        .unwrap();
    assert_eq!(count.1.item().unwrap(), 1.0);
    net.set_training(false);
    let case = &common::load(include_str!("fixtures/torch_conv_bn.txt"), &["case"])[0];
    let x = Tensor::from_vec(case.f32s("x"), &[1, 4, 5, 5]).unwrap();
    let y = no_grad(|| net.forward(&x)).unwrap();
    common::assert_close(&y.to_vec(), case.get("y"), "conv_bn");
}
