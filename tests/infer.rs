//! Inference plans against the unfused models (evaluation mode): same
//! logits within 1e-5 relative, with non-trivial batch-norm statistics;
//! buffers shared; bad plans and inputs are errors.

use gconv::infer::{Epilogue, Plan};
use gconv::models::{self, Head};
use gconv::nn::{self, Module, Sequential};
use gconv::ops::Pool2dArgs;
use gconv::{Tensor, no_grad};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A registered model in evaluation mode whose batch norms have random
/// affine parameters and running statistics (fresh ones are the identity
/// and would hide folding mistakes).
fn model(name: &str, head: Option<Head>, rng: &mut ChaCha8Rng) -> Box<dyn Module> {
    let mut net = models::build_for(name, head, rng).unwrap();
    net.set_training(false);
    for (key, t) in nn::state_dict(net.as_ref()) {
        let range = if key.ends_with("running_mean")
            || (key.contains("bn") && key.ends_with(".bias"))
        {
            -0.3..0.3
        } else if key.ends_with("running_var") || (key.contains("bn") && key.ends_with(".weight")) {
            0.5..1.5
        } else {
            continue;
        };
        t.data_mut()
            .iter_mut()
            .for_each(|v| *v = rng.random_range(range.clone()));
    }
    net
}

/// Runs `name` unfused and through a plan on one random input; returns
/// the largest difference relative to the largest logit.
fn planned_vs_unfused(name: &str, input: [usize; 4], head: Option<Head>) -> f32 {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let net = model(name, head, &mut rng);
    let x = Tensor::randn(&input, &mut rng);
    let want = no_grad(|| net.forward(&x)).unwrap().to_vec();
    let mut plan = Plan::new(input, |b, v| net.lower(b, v)).unwrap();
    assert_eq!(plan.output_shape(), [input[0], want.len() / input[0], 1, 1]);
    // Twice: a second run over the reused buffers gives the same result.
    let first = plan.run(&x.to_vec()).unwrap().to_vec();
    let got = plan.run(&x.to_vec()).unwrap().to_vec();
    assert_eq!(first, got, "{name}: runs differ");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst =
        gconv::simd::max_or_nan(got.iter().zip(&want).map(|(a, b)| f64::from((a - b).abs())));
    worst as f32 / scale
}

#[test]
fn shufflenets_match_the_unfused_model() {
    for (name, input) in [
        ("shufflenet_g1_w1", [1, 3, 224, 224]),
        ("shufflenet_g3_w1", [1, 3, 224, 224]),
        ("shufflenet_g8_w1", [1, 3, 224, 224]),
        ("shufflenet_g2_wd2", [2, 3, 96, 80]),
        ("shufflenet_g4_wd4_cifar", [3, 3, 32, 32]),
        ("shufflenet_g3_wd4_cifar", [2, 3, 32, 32]),
    ] {
        let err = planned_vs_unfused(name, input, None);
        assert!(err <= 1e-5, "{name}: relative error {err}");
    }
    let grey = Some(Head {
        in_channels: 1,
        num_classes: 10,
    });
    let err = planned_vs_unfused("shufflenet_g3_wd2_cifar", [4, 1, 28, 28], grey);
    assert!(err <= 1e-5, "grey: relative error {err}");
}

#[test]
fn resnexts_match_the_unfused_model() {
    for (name, input) in [
        ("resnext29_32x4d_cifar10", [2, 3, 32, 32]),
        ("resnext50_32x4d", [1, 3, 64, 64]),
    ] {
        let err = planned_vs_unfused(name, input, None);
        assert!(err <= 1e-5, "{name}: relative error {err}");
    }
}

#[test]
fn values_share_buffers() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net = models::build("resnext29_32x4d_cifar10", &mut rng).unwrap();
    let plan = Plan::new([2, 3, 32, 32], |b, x| net.lower(b, x)).unwrap();
    // 29 conv layers and more values; a handful of activation-sized buffers.
    let largest = 2 * 512 * 32 * 32;
    assert!(
        plan.buffer_len() <= 4 * largest,
        "{} floats",
        plan.buffer_len()
    );
}

