//! The networks against pytorchcv: parameter counts, state_dict names and
//! shapes (fixture from tools/pytorchcv_names.py), every registry name
//! builds, and forward/backward run.

use gconv::models::{self, ShuffleNet, ShuffleNetConfig};
use gconv::nn::{self, Module};
use gconv::{Tensor, ops};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// A model of the fixture: name, parameter count, state_dict keys and shapes.
type Reference = (String, usize, Vec<(String, Vec<usize>)>);

#[test]
fn names_shapes_and_counts_match_pytorchcv() {
    let text = include_str!("fixtures/pytorchcv_names.txt");
    let mut models: Vec<Reference> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap();
        if first == "model" {
            let name = words.next().unwrap().to_string();
            models.push((name, words.next().unwrap().parse().unwrap(), Vec::new()));
        } else {
            let shape = words.map(|w| w.parse().unwrap()).collect();
            models
                .last_mut()
                .unwrap()
                .2
                .push((first.to_string(), shape));
        }
    }
    assert_eq!(models.len(), 5);
    for (name, params, keys) in models {
        let net = models::build(&name, &mut rng()).unwrap();
        assert_eq!(nn::num_parameters(net.as_ref()), params, "{name}");
        let ours: Vec<(String, Vec<usize>)> = nn::state_dict(net.as_ref())
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        assert_eq!(ours, keys, "{name}");
    }
}

#[test]
fn parameter_counts_match_pytorchcv() {
    // ../shared/ANCHORS.md, counted by pytorchcv 0.0.74.
    let counts = [
        ("shufflenet_g1_w1", 1_531_936),
        ("shufflenet_g2_w1", 1_733_848),
        ("shufflenet_g4_w1", 1_968_344),
        ("shufflenet_g1_w3d4", 975_214),
        ("shufflenet_g3_w3d4", 1_238_266),
        ("shufflenet_g1_wd2", 534_484),
        ("shufflenet_g3_wd2", 718_324),
        ("shufflenet_g3_wd4", 305_902),
        ("resnext29_32x4d_cifar100", 4_868_004),
        ("resnext101_32x4d", 44_177_704),
        ("resnext29_16x64d_cifar10", 68_155_210),
    ];
    for (name, want) in counts {
        let net = models::build(name, &mut rng()).unwrap();
        assert_eq!(nn::num_parameters(net.as_ref()), want, "{name}");
    }
}

#[test]
fn every_registered_shufflenet_builds_and_bad_names_are_errors() {
    let names = models::names();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("shufflenet")).count(),
        60
    );
    for name in names.iter().filter(|n| n.starts_with("shufflenet")) {
        models::build(name, &mut rng()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let e = models::build("shufflenet_g5_w1", &mut rng())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("groups = 5 is not supported"), "{e}");
    let e = models::build("shufflenet_g3_w7", &mut rng())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown model") && e.contains("resnext50_32x4d"),
        "{e}"
    );
    let e = ShuffleNet::new(ShuffleNetConfig::new(6, 1.0), &mut rng())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1, 2, 3, 4 or 8"), "{e}");
    // g = 8 at 0.5×: pytorchcv's 12-channel stem would leave 180 branch
    // channels for 8 groups; the stem is rounded to 16.
    assert_eq!(
        ShuffleNetConfig::new(8, 0.5).channels().unwrap(),
        (16, [192, 384, 768])
    );
    assert_eq!(
        ShuffleNetConfig::new(3, 0.5).channels().unwrap(),
        (12, [120, 240, 480])
    );
}

#[test]
fn small_input_shufflenet_trains_and_evaluates() {
    let config = ShuffleNetConfig {
        in_channels: 1,
        num_classes: 10,
        small_input: true,
        ..ShuffleNetConfig::new(3, 0.25)
    };
    let mut net = ShuffleNet::new(config, &mut rng()).unwrap();
    let x = Tensor::randn(&[4, 1, 28, 28], &mut rng());
    let logits = net.forward(&x).unwrap();
    assert_eq!(logits.shape(), [4, 10]);
    let loss = ops::cross_entropy(&logits, &[0, 3, 5, 9], 0.0).unwrap();
    loss.backward().unwrap();
    assert!(nn::parameters(&net).iter().all(|(_, p)| p.grad().is_some()));
    net.set_training(false);
    let y = gconv::no_grad(|| net.forward(&x)).unwrap();
    assert!(y.data().iter().all(|v| v.is_finite()));
}

#[test]
fn resnext29_runs_on_cifar_images() {
    let mut net = models::build("resnext29_32x4d_cifar10", &mut rng()).unwrap();
    net.set_training(false);
    let x = Tensor::randn(&[1, 3, 32, 32], &mut rng());
    let y = gconv::no_grad(|| net.forward(&x)).unwrap();
    assert_eq!(y.shape(), [1, 10]);
}

#[test]
fn shufflenet_multiply_adds_are_within_two_percent_of_the_paper() {
    // Zhang et al., Table 1: complexity of the 1× networks at 224×224, MFLOPs.
    for (g, paper) in [(1, 143.0), (2, 140.0), (3, 137.0), (4, 133.0), (8, 137.0)] {
        let name = format!("shufflenet_g{g}_w1");
        let mut net = models::build(&name, &mut rng()).unwrap();
        net.set_training(false);
        let s = nn::summary(net.as_ref(), &[3, 224, 224]).unwrap();
        let m = s.macs as f64 / 1e6;
        assert!(
            (m / paper - 1.0).abs() <= 0.02,
            "{name}: {m:.1} M vs {paper} M"
        );
        // Every parameter is used once, and the rows add up.
        let rows: usize = s.layers.iter().map(|l| l.params).sum();
        assert_eq!(rows, s.params, "{name}");
        assert_eq!(s.layers.last().unwrap().output_shape, [1000]);
    }
}

#[test]
fn summary_names_match_the_state_dict_and_place_parameter_free_steps() {
    let mut net = models::build("resnext29_32x4d_cifar10", &mut rng()).unwrap();
    net.set_training(false);
    let s = nn::summary(net.as_ref(), &[3, 32, 32]).unwrap();
    let names: Vec<&str> = s.layers.iter().map(|l| l.name.as_str()).collect();
    for want in [
        "features.init_block.conv",
        "features.stage1.unit1.identity_conv.conv",
        "features.stage1.unit1.body.conv2.conv",
        "features.stage1.unit1.add_relu",
        "features.stage3.unit3.add_relu",
        "features.global_avg_pool2d",
        "output",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let g32 = s
        .layers
        .iter()
        .find(|l| l.name == "features.stage2.unit1.body.conv2.conv")
        .unwrap();
    // 3×3 grouped conv, 256 → 256 channels in 32 groups, stride 2: 16×16 outputs.
    assert_eq!(
        (g32.kind.as_str(), g32.output_shape.as_slice()),
        ("Conv2d 3×3/2 g32", &[256, 16, 16][..])
    );
    assert_eq!(g32.macs, 256 * 16 * 16 * 8 * 9);
    assert_eq!(g32.params, 256 * 8 * 9);
    // An input the network cannot take is an error, not a panic.
    let e = nn::summary(net.as_ref(), &[1, 32, 32]).unwrap_err();
    assert!(e.to_string().contains("channels"), "{e}");
}
