//! Finite-difference checks of every op's gradients, and argument errors.

use super::*;
use crate::tensor::{Tensor, no_grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn param(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, &mut rng(seed)).requires_grad()
}

/// Compares autograd's gradients of `L = Σ r · f(inputs)` (fixed random
/// `r`) with central differences of step `h` on every `stride`-th element
/// of every input; `L` is summed in float64 so that the float32 forward
/// pass's rounding stays well below the tolerance.
fn gradcheck(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>, h: f32, stride: usize) {
    inputs.iter().for_each(Tensor::zero_grad);
    let y = f(inputs).unwrap();
    let r = Tensor::randn(y.shape(), &mut rng(99));
    sum(&mul(&y, &r).unwrap()).unwrap().backward().unwrap();
    let loss = || -> f64 {
        let y = no_grad(|| f(inputs)).unwrap();
        y.data()
            .iter()
            .zip(r.data().iter())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    for (k, x) in inputs.iter().enumerate() {
        let grad = x.grad().expect("every input gets a gradient").to_vec();
        for i in (0..x.numel()).step_by(stride) {
            let orig = x.data()[i];
            x.data_mut()[i] = orig + h;
            let plus = loss();
            x.data_mut()[i] = orig - h;
            let minus = loss();
            x.data_mut()[i] = orig;
            let numeric = (plus - minus) / (2.0 * h as f64);
            let err = (numeric - grad[i] as f64).abs();
            assert!(
                err <= 2e-2 * (1.0 + numeric.abs()),
                "input {k} element {i}: autograd {} vs numeric {numeric}",
                grad[i]
            );
        }
    }
}

#[test]
fn conv2d_gradients() {
    let cases = [
        // (c_in, c_out, groups, kernel, stride, padding, dilation, bias)
        (4, 6, 2, [3, 3], [1, 1], [1, 1], [1, 1], true),
        (6, 6, 6, [3, 3], [2, 2], [1, 1], [1, 1], false),
        (4, 8, 4, [1, 1], [1, 1], [0, 0], [1, 1], true),
        (3, 6, 3, [3, 3], [1, 2], [2, 1], [2, 1], true),
        (1, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1], false),
    ];
    for (i, (ci, co, groups, k, stride, padding, dilation, bias)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let mut inputs = vec![
            param(&[2, ci, 6, 7], seed),
            param(&[co, ci / groups, k[0], k[1]], seed + 1),
        ];
        if bias {
            inputs.push(param(&[co], seed + 2));
        }
        let args = Conv2dArgs {
            stride,
            padding,
            dilation,
            groups,
        };
        gradcheck(&inputs, |t| conv2d(&t[0], &t[1], t.get(2), args), 1e-2, 3);
    }
}

#[test]
fn conv2d_overwrites_recycled_buffers() {
    use crate::tensor::recycle;
    // Long enough to be recycled: 65,536 input and 131,072 output values.
    let (x, w) = (param(&[2, 8, 64, 64], 30), param(&[16, 4, 3, 3], 31));
    let args = Conv2dArgs {
        padding: [1, 1],
        groups: 2,
        ..Conv2dArgs::default()
    };
    let run = || {
        let (x, w) = (x.detach().requires_grad(), w.detach().requires_grad());
        let y = conv2d(&x, &w, None, args).unwrap();
        let dy: Vec<f32> = (0..y.numel()).map(|i| (i % 7) as f32 - 3.0).collect();
        y.backward_with(dy).unwrap();
        [y.to_vec(), x.grad().unwrap().to_vec()]
    };
    let want = run();
    // The first run wanted buffers of both lengths: the pool now keeps
    // NaN ones for the output and the input gradient (after whatever the
    // first run left there).
    for len in want.iter().map(Vec::len) {
        recycle::take(len);
        recycle::give(vec![f32::NAN; len]);
    }
    assert_eq!(run(), want);
}

