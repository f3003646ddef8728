//! Pooling: `max_pool2d`, `avg_pool2d` and global average pooling.

use super::nchw;
use crate::error::Result;
use crate::kernels::pool::{self as kernel, PoolShape};
use crate::tensor::Tensor;
// The pooling kernels write every value of their outputs and input
// gradients (`pooling_overwrites_recycled_buffers`): no zeroing first.
use crate::tensor::recycle::take;

/// Options of the pooling ops. [`Pool2dArgs::new`] gives PyTorch's
/// defaults: stride equal to the kernel, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dArgs {
    pub kernel_size: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2dArgs {
    pub fn new(kernel_size: [usize; 2]) -> Self {
        Pool2dArgs {
            kernel_size,
            stride: kernel_size,
            padding: [0, 0],
        }
    }

    fn shape(&self, op: &str, x: &Tensor) -> Result<(PoolShape, Vec<usize>)> {
        let [n, c, h, w] = nchw(op, x)?;
        let s = PoolShape {
            planes: n * c,
            input: [h, w],
            kernel: self.kernel_size,
            stride: self.stride,
            padding: self.padding,
        }
        .validate()?;
        let [oh, ow] = s.output();
        Ok((s, vec![n, c, oh, ow]))
    }
}

/// Max pooling (PyTorch `F.max_pool2d`, padding counts as −∞).
pub fn max_pool2d(x: &Tensor, args: Pool2dArgs) -> Result<Tensor> {
    let (s, shape) = args.shape("max_pool2d", x)?;
    let len = shape.iter().product();
    let mut y = take(len);
    let mut argmax = vec![0u32; len];
    kernel::max_forward(&s, &x.data(), &mut y, Some(&mut argmax))?;
    let in_len = x.numel();
    Ok(Tensor::from_op(
        "max_pool2d",
        y,
        shape,
        &[x],
        move |dy, _| {
            let mut dx = take(in_len);
            kernel::max_backward(&s, dy, &argmax, &mut dx)?;
            Ok(vec![Some(dx)])
        },
    ))
}

/// Average pooling (PyTorch `F.avg_pool2d` with `count_include_pad=True`).
pub fn avg_pool2d(x: &Tensor, args: Pool2dArgs) -> Result<Tensor> {
    let (s, shape) = args.shape("avg_pool2d", x)?;
    let mut y = take(shape.iter().product());
    kernel::avg_forward(&s, &x.data(), &mut y)?;
    let in_len = x.numel();
    Ok(Tensor::from_op(
        "avg_pool2d",
        y,
        shape,
        &[x],
        move |dy, _| {
            let mut dx = take(in_len);
            kernel::avg_backward(&s, dy, &mut dx)?;
            Ok(vec![Some(dx)])
        },
    ))
}

/// Mean over each plane: `[N, C, H, W] → [N, C, 1, 1]` (PyTorch
/// `F.adaptive_avg_pool2d(x, 1)`).
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = nchw("global_avg_pool2d", x)?;
    let plane = h * w;
    let y: Vec<f32> = if plane == 0 {
        vec![0.0; n * c]
    } else {
        x.data()
            .chunks_exact(plane)
            .map(|p| crate::simd::sum(p) / plane as f32)
            .collect()
    };
    Ok(Tensor::from_op(
        "global_avg_pool2d",
        y,
        vec![n, c, 1, 1],
        &[x],
        move |dy, _| {
            let dx = dy
                .iter()
                .flat_map(|&g| std::iter::repeat_n(g / plane as f32, plane))
                .collect();
            Ok(vec![Some(dx)])
        },
    ))
}
