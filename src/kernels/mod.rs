//! Convolution-network kernels on plain slices (NCHW, row-major): no
//! tensors, no autograd. Each kernel family has a plain reference
//! implementation, the oracle for faster versions and for gradient checks.

pub mod bench;
pub mod conv;
pub mod conv_gemm;
pub mod depthwise;
mod depthwise_rows;
pub mod direct;
pub mod linear;
pub(crate) mod matmul;
pub mod norm;
mod phase;
pub mod pointwise;
pub mod pool;
mod row_dots;
pub mod shuffle;

pub use conv::Conv2dShape;

use crate::error::Result;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A vector of `len` values made by parallel tasks over chunks of `chunk`
/// values: `fill(task, out)` writes its chunk `out`, which arrives zeroed —
/// each task zeroes its own chunk just before, while it is in cache, so
/// there is no separate pass over memory to initialise the vector.
pub fn par_collect(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(task, out)| {
            out.fill(MaybeUninit::new(0.0));
            // SAFETY: every element was initialised on the line above, and
            // `MaybeUninit<f32>` has the layout of `f32`.
            let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(task, out);
        });
    // SAFETY: the tasks initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// A vector of `count` runs of `run` values, run `k` a copy of
/// `source(k)` (which must hold `run` values), copied in parallel straight
/// into the new vector (no zeroing pass first): plane gathers such as
/// channel shuffles and concatenations.
pub fn par_concat<'a, T: Copy + Send + Sync + 'a>(
    count: usize,
    run: usize,
    source: impl Fn(usize) -> &'a [T] + Sync,
) -> Vec<T> {
    let len = count * run;
    let mut v = Vec::with_capacity(len);
    if len == 0 {
        return v;
    }
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(run)
        .enumerate()
        .with_min_len((1 << 14) / run + 1)
        .for_each(|(k, out)| {
            // Panics (before `set_len`) unless the source has `run` values.
            out.write_copy_of_slice(source(k));
        });
    // SAFETY: the `count` runs of `run` values cover all `len` elements and
    // each was written by `write_copy_of_slice`, which writes all of its
    // destination or panics.
    unsafe { v.set_len(len) };
    v
}

/// `f(a[i], b[i])` for every `i` (`a` and `b` of one length) into a new
/// vector, by parallel tasks over chunks of `chunk` values; each value is
/// written once, with no zeroing pass before.
pub fn par_zip_map(
    a: &[f32],
    b: &[f32],
    chunk: usize,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "par_zip_map: operands of one length");
    let len = a.len();
    let chunk = chunk.max(1);
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .zip(a.par_chunks(chunk))
        .zip(b.par_chunks(chunk))
        .for_each(|((out, a), b)| {
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                o.write(f(a, b));
            }
        });
    // SAFETY: the chunks of `a` cover all `len` elements, and each task
    // wrote every element of its chunk.
    unsafe { v.set_len(len) };
    v
}

/// `g[i] = 0` wherever `y[i]` is not positive (`g` and `y` of one length),
/// in place, by parallel tasks over chunks of `chunk` values: the gradient
/// through a ReLU from its output.
pub fn pass_where_positive(g: &mut [f32], y: &[f32], chunk: usize) {
    assert_eq!(
        g.len(),
        y.len(),
        "pass_where_positive: operands of one length"
    );
    let chunk = chunk.max(1);
    g.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk))
        .for_each(|(g, y)| {
            for (g, &y) in g.iter_mut().zip(y) {
                *g = if y > 0.0 { *g } else { 0.0 };
            }
        });
}

/// `f(a[i])` for every `i` into a new vector: [`par_zip_map`] of one
/// operand.
pub fn par_map(a: &[f32], chunk: usize, f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    par_zip_map(a, a, chunk, |v, _| f(v))
}

/// `y = conv2d(x, w) + bias` (float32) with the kernel that suits `s`:
/// [`depthwise`] for depthwise layers on small planes, [`direct`] for
/// depthwise and few-channel groups with a spatial kernel,
/// [`conv_gemm`] otherwise.
pub fn conv2d_forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    if depthwise::suits(s) {
        depthwise::forward(s, x, w, bias, y)
    } else if direct::suits(s) {
        direct::forward(s, x, w, bias, y)
    } else {
        conv_gemm::forward(s, x, w, bias, y)
    }
}

/// Gradients of `Σ dy · conv2d(x, w)` (those whose buffers are given) with
/// the kernel that suits `s`, as [`conv2d_forward`].
pub fn conv2d_backward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [dx, dw, db]: [Option<&mut [f32]>; 3],
) -> Result<()> {
    if depthwise::suits(s) {
        if let Some(dx) = dx {
            depthwise::input_grad(s, w, dy, dx)?;
        }
        direct::backward(s, x, w, dy, None, dw, db)
    } else if direct::suits(s) {
        direct::backward(s, x, w, dy, dx, dw, db)
    } else {
        conv_gemm::backward(s, x, w, dy, dx, dw, db)
    }
}

/// Whether a shuffle before `s` is best folded into it
/// ([`direct::forward_gathered`]): a depthwise layer (one input and one
/// output channel per group) that the [`direct`] kernels run.
pub fn gathers(s: &Conv2dShape) -> bool {
    s.group_in() == 1 && s.group_out() == 1 && direct::suits(s) && !depthwise::suits(s)
}

#[cfg(test)]
mod tests;