#[test]
fn pooling_overwrites_recycled_buffers() {
    use crate::tensor::recycle;
    // Max and average pooling, ShuffleNet's 3×3/2 windows with padding on
    // rows long enough for the plane kernels and on short ones (the lanes
    // kernels), and 2×2 windows; outputs and inputs of at least 65,536
    // values, long enough to be recycled.
    let cases = [
        ([2, 8, 128, 128], 3, 2, 1),
        ([48, 32, 14, 14], 3, 2, 1),
        ([2, 8, 128, 128], 2, 2, 0),
    ];
    for (i, (shape, k, stride, pad)) in cases.into_iter().enumerate() {
        let x = param(&shape, 40 + i as u64);
        let args = Pool2dArgs {
            kernel_size: [k, k],
            stride: [stride, stride],
            padding: [pad, pad],
        };
        for max in [true, false] {
            let run = || {
                let x = x.detach().requires_grad();
                let y = if max {
                    max_pool2d(&x, args)
                } else {
                    avg_pool2d(&x, args)
                }
                .unwrap();
                let dy: Vec<f32> = (0..y.numel()).map(|i| (i % 7) as f32 - 3.0).collect();
                y.backward_with(dy).unwrap();
                [y.to_vec(), x.grad().unwrap().to_vec()]
            };
            let want = run();
            for len in want.iter().map(Vec::len) {
                assert!(len >= 65_536, "case {i}: {len} values are not recycled");
                recycle::take(len);
                recycle::give(vec![f32::NAN; len]);
            }
            assert_eq!(run(), want, "case {i}, max {max}");
        }
    }
}

#[test]
fn conv2d_after_shuffle_equals_shuffle_then_conv2d() {
    // Depthwise on planes the direct kernels take (gathered in place), on
    // 4 × 4 outputs (the lane kernels: a shuffled copy first), and a
    // grouped layer (a shuffled copy first).
    let cases = [
        ([2, 12, 9, 11], 12, 3, 1),
        ([2, 12, 14, 14], 12, 4, 2),
        ([2, 12, 8, 8], 12, 3, 2),
        ([1, 12, 9, 9], 4, 3, 1),
    ];
    for (i, (shape, groups, shuffle, stride)) in cases.into_iter().enumerate() {
        let seed = 60 + 3 * i as u64;
        let (x, w) = (
            param(&shape, seed),
            param(&[12, 12 / groups, 3, 3], seed + 1),
        );
        let b = param(&[12], seed + 2);
        let args = Conv2dArgs {
            stride: [stride, stride],
            padding: [1, 1],
            groups,
            ..Conv2dArgs::default()
        };
        let run = |fused: bool| {
            let (x, w, b) = (
                x.detach().requires_grad(),
                w.detach().requires_grad(),
                b.detach().requires_grad(),
            );
            let y = if fused {
                conv2d_after_shuffle(&x, &w, Some(&b), args, shuffle)
            } else {
                conv2d(&channel_shuffle(&x, shuffle).unwrap(), &w, Some(&b), args)
            }
            .unwrap();
            let dy: Vec<f32> = (0..y.numel()).map(|i| (i % 7) as f32 - 3.0).collect();
            y.backward_with(dy).unwrap();
            [
                y.to_vec(),
                x.grad().unwrap().to_vec(),
                w.grad().unwrap().to_vec(),
                b.grad().unwrap().to_vec(),
            ]
        };
        assert_eq!(run(true), run(false), "case {i}");
    }
    let x = Tensor::zeros(&[1, 12, 9, 9]);
    let e = conv2d_after_shuffle(
        &x,
        &Tensor::zeros(&[12, 1, 3, 3]),
        None,
        Conv2dArgs {
            groups: 12,
            ..Default::default()
        },
        5,
    )
    .unwrap_err();
    assert!(e.to_string().contains("groups = 5"), "{e}");
}

