//! Grouped conv2d (reference kernels, and the fast kernels through the
//! autograd op) and channel shuffle against PyTorch: forward and
//! gradients, from fixtures made by tools/torch_fixtures.py.

use gconv::Tensor;
use gconv::kernels::Conv2dShape;
use gconv::kernels::conv::{backward_ref, forward_ref};
use gconv::kernels::shuffle::channel_shuffle;
use gconv::ops::{self, Conv2dArgs};

mod common;
use common::{Case, assert_close, load};

fn cases(kind: &str) -> Vec<Case> {
    load(
        include_str!("fixtures/torch_kernels.txt"),
        &["conv", "shuffle"],
    )
    .into_iter()
    .filter(|c| c.kind == kind)
    .collect()
}

fn conv_shape(c: &Case) -> Conv2dShape {
    let d: Vec<usize> = (0..c.dims.len()).map(|i| c.dim(i)).collect();
    Conv2dShape {
        stride: [d[7], d[8]],
        padding: [d[9], d[10]],
        dilation: [d[11], d[12]],
        ..Conv2dShape::new(d[0], d[1], d[2], [d[3], d[4]], [d[5], d[6]], d[13])
    }
    .validate()
    .unwrap()
}

#[test]
fn conv2d_reference_matches_pytorch() {
    let cases = cases("conv");
    assert_eq!(cases.len(), 20);
    for c in &cases {
        let s = conv_shape(c);
        let a = |k: &str| c.get(k);
        let bias = (c.dim(14) == 1).then(|| a("b"));
        let y = forward_ref(&s, a("x"), a("w"), bias).unwrap();
        assert_close(&y, a("y"), &format!("{} forward", c.name));
        let (dx, dw, db) = backward_ref(&s, a("x"), a("w"), a("dy")).unwrap();
        assert_close(&dx, a("dx"), &format!("{} dx", c.name));
        assert_close(&dw, a("dw"), &format!("{} dw", c.name));
        if bias.is_some() {
            assert_close(&db, a("db"), &format!("{} db", c.name));
        }
    }
}

/// The fast kernels, through the autograd op: forward and all gradients.
#[test]
fn conv2d_op_matches_pytorch() {
    for c in &cases("conv") {
        let s = conv_shape(c);
        let tensor =
            |k: &str, shape: &[usize]| Tensor::from_vec(c.f32s(k), shape).unwrap().requires_grad();
        let x = tensor("x", &[s.batch, s.in_channels, s.input[0], s.input[1]]);
        let w = tensor(
            "w",
            &[s.out_channels, s.group_in(), s.kernel[0], s.kernel[1]],
        );
        let b = (c.dim(14) == 1).then(|| tensor("b", &[s.out_channels]));
        let args = Conv2dArgs {
            stride: s.stride,
            padding: s.padding,
            dilation: s.dilation,
            groups: s.groups,
        };
        let y = ops::conv2d(&x, &w, b.as_ref(), args).unwrap();
        assert_close(&y.to_vec(), c.get("y"), &format!("{} forward", c.name));
        y.backward_with(c.f32s("dy")).unwrap();
        assert_close(
            &x.grad().unwrap().to_vec(),
            c.get("dx"),
            &format!("{} dx", c.name),
        );
        assert_close(
            &w.grad().unwrap().to_vec(),
            c.get("dw"),
            &format!("{} dw", c.name),
        );
        if let Some(b) = b {
            assert_close(
                &b.grad().unwrap().to_vec(),
                c.get("db"),
                &format!("{} db", c.name),
            );
        }
    }
}

#[test]
fn channel_shuffle_matches_pytorch() {
    let cases = cases("shuffle");
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let x = c.get("x");
        let y = channel_shuffle(x, c.dim(0), c.dim(1), c.dim(2) * c.dim(3), c.dim(4)).unwrap();
        assert_eq!(y, c.get("y"), "{}", c.name);
        // Through the autograd op: forward, and the gradient is the inverse.
        let shape = [c.dim(0), c.dim(1), c.dim(2), c.dim(3)];
        let xt = Tensor::from_vec(c.f32s("x"), &shape)
            .unwrap()
            .requires_grad();
        let yt = ops::channel_shuffle(&xt, c.dim(4)).unwrap();
        assert_close(&yt.to_vec(), c.get("y"), &c.name);
        yt.backward_with(c.f32s("y")).unwrap();
        assert_close(&xt.grad().unwrap().to_vec(), c.get("x"), &c.name);
    }
}
