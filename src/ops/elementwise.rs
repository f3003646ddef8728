//! Element-wise operations and the full sum.

use crate::error::{Error, Result};
use crate::simd::relu_value;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Chunk of the parallel element-wise loops (large enough to amortise a
/// task, small enough to spread a layer over the threads).
const CHUNK: usize = 1 << 14;

/// `max(x, 0)` (a NaN stays NaN); the gradient passes where the input is
/// positive.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let y: Vec<f32> = x
        .data()
        .par_iter()
        .with_min_len(CHUNK)
        .map(|&v| relu_value(v))
        .collect();
    // The input (shared, not copied) decides where the gradient passes.
    let saved = Tensor::records(&[x]).then(|| x.clone());
    Ok(Tensor::from_op(
        "relu",
        y,
        x.shape().to_vec(),
        &[x],
        move |dy, _| {
            let x = saved.as_ref().map(|x| x.data());
            let x = x.as_deref().map_or(&[][..], |v| v.as_slice());
            let dx = dy
                .par_iter()
                .zip(x.par_iter())
                .with_min_len(CHUNK)
                .map(|(&d, &x)| if x > 0.0 { d } else { 0.0 })
                .collect();
            Ok(vec![Some(dx)])
        },
    ))
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::invalid(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        )));
    }
    Ok(())
}

/// `a + b` for tensors of one shape (residual connections).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("add", a, b)?;
    let y: Vec<f32> = a
        .data()
        .par_iter()
        .zip(b.data().par_iter())
        .with_min_len(CHUNK)
        .map(|(x, y)| x + y)
        .collect();
    Ok(Tensor::from_op(
        "add",
        y,
        a.shape().to_vec(),
        &[a, b],
        |dy, needs| {
            Ok(needs
                .iter()
                .map(|&n| n.then(|| dy.par_iter().with_min_len(CHUNK).copied().collect()))
                .collect())
        },
    ))
}

/// `relu(a + b)` in one pass (a residual connection and its activation);
/// the gradient of both inputs is `dy` where the sum is positive.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("add_relu", a, b)?;
    let (ad, bd) = (a.data(), b.data());
    let sums = ad
        .par_iter()
        .zip(bd.par_iter())
        .with_min_len(CHUNK)
        .map(|(x, y)| relu_value(x + y));
    // Where the gradient passes: a byte per element, not the inputs.
    let (mut y, mut passes) = (Vec::new(), Vec::new());
    if Tensor::records(&[a, b]) {
        sums.map(|v| (v, v > 0.0))
            .unzip_into_vecs(&mut y, &mut passes);
    } else {
        sums.collect_into_vec(&mut y);
    }
    Ok(Tensor::from_op(
        "add_relu",
        y,
        a.shape().to_vec(),
        &[a, b],
        move |dy, needs| {
            let dx: Vec<f32> = dy
                .par_iter()
                .zip(passes.par_iter())
                .with_min_len(CHUNK)
                .map(|(&d, &p)| if p { d } else { 0.0 })
                .collect();
            Ok(match *needs {
                [true, true] => vec![Some(dx.par_iter().copied().collect()), Some(dx)],
                [true, false] => vec![Some(dx), None],
                [false, true] => vec![None, Some(dx)],
                _ => vec![None, None],
            })
        },
    ))
}

/// `a · b` element-wise, for tensors of one shape.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("mul", a, b)?;
    let y: Vec<f32> = a
        .data()
        .iter()
        .zip(b.data().iter())
        .map(|(x, y)| x * y)
        .collect();
    let (sa, sb) = (a.clone(), b.clone());
    Ok(Tensor::from_op(
        "mul",
        y,
        a.shape().to_vec(),
        &[a, b],
        move |dy, needs| {
            let times = |t: &Tensor| dy.iter().zip(t.data().iter()).map(|(g, v)| g * v).collect();
            Ok(vec![
                needs[0].then(|| times(&sb)),
                needs[1].then(|| times(&sa)),
            ])
        },
    ))
}

/// The sum of all elements, shape `[]` (accumulated in float64).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    let total = x.data().iter().map(|&v| v as f64).sum::<f64>() as f32;
    let len = x.numel();
    Ok(Tensor::from_op(
        "sum",
        vec![total],
        Vec::new(),
        &[x],
        move |dy, _| Ok(vec![Some(vec![dy[0]; len])]),
    ))
}