#[test]
fn conv2d_rejects_bad_arguments() {
    let x = Tensor::zeros(&[1, 4, 5, 5]);
    let w = Tensor::zeros(&[6, 2, 3, 3]);
    let e = conv2d(
        &x,
        &w,
        None,
        Conv2dArgs {
            groups: 3,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("groups = 3"), "{e}");
    assert!(
        conv2d(
            &x,
            &w,
            None,
            Conv2dArgs {
                groups: 2,
                ..Default::default()
            }
        )
        .is_ok()
    );
    let e = conv2d(&Tensor::zeros(&[4, 5, 5]), &w, None, Conv2dArgs::default()).unwrap_err();
    assert!(e.to_string().contains("[N, C, H, W]"), "{e}");
    let bias = Tensor::zeros(&[5]);
    let args = Conv2dArgs {
        groups: 2,
        ..Default::default()
    };
    assert!(conv2d(&x, &w, Some(&bias), args).is_err());
    let e = channel_shuffle(&Tensor::zeros(&[1, 6, 2, 2]), 4).unwrap_err();
    assert!(e.to_string().contains("groups = 4"), "{e}");
}

#[test]
fn shuffle_cat_and_elementwise_gradients() {
    let x = param(&[2, 6, 3, 2], 1);
    gradcheck(
        std::slice::from_ref(&x),
        |t| channel_shuffle(&t[0], 3),
        1e-2,
        1,
    );
    // One group, or one channel per group: the identity, gradient included.
    for g in [1, 6] {
        assert_eq!(channel_shuffle(&x, g).unwrap().to_vec(), x.to_vec());
        gradcheck(
            std::slice::from_ref(&x),
            |t| channel_shuffle(&t[0], g),
            1e-2,
            1,
        );
    }
    assert!(channel_shuffle(&x, 0).is_err());
    let (a, b) = (param(&[2, 2, 3, 3], 2), param(&[2, 3, 3, 3], 3));
    gradcheck(&[a, b], |t| cat(&[&t[0], &t[1]]), 1e-2, 2);
    let (a, b) = (param(&[3, 4], 4), param(&[3, 4], 5));
    gradcheck(
        &[a, b],
        |t| add(&relu(&t[0])?, &mul(&t[0], &t[1])?),
        1e-3,
        1,
    );
    let (a, b) = (param(&[2, 3, 2, 2], 9), param(&[2, 3, 2, 2], 10));
    gradcheck(&[a, b], |t| add_relu(&t[0], &mul(&t[0], &t[1])?), 1e-3, 1);
}

#[test]
fn fused_add_relu_equals_relu_of_add() {
    let (a, b) = (param(&[2, 3, 4, 4], 11), param(&[2, 3, 4, 4], 12));
    let run = |fuse: bool| {
        let (a, b) = (a.detach().requires_grad(), b.detach().requires_grad());
        let y = if fuse {
            add_relu(&a, &b).unwrap()
        } else {
            relu(&add(&a, &b).unwrap()).unwrap()
        };
        let dy: Vec<f32> = (0..y.numel()).map(|i| (i % 5) as f32 - 2.0).collect();
        y.backward_with(dy).unwrap();
        [
            y.to_vec(),
            a.grad().unwrap().to_vec(),
            b.grad().unwrap().to_vec(),
        ]
    };
    let (want, got) = (run(false), run(true));
    assert_eq!(got, want);
    assert!(want[0].contains(&0.0), "the ReLU clips something");
    assert!(add_relu(&a, &param(&[2, 3, 4, 3], 13)).is_err());
}

#[test]
fn add_relu_gives_a_gradient_to_the_one_input_that_needs_it() {
    let a = param(&[2, 3, 4, 4], 11);
    let b = param(&[2, 3, 4, 4], 12).detach();
    let y = add_relu(&a, &b).unwrap();
    y.backward_with(vec![1.0; y.numel()]).unwrap();
    let want: Vec<f32> = y.to_vec().iter().map(|&v| f32::from(v > 0.0)).collect();
    assert_eq!(a.grad().unwrap().to_vec(), want);
    assert!(b.grad().is_none());
}

#[test]
fn batch_norm_gradients_in_training_and_evaluation() {
    let (x, w, b) = (param(&[3, 4, 3, 2], 6), param(&[4], 7), param(&[4], 8));
    let train = BatchNormArgs::default();
    gradcheck(
        &[x.clone(), w.clone(), b.clone()],
        |t| batch_norm(&t[0], None, Some((&t[1], &t[2])), train),
        1e-2,
        2,
    );
    let (rm, rv) = (Tensor::full(&[4], 0.3), Tensor::full(&[4], 2.0));
    let eval = BatchNormArgs {
        training: false,
        ..train
    };
    gradcheck(
        &[x, w, b],
        |t| batch_norm(&t[0], Some((&rm, &rv)), Some((&t[1], &t[2])), eval),
        1e-2,
        2,
    );
}

#[test]
fn fused_batch_norm_relu_equals_relu_of_batch_norm() {
    let (x, w, b) = (param(&[3, 4, 3, 2], 16), param(&[4], 17), param(&[4], 18));
    let (rm, rv) = (Tensor::full(&[4], 0.3), Tensor::full(&[4], 2.0));
    for training in [true, false] {
        let plain = BatchNormArgs {
            training,
            ..Default::default()
        };
        let fused = BatchNormArgs {
            relu: true,
            ..plain
        };
        let run = |args: BatchNormArgs, fuse: bool| {
            let (x, w, b) = (
                x.detach().requires_grad(),
                w.detach().requires_grad(),
                b.detach().requires_grad(),
            );
            let y = batch_norm(&x, Some((&rm, &rv)), Some((&w, &b)), args).unwrap();
            let y = if fuse { y } else { relu(&y).unwrap() };
            let dy: Vec<f32> = (0..y.numel())
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
                .collect();
            y.backward_with(dy).unwrap();
            [
                y.to_vec(),
                x.grad().unwrap().to_vec(),
                w.grad().unwrap().to_vec(),
                b.grad().unwrap().to_vec(),
            ]
        };
        let (want, got) = (run(plain, false), run(fused, true));
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "training {training}: {g} vs {w}");
        }
        assert!(want[0].contains(&0.0), "the ReLU clips something");
    }
}

