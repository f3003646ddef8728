use super::*;
use crate::ops::{self, Pool2dArgs};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// A small ShuffleNet-like classifier for 1×8×8 images and 3 classes.
fn tiny_net(seed: u64) -> Sequential {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let conv = |cfg: Conv2dConfig, rng: &mut ChaCha8Rng| Conv2d::new(cfg, rng).unwrap();
    let stem = Sequential::new()
        .add(
            "conv",
            conv(
                Conv2dConfig {
                    padding: [1, 1],
                    bias: false,
                    ..Conv2dConfig::new(1, 6, [3, 3])
                },
                &mut rng,
            ),
        )
        .add("bn", BatchNorm2d::new(6))
        .add("activ", ReLU);
    let unit = Sequential::new()
        .add(
            "compress",
            conv(
                Conv2dConfig {
                    groups: 3,
                    ..Conv2dConfig::new(6, 6, [1, 1])
                },
                &mut rng,
            ),
        )
        .add("shuffle", ChannelShuffle { groups: 3 })
        .add(
            "dw",
            conv(
                Conv2dConfig {
                    groups: 6,
                    stride: [2, 2],
                    padding: [1, 1],
                    ..Conv2dConfig::new(6, 6, [3, 3])
                },
                &mut rng,
            ),
        )
        .add(
            "pool",
            MaxPool2d {
                args: Pool2dArgs {
                    kernel_size: [3, 3],
                    stride: [2, 2],
                    padding: [1, 1],
                },
            },
        );
    Sequential::new()
        .add(
            "features",
            Sequential::new()
                .add("init_block", stem)
                .add("unit1", unit)
                .add("final_pool", GlobalAvgPool2d),
        )
        .add("flatten", Flatten)
        .add("output", Linear::new(6, 3, true, &mut rng))
}

#[test]
fn names_follow_pytorch_state_dict_order() {
    let net = tiny_net(1);
    let names: Vec<String> = state_dict(&net).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "features.init_block.conv.weight",
            "features.init_block.bn.weight",
            "features.init_block.bn.bias",
            "features.init_block.bn.running_mean",
            "features.init_block.bn.running_var",
            "features.init_block.bn.num_batches_tracked",
            "features.unit1.compress.weight",
            "features.unit1.compress.bias",
            "features.unit1.dw.weight",
            "features.unit1.dw.bias",
            "output.weight",
            "output.bias",
        ]
    );
    // 54 + 6 + 6 + (6·2 + 6) + (6·9 + 6) + (3·6 + 3)
    assert_eq!(num_parameters(&net), 54 + 12 + 18 + 60 + 21);
    assert!(parameters(&net).iter().all(|(_, t)| t.is_tracked()));
}

