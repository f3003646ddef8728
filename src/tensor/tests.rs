use super::*;
use crate::ops;

fn leaf(values: &[f32]) -> Tensor {
    Tensor::from_vec(values.to_vec(), &[values.len()])
        .unwrap()
        .requires_grad()
}

#[test]
fn a_tensor_used_twice_gets_both_gradients() {
    // L = Σ (x + relu(x)) · x  →  dL/dx = 2x + 2·relu(x) (for x ≠ 0).
    let x = leaf(&[1.0, -2.0, 3.0]);
    let y = ops::mul(&ops::add(&x, &ops::relu(&x).unwrap()).unwrap(), &x).unwrap();
    ops::sum(&y).unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), [4.0, -4.0, 12.0]);
}

#[test]
fn leaf_gradients_accumulate_until_zeroed() {
    let x = leaf(&[1.0, 2.0]);
    for _ in 0..2 {
        ops::sum(&x).unwrap().backward().unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec(), [2.0, 2.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let x = leaf(&[1.0, 2.0]);
    let y = no_grad(|| ops::sum(&x).unwrap());
    assert!(!y.is_tracked());
    assert!(y.backward().is_err());
    assert!(is_grad_enabled());
    let z = ops::sum(&x).unwrap();
    assert!(z.is_tracked());
}

#[test]
fn backward_needs_a_scalar_and_runs_once() {
    let x = leaf(&[1.0, 2.0]);
    let y = ops::relu(&x).unwrap();
    assert!(
        y.backward()
            .unwrap_err()
            .to_string()
            .contains("one-element")
    );
    let loss = ops::sum(&y).unwrap();
    loss.backward().unwrap();
    assert!(loss.backward().unwrap_err().to_string().contains("freed"));
}

#[test]
fn reshape_shares_storage_and_checks_sizes() {
    let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
    let y = x.reshape(&[3, 2]).unwrap();
    x.data_mut()[0] = 9.0;
    assert_eq!(y.data()[0], 9.0);
    assert_eq!(y.shape(), [3, 2]);
    assert!(x.reshape(&[4]).is_err());
    assert!(Tensor::from_vec(vec![0.0; 5], &[2, 3]).is_err());
    assert_eq!(x.flatten().unwrap().shape(), [2, 3]);
}

#[test]
fn trace_records_ops_in_order_with_their_scope() {
    use super::trace::{scoped, trace};
    let a = Tensor::from_vec(vec![1.0, -2.0], &[2])
        .unwrap()
        .requires_grad();
    let (y, ops) = trace(|| {
        let r = crate::ops::relu(&a).unwrap();
        scoped("..", || crate::no_grad(|| crate::ops::add(&r, &a).unwrap()))
    });
    let seen: Vec<_> = ops
        .iter()
        .map(|o| (o.op, o.scope, o.inputs.len()))
        .collect();
    assert_eq!(seen, [("relu", None, 1), ("add", Some(".."), 2)]);
    assert!(ops[1].output.same(&y) && ops[0].inputs[0].same(&a));
    // Outside a trace nothing is kept.
    let (_, none) = trace(|| ());
    assert!(none.is_empty());
}