#[test]
fn fused_batch_norm_add_relu_equals_the_separate_operations() {
    let (x, w, b) = (param(&[3, 4, 3, 2], 26), param(&[4], 27), param(&[4], 28));
    let r = param(&[3, 4, 3, 2], 29);
    for training in [true, false] {
        let args = BatchNormArgs {
            training,
            ..Default::default()
        };
        let run = |fuse: bool| {
            let (rm, rv) = (Tensor::full(&[4], 0.3), Tensor::full(&[4], 2.0));
            let t = [&x, &w, &b, &r].map(|t| t.detach().requires_grad());
            let running = Some((&rm, &rv));
            let y = if fuse {
                batch_norm_add_relu(&t[0], &t[3], running, Some((&t[1], &t[2])), args)
            } else {
                let y = batch_norm(&t[0], running, Some((&t[1], &t[2])), args).unwrap();
                add_relu(&y, &t[3])
            }
            .unwrap();
            let dy: Vec<f32> = (0..y.numel())
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
                .collect();
            y.backward_with(dy).unwrap();
            let mut out = vec![y.to_vec(), rm.to_vec(), rv.to_vec()];
            out.extend(t.iter().map(|t| t.grad().unwrap().to_vec()));
            out
        };
        let (want, got) = (run(false), run(true));
        // The same roundings in the same order: equal bit for bit.
        assert_eq!(got, want, "training {training}");
        assert!(want[0].contains(&0.0), "the ReLU clips something");
    }
    gradcheck(
        &[x.clone(), w.clone(), b.clone(), r.clone()],
        |t| {
            batch_norm_add_relu(
                &t[0],
                &t[3],
                None,
                Some((&t[1], &t[2])),
                BatchNormArgs::default(),
            )
        },
        // Small steps: a step of γ or β moves a whole channel, and no value
        // may cross the ReLU's kink.
        1e-3,
        2,
    );
    let short = param(&[3, 4, 2, 2], 30);
    let err = batch_norm_add_relu(&x, &short, None, None, BatchNormArgs::default()).unwrap_err();
    assert!(err.to_string().contains("residual shape"), "{err}");
}