#[test]
fn training_reduces_the_loss_and_eval_uses_running_statistics() {
    let mut net = tiny_net(2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Learnable: the class shifts the image's brightness.
    let targets: Vec<usize> = (0..12).map(|i| i % 3).collect();
    let noise = Tensor::randn(&[12, 1, 8, 8], &mut rng).to_vec();
    let shifted = noise
        .iter()
        .enumerate()
        .map(|(i, v)| 0.3 * v + targets[i / 64] as f32 - 1.0);
    let x = Tensor::from_vec(shifted.collect(), &[12, 1, 8, 8]).unwrap();
    let params = parameters(&net);
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = ops::cross_entropy(&net.forward(&x).unwrap(), &targets, 0.0).unwrap();
        losses.push(loss.item().unwrap());
        params.iter().for_each(|(_, p)| p.zero_grad());
        loss.backward().unwrap();
        for (_, p) in &params {
            let g = p.grad().unwrap().to_vec();
            p.data_mut()
                .iter_mut()
                .zip(g)
                .for_each(|(v, g)| *v -= 0.2 * g);
        }
    }
    assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
    let bn = state_dict(&net)
        .into_iter()
        .find(|(n, _)| n.ends_with("num_batches_tracked"))
        .unwrap()
        .1;
    assert_eq!(bn.item().unwrap(), 30.0);
    net.set_training(false);
    // In eval mode the output of one image does not depend on the batch.
    let one = Tensor::from_vec(x.data()[..64].to_vec(), &[1, 1, 8, 8]).unwrap();
    let alone = net.forward(&one).unwrap().to_vec();
    let in_batch = net.forward(&x).unwrap().to_vec();
    for (a, b) in alone.iter().zip(&in_batch[..3]) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn load_state_dict_round_trips_and_reports_mismatches() {
    let (a, b) = (tiny_net(4), tiny_net(5));
    let values: BTreeMap<String, (Vec<usize>, Vec<f32>)> = state_dict(&a)
        .into_iter()
        .map(|(n, t)| (n, (t.shape().to_vec(), t.to_vec())))
        .collect();
    assert_eq!(
        load_state_dict(&b, &values, Strictness::Strict).unwrap(),
        LoadReport::default()
    );
    for ((_, ta), (_, tb)) in state_dict(&a).iter().zip(state_dict(&b).iter()) {
        assert_eq!(ta.to_vec(), tb.to_vec());
    }
    let mut bad = values.clone();
    bad.remove("output.bias");
    bad.insert("extra".into(), (vec![1], vec![0.0]));
    bad.insert("output.weight".into(), (vec![6, 3], vec![0.0; 18]));
    let e = load_state_dict(&b, &bad, Strictness::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing output.bias")
            && e.contains("unexpected extra")
            && e.contains("output.weight: shape [6, 3]"),
        "{e}"
    );
    // Nothing changed on error.
    assert_eq!(state_dict(&b)[0].1.to_vec(), state_dict(&a)[0].1.to_vec());

    // Lenient: missing and unexpected names are reported, shapes still checked.
    let e = load_state_dict(&b, &bad, Strictness::Lenient).unwrap_err();
    assert!(e.to_string().contains("output.weight: shape [6, 3]"), "{e}");
    bad.remove("output.weight");
    let c = tiny_net(6);
    let report = load_state_dict(&c, &bad, Strictness::Lenient).unwrap();
    assert_eq!(report.missing, ["output.weight", "output.bias"]);
    assert_eq!(report.unexpected, ["extra"]);
    assert_eq!(state_dict(&c)[0].1.to_vec(), state_dict(&a)[0].1.to_vec());
}

#[test]
fn safetensors_round_trip_through_a_file() {
    let (a, b) = (tiny_net(4), tiny_net(5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    save_safetensors(&a, &path, None).unwrap();
    load_safetensors(&b, &path, Strictness::Strict).unwrap();
    for ((na, ta), (nb, tb)) in state_dict(&a).iter().zip(state_dict(&b).iter()) {
        assert_eq!((na, ta.to_vec()), (nb, tb.to_vec()));
    }
    let other = Sequential::new().add("x", ReLU);
    let e = load_safetensors(&other, &path, Strictness::Strict).unwrap_err();
    assert!(
        e.to_string().contains("net.safetensors") && e.to_string().contains("unexpected"),
        "{e}"
    );
}

#[test]
fn conv2d_rejects_groups_that_do_not_divide() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let e = Conv2d::new(
        Conv2dConfig {
            groups: 4,
            ..Conv2dConfig::new(6, 8, [1, 1])
        },
        &mut rng,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("groups = 4"), "{e}");
}

#[test]
fn batch_norm_folds_into_the_convolution_for_inference_only() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let config = Conv2dConfig {
        groups: 2,
        padding: [1, 1],
        bias: true,
        ..Conv2dConfig::new(4, 6, [3, 3])
    };
    let conv = Conv2d::new(config, &mut rng).unwrap();
    let mut bn = BatchNorm2d::new(6);
    for (t, base) in [
        (&bn.weight, 0.5),
        (&bn.bias, -0.2),
        (&bn.running_mean, 0.3),
        (&bn.running_var, 1.5),
    ] {
        let n = t.numel();
        t.data_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = base + 0.1 * i as f32 / n as f32);
    }
    bn.set_training(false);
    let x = Tensor::randn(&[2, 4, 5, 5], &mut rng);
    // With gradients on, the layers run one after the other.
    let unfused = bn.after_conv(&conv, &x, false).unwrap();
    let folded = crate::no_grad(|| bn.after_conv(&conv, &x, false)).unwrap();
    let (want, got) = (unfused.to_vec(), folded.to_vec());
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * scale, "{g} vs {w}");
    }
    let (_, ops) =
        crate::tensor::trace::trace(|| crate::no_grad(|| bn.after_conv(&conv, &x, false)).unwrap());
    let names: Vec<&str> = ops.iter().map(|o| o.op).collect();
    assert_eq!(
        names,
        ["conv2d", "batch_norm"],
        "a summary shows both layers"
    );
}

#[test]
fn running_statistics_are_tracked_again_after_a_panic_inside_without_running_stats() {
    let bn = BatchNorm2d::new(2);
    let x = Tensor::randn(&[4, 2, 3, 3], &mut ChaCha8Rng::seed_from_u64(3));
    without_running_stats(|| bn.forward(&x).unwrap());
    assert_eq!(bn.running_mean.to_vec(), vec![0.0; 2]);
    let caught = std::panic::catch_unwind(|| without_running_stats(|| panic!("replica failed")));
    assert!(caught.is_err());
    bn.forward(&x).unwrap();
    assert!(bn.running_mean.to_vec().iter().all(|&m| m != 0.0));
}
