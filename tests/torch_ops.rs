//! Batch norm, pools, linear, softmax and cross-entropy against PyTorch:
//! forward values, gradients and running statistics, from fixtures made by
//! tools/torch_fixtures.py.

use gconv::Tensor;
use gconv::ops::{self, BatchNormArgs, Pool2dArgs};

mod common;
use common::{Case, assert_close, load};

const KINDS: [&str; 8] = [
    "batchnorm",
    "maxpool",
    "avgpool",
    "gap",
    "linear",
    "softmax",
    "logsoftmax",
    "crossentropy",
];

fn cases(kind: &str) -> Vec<Case> {
    let all = load(include_str!("fixtures/torch_ops.txt"), &KINDS);
    let some: Vec<Case> = all.into_iter().filter(|c| c.kind == kind).collect();
    assert!(!some.is_empty(), "no {kind} cases");
    some
}

fn tensor(c: &Case, key: &str, shape: &[usize]) -> Tensor {
    Tensor::from_vec(c.f32s(key), shape)
        .unwrap()
        .requires_grad()
}

/// Runs `y = f(x…)`, back-propagates the fixture's `dy`, and checks `y`
/// and the gradients named in `grads` (fixture key, tensor).
fn check(c: &Case, y: &Tensor, grads: &[(&str, &Tensor)]) {
    assert_close(
        &y.to_vec(),
        c.get("y"),
        &format!("{} {} forward", c.kind, c.name),
    );
    y.backward_with(c.f32s("dy")).unwrap();
    for (key, t) in grads {
        let g = t.grad().unwrap().to_vec();
        assert_close(&g, c.get(key), &format!("{} {} {key}", c.kind, c.name));
    }
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    for c in &cases("batchnorm") {
        let shape = [c.dim(0), c.dim(1), c.dim(2), c.dim(3)];
        let ch = [shape[1]];
        let (x, w, b) = (
            tensor(c, "x", &shape),
            tensor(c, "w", &ch),
            tensor(c, "b", &ch),
        );
        let rm = Tensor::from_vec(c.f32s("rm"), &ch).unwrap();
        let rv = Tensor::from_vec(c.f32s("rv"), &ch).unwrap();
        let args = BatchNormArgs {
            training: c.dim(4) == 1,
            ..Default::default()
        };
        let y = ops::batch_norm(&x, Some((&rm, &rv)), Some((&w, &b)), args).unwrap();
        check(c, &y, &[("dx", &x), ("dw", &w), ("db", &b)]);
        assert_close(
            &rm.to_vec(),
            c.get("rm_after"),
            &format!("{} running mean", c.name),
        );
        assert_close(
            &rv.to_vec(),
            c.get("rv_after"),
            &format!("{} running var", c.name),
        );
    }
}

#[test]
fn pools_match_pytorch() {
    for kind in ["maxpool", "avgpool"] {
        for c in &cases(kind) {
            let x = tensor(c, "x", &[c.dim(0), c.dim(1), c.dim(2), c.dim(3)]);
            let args = Pool2dArgs {
                kernel_size: [c.dim(4), c.dim(5)],
                stride: [c.dim(6), c.dim(7)],
                padding: [c.dim(8), c.dim(9)],
            };
            let pool = if kind == "maxpool" {
                ops::max_pool2d
            } else {
                ops::avg_pool2d
            };
            check(c, &pool(&x, args).unwrap(), &[("dx", &x)]);
        }
    }
    for c in &cases("gap") {
        let x = tensor(c, "x", &[c.dim(0), c.dim(1), c.dim(2), c.dim(3)]);
        check(c, &ops::global_avg_pool2d(&x).unwrap(), &[("dx", &x)]);
    }
}

#[test]
fn linear_and_softmax_match_pytorch() {
    for c in &cases("linear") {
        let (n, i, o) = (c.dim(0), c.dim(1), c.dim(2));
        let (x, w, b) = (
            tensor(c, "x", &[n, i]),
            tensor(c, "w", &[o, i]),
            tensor(c, "b", &[o]),
        );
        let y = ops::linear(&x, &w, Some(&b)).unwrap();
        check(c, &y, &[("dx", &x), ("dw", &w), ("db", &b)]);
    }
    for kind in ["softmax", "logsoftmax"] {
        for c in &cases(kind) {
            let x = tensor(c, "x", &[c.dim(0), c.dim(1)]);
            let f = if kind == "softmax" {
                ops::softmax
            } else {
                ops::log_softmax
            };
            check(c, &f(&x).unwrap(), &[("dx", &x)]);
        }
    }
}

#[test]
fn cross_entropy_matches_pytorch_with_label_smoothing() {
    for c in &cases("crossentropy") {
        let x = tensor(c, "x", &[c.dim(0), c.dim(1)]);
        let targets: Vec<usize> = c.get("t").iter().map(|&t| t as usize).collect();
        let loss = ops::cross_entropy(&x, &targets, c.dims[2] as f32).unwrap();
        assert_close(&[loss.item().unwrap()], c.get("loss"), &c.name);
        loss.backward().unwrap();
        assert_close(&x.grad().unwrap().to_vec(), c.get("dx"), &c.name);
    }
}