#[test]
fn batch_norm_updates_running_statistics_like_pytorch() {
    // Channel values 1, 2, 3, 4: mean 2.5, biased variance 1.25,
    // unbiased 5/3.
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 1, 2]).unwrap();
    let (rm, rv) = (Tensor::zeros(&[1]), Tensor::full(&[1], 1.0));
    let y = batch_norm(&x, Some((&rm, &rv)), None, BatchNormArgs::default()).unwrap();
    assert!((rm.item().unwrap() - 0.25).abs() < 1e-6);
    assert!((rv.item().unwrap() - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
    let want = (1.0 - 2.5) / (1.25f32 + 1e-5).sqrt();
    assert!((y.data()[0] - want).abs() < 1e-5);
    let one = Tensor::zeros(&[1, 3]);
    assert!(batch_norm(&one, None, None, BatchNormArgs::default()).is_err());
    let eval = BatchNormArgs {
        training: false,
        ..Default::default()
    };
    assert!(batch_norm(&x, None, None, eval).is_err());
}

#[test]
fn pooling_gradients() {
    // Distinct values spaced well beyond the step, so that no maximum changes.
    let values: Vec<f32> = (0..2 * 3 * 7 * 6)
        .map(|i| ((i * 37) % 252) as f32 * 0.1)
        .collect();
    let x = Tensor::from_vec(values, &[2, 3, 7, 6])
        .unwrap()
        .requires_grad();
    let args = Pool2dArgs {
        kernel_size: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    gradcheck(
        std::slice::from_ref(&x),
        |t| max_pool2d(&t[0], args),
        1e-2,
        1,
    );
    let x = param(&[2, 3, 7, 6], 9);
    gradcheck(
        std::slice::from_ref(&x),
        |t| avg_pool2d(&t[0], args),
        1e-2,
        1,
    );
    gradcheck(
        std::slice::from_ref(&x),
        |t| avg_pool2d(&t[0], Pool2dArgs::new([2, 3])),
        1e-2,
        1,
    );
    gradcheck(&[x], |t| global_avg_pool2d(&t[0]), 1e-2, 1);
}

#[test]
fn linear_softmax_and_loss_gradients() {
    let (x, w, b) = (param(&[3, 5], 10), param(&[4, 5], 11), param(&[4], 12));
    gradcheck(&[x, w, b], |t| linear(&t[0], &t[1], Some(&t[2])), 1e-2, 1);
    let z = param(&[3, 5], 13);
    gradcheck(std::slice::from_ref(&z), |t| softmax(&t[0]), 1e-2, 1);
    gradcheck(std::slice::from_ref(&z), |t| log_softmax(&t[0]), 1e-2, 1);
    for eps in [0.0, 0.1] {
        gradcheck(
            std::slice::from_ref(&z),
            |t| cross_entropy(&t[0], &[4, 0, 2], eps),
            1e-2,
            1,
        );
    }
    gradcheck(&[z], |t| t[0].reshape(&[5, 3])?.flatten(), 1e-2, 1);
}

#[test]
fn loss_rejects_bad_targets_and_nan() {
    let z = Tensor::zeros(&[2, 3]);
    assert!(
        cross_entropy(&z, &[0, 3], 0.0)
            .unwrap_err()
            .to_string()
            .contains("target 3")
    );
    assert!(cross_entropy(&z, &[0], 0.0).is_err());
    assert!(cross_entropy(&z, &[0, 1], 1.5).is_err());
    let nan = Tensor::from_vec(vec![0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0], &[2, 3]).unwrap();
    assert!(
        cross_entropy(&nan, &[0, 1], 0.0)
            .unwrap_err()
            .to_string()
            .contains("NaN")
    );
    // Uniform scores: loss = ln 3 whatever the smoothing.
    let loss = cross_entropy(&z, &[0, 1], 0.1).unwrap().item().unwrap();
    assert!((loss - 3f32.ln()).abs() < 1e-6);
}

#[test]
fn relu_and_batch_norm_keep_nan_like_pytorch() {
    let x = Tensor::from_vec(vec![f32::NAN, -1.0, 2.0, f32::NEG_INFINITY], &[1, 1, 4]).unwrap();
    let bits = |t: &Tensor| -> Vec<String> { t.data().iter().map(|v| format!("{v}")).collect() };
    assert_eq!(bits(&relu(&x).unwrap()), ["NaN", "0", "2", "0"]);
    let zeros = Tensor::zeros(&[1, 1, 4]);
    assert_eq!(bits(&add_relu(&x, &zeros).unwrap()), ["NaN", "0", "2", "0"]);
    // Evaluation-mode batch norm with mean 0 and variance 1 (almost the
    // identity): a NaN stays NaN, with and without the fused ReLU, and
    // −∞ stays −∞ without it.
    let (rm, rv) = (Tensor::zeros(&[1]), Tensor::full(&[1], 1.0 - 1e-5));
    for relu in [false, true] {
        let args = BatchNormArgs {
            training: false,
            relu,
            ..Default::default()
        };
        let y = batch_norm(&x, Some((&rm, &rv)), None, args).unwrap();
        let want = if relu {
            ["NaN", "0", "2", "0"]
        } else {
            ["NaN", "-1", "2", "-inf"]
        };
        assert_eq!(bits(&y), want, "relu {relu}");
    }
}