#[test]
fn bad_plans_and_inputs_are_errors() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net = models::build("shufflenet_g1_wd4_cifar", &mut rng).unwrap();
    let mut plan = Plan::new([1, 3, 32, 32], |b, x| net.lower(b, x)).unwrap();
    let e = plan.run(&[0.0; 10]).unwrap_err().to_string();
    assert!(
        e.contains("has 10 values") && e.contains("[1, 3, 32, 32]"),
        "{e}"
    );
    let mut x = vec![0.5; 3 * 32 * 32];
    x[7] = f32::NAN;
    let e = plan.run(&x).unwrap_err().to_string();
    assert!(e.contains("input value 7 is NaN"), "{e}");

    let e = Plan::new([1, 3, 16, 16], |b, x| net.lower(b, x)).map(drop);
    assert!(e.is_ok(), "any input size the model takes: {e:?}");
    let e = Plan::new([1, 4, 32, 32], |b, x| net.lower(b, x))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("4-channel input"), "{e}");
    let e = Plan::new([0, 3, 32, 32], |b, x| net.lower(b, x))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("zero size"), "{e}");

    // A concatenation read before all its parts are written.
    let args = Pool2dArgs::new([2, 2]);
    let e = Plan::new([1, 3, 8, 8], |b, x| {
        let cat = b.parts(6, [4, 4]);
        b.avg_pool(x, args, false, Some((cat, 0)))?;
        b.max_pool(cat, args)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("3 of its 6 channels"), "{e}");

    // A shuffle that no weight permutation or row order can express.
    let conv = nn::Conv2d::new(
        nn::Conv2dConfig {
            groups: 2,
            ..nn::Conv2dConfig::new(4, 6, [3, 3])
        },
        &mut rng,
    )
    .unwrap();
    let e = Plan::new([1, 4, 8, 8], |b, x| {
        let ep = Epilogue {
            shuffle: Some(3),
            ..Epilogue::default()
        };
        b.conv(x, conv.spec(None)?, ep)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("cannot fold a channel shuffle of 3 groups"),
        "{e}"
    );

    // Modules without a lowering say which.
    let seq = Sequential::new().add("conv", conv);
    let e = Plan::new([1, 4, 8, 8], |b, x| seq.lower(b, x))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Sequential has no inference lowering"), "{e}");
}

#[test]
fn single_convolutions_match_the_op_on_every_path() {
    // Grouped 3×3 (im2col + pointwise at batch 1, direct at batch 3),
    // depthwise, a strided 1×1; bias, ReLU, and the input as a residual
    // where the shapes allow.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let configs = [
        nn::Conv2dConfig {
            groups: 2,
            padding: [1, 1],
            ..nn::Conv2dConfig::new(16, 16, [3, 3])
        },
        nn::Conv2dConfig {
            groups: 2,
            stride: [2, 2],
            ..nn::Conv2dConfig::new(6, 16, [3, 3])
        },
        nn::Conv2dConfig {
            groups: 8,
            padding: [1, 1],
            ..nn::Conv2dConfig::new(8, 8, [3, 3])
        },
        nn::Conv2dConfig {
            stride: [2, 2],
            ..nn::Conv2dConfig::new(8, 16, [1, 1])
        },
    ];
    for config in configs {
        let conv = nn::Conv2d::new(config, &mut rng).unwrap();
        for batch in [1, 3] {
            let input = [batch, config.in_channels, 9, 7];
            let x = Tensor::randn(&input, &mut rng);
            let y = no_grad(|| conv.forward(&x)).unwrap().to_vec();
            let same = y.len() == x.numel();
            let want: Vec<f32> = if same {
                y.iter()
                    .zip(x.to_vec())
                    .map(|(a, b)| (a + b).max(0.0))
                    .collect()
            } else {
                y.iter().map(|a| a.max(0.0)).collect()
            };
            let mut plan = Plan::new(input, |b, v| {
                let residual = same.then_some(v);
                let ep = Epilogue {
                    relu: true,
                    residual,
                    ..Epilogue::default()
                };
                b.conv(v, conv.spec(None)?, ep)
            })
            .unwrap();
            let got = plan.run(&x.to_vec()).unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{config:?} batch {batch}: {a} vs {b}"
                );
            }
        }
    }
}
