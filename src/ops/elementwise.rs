//! Element-wise operations and the full sum.

use crate::error::{Error, Result};
use crate::kernels::{self, par_map, par_zip_map};
use crate::simd::relu_value;
use crate::tensor::Tensor;

/// Chunk of the parallel element-wise loops (large enough to amortise a
/// task, small enough to spread a layer over the threads).
const CHUNK: usize = 1 << 14;

/// `max(x, 0)` (a NaN stays NaN); the gradient passes where the input is
/// positive, that is where the output is.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let y = par_map(&x.data(), CHUNK, relu_value);
    Ok(Tensor::from_op_in_place(
        "relu",
        y,
        x.shape().to_vec(),
        &[x],
        |dy, _, y| Ok(vec![Some(pass_where_positive(dy, y))]),
    ))
}

/// `dy` where `y > 0`, else 0, in `dy`'s buffer: the gradient through a
/// ReLU from its output.
pub(crate) fn pass_where_positive(mut dy: Vec<f32>, y: &[f32]) -> Vec<f32> {
    kernels::pass_where_positive(&mut dy, y, CHUNK);
    dy
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

/// Both inputs' gradients when each is `dx` (for those that `needs` one):
/// `dx` itself, and a copy where both need it.
fn both(dx: Vec<f32>, needs: &[bool]) -> Vec<Option<Vec<f32>>> {
    match *needs {
        [true, true] => vec![Some(dx.clone()), Some(dx)],
        [true, false] => vec![Some(dx), None],
        [false, true] => vec![None, Some(dx)],
        _ => vec![None, None],
    }
}

/// `a + b` for tensors of one shape (residual connections).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("add", a, b)?;
    let y = par_zip_map(&a.data(), &b.data(), CHUNK, |x, y| x + y);
    Ok(Tensor::from_op_in_place(
        "add",
        y,
        a.shape().to_vec(),
        &[a, b],
        |dy, needs, _| Ok(both(dy, needs)),
    ))
}

/// `relu(a + b)` in one pass (a residual connection and its activation);
/// the gradient of both inputs is `dy` where the sum, so the output, is
/// positive.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("add_relu", a, b)?;
    let y = par_zip_map(&a.data(), &b.data(), CHUNK, |x, y| relu_value(x + y));
    Ok(Tensor::from_op_in_place(
        "add_relu",
        y,
        a.shape().to_vec(),
        &[a, b],
        |dy, needs, y| Ok(both(pass_where_positive(dy, y), needs)),
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
