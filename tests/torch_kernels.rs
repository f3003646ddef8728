//! gconv::kernels against PyTorch: grouped conv2d forward and gradients, and
//! channel shuffle, from fixtures made by tools/torch_fixtures.py.

use gconv::kernels::Conv2dShape;
use gconv::kernels::conv::{backward_ref, forward_ref};
use gconv::kernels::shuffle::channel_shuffle;
use std::collections::HashMap;

struct Case {
    kind: String,
    name: String,
    dims: Vec<usize>,
    arrays: HashMap<String, Vec<f64>>,
}

fn load() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for line in include_str!("fixtures/torch_kernels.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let mut words = line.split_whitespace();
        let head = words.next().unwrap();
        if head == "conv" || head == "shuffle" {
            cases.push(Case {
                kind: head.to_string(),
                name: words.next().unwrap().to_string(),
                dims: words.map(|w| w.parse().unwrap()).collect(),
                arrays: HashMap::new(),
            });
        } else {
            let values = words.map(|w| w.parse().unwrap()).collect();
            cases
                .last_mut()
                .unwrap()
                .arrays
                .insert(head.to_string(), values);
        }
    }
    cases
}

/// max |got − want| ≤ 1e-4 · max(1, max |want|), the project's parity bar.
fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(
        err <= 1e-4 * scale,
        "{what}: max error {err} (scale {scale})"
    );
}

#[test]
fn conv2d_reference_matches_pytorch() {
    let cases: Vec<Case> = load().into_iter().filter(|c| c.kind == "conv").collect();
    assert_eq!(cases.len(), 20);
    for c in &cases {
        let d = &c.dims;
        let s = Conv2dShape {
            stride: [d[7], d[8]],
            padding: [d[9], d[10]],
            dilation: [d[11], d[12]],
            ..Conv2dShape::new(d[0], d[1], d[2], [d[3], d[4]], [d[5], d[6]], d[13])
        }
        .validate()
        .unwrap();
        let a = |k: &str| {
            c.arrays
                .get(k)
                .unwrap_or_else(|| panic!("{}: no {k}", c.name))
        };
        let bias = (d[14] == 1).then(|| a("b").as_slice());
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

#[test]
fn channel_shuffle_matches_pytorch() {
    let cases: Vec<Case> = load().into_iter().filter(|c| c.kind == "shuffle").collect();
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let d = &c.dims;
        let x = &c.arrays["x"];
        let mut y = vec![0.0; x.len()];
        channel_shuffle(x, &mut y, d[0], d[1], d[2] * d[3], d[4]).unwrap();
        assert_eq!(&y, &c.arrays["y"], "{}", c.name);
    }
}
