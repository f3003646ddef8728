//! 2-D max and average pooling over NCHW planes (PyTorch `max_pool2d`,
//! `avg_pool2d` with `ceil_mode = False`, `count_include_pad = True`).
//! One parallel task per (image, channel) plane.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// The geometry of a pooling layer: windows of `kernel` every `stride`
/// over the input padded by `padding` on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Images × channels: the number of independent planes.
    pub planes: usize,
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl PoolShape {
    /// Checks the geometry as PyTorch does: positive kernel and stride,
    /// padding at most half the kernel, and an output of at least 1×1.
    pub fn validate(self) -> Result<Self> {
        for d in 0..2 {
            if self.kernel[d] == 0 || self.stride[d] == 0 {
                return Err(Error::invalid(format!(
                    "pool2d: kernel {:?} and stride {:?} must be positive",
                    self.kernel, self.stride
                )));
            }
            if 2 * self.padding[d] > self.kernel[d] {
                return Err(Error::invalid(format!(
                    "pool2d: padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                )));
            }
            if self.input[d] + 2 * self.padding[d] < self.kernel[d] {
                return Err(Error::invalid(format!(
                    "pool2d: input {:?} with padding {:?} is smaller than the kernel {:?}",
                    self.input, self.padding, self.kernel
                )));
            }
        }
        Ok(self)
    }

    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| (self.input[d] + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1)
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_plane(&self) -> usize {
        let [oh, ow] = self.output();
        oh * ow
    }

    /// Planes handed to one parallel task: small planes are grouped so
    /// that a task has a few thousand outputs.
    fn planes_per_task(&self) -> usize {
        (4096 / self.out_plane().max(1)).max(1)
    }

    fn check(&self, x: usize, y: usize) -> Result<()> {
        let (xl, yl) = (
            self.planes * self.in_plane(),
            self.planes * self.out_plane(),
        );
        if x != xl || y != yl {
            return Err(Error::invalid(format!(
                "pool2d: input has {x} and output {y} elements, {self:?} needs {xl} and {yl}"
            )));
        }
        Ok(())
    }

    /// For output position `o` along dimension `d`: the input range its
    /// window covers, and the window's size clipped to the padded input
    /// (PyTorch's divisor with `count_include_pad`).
    fn window(&self, d: usize, o: usize) -> (std::ops::Range<usize>, usize) {
        let start = o * self.stride[d];
        let end = (start + self.kernel[d]).min(self.input[d] + 2 * self.padding[d]);
        let lo = start.saturating_sub(self.padding[d]);
        let hi = end.saturating_sub(self.padding[d]).min(self.input[d]);
        (lo..hi.max(lo), end - start)
    }

    /// Calls `f(out_index, input_indices, divisor)` for every output of
    /// one plane; `input_indices` lists the window's in-plane indices.
    fn each_window(&self, mut f: impl FnMut(usize, &[usize], usize)) {
        let [oh, ow] = self.output();
        let mut idx = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
        for oy in 0..oh {
            let (rows, dh) = self.window(0, oy);
            for ox in 0..ow {
                let (cols, dw) = self.window(1, ox);
                idx.clear();
                for r in rows.clone() {
                    idx.extend(cols.clone().map(|c| r * self.input[1] + c));
                }
                f(oy * ow + ox, &idx, dh * dw);
            }
        }
    }
}

/// Max pooling: `y` gets each window's maximum (NaN wins, as in PyTorch)
/// and `argmax` (when given) its in-plane index, the first among equals.
pub fn max_forward(
    s: &PoolShape,
    x: &[f32],
    y: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<()> {
    s.check(x.len(), y.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    let mut scratch;
    let argmax = match argmax {
        Some(a) if a.len() == y.len() => a,
        Some(a) => {
            return Err(Error::invalid(format!(
                "max_pool2d: argmax has {} elements, the output {}",
                a.len(),
                y.len()
            )));
        }
        None => {
            scratch = vec![0u32; y.len()];
            &mut scratch[..]
        }
    };
    y.par_chunks_mut(op)
        .zip(argmax.par_chunks_mut(op))
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each(|(p, (out, arg))| {
            let plane = &x[p * ip..][..ip];
            s.each_window(|o, idx, _| {
                let mut best = idx[0];
                for &i in &idx[1..] {
                    if plane[i] > plane[best] || (plane[i].is_nan() && !plane[best].is_nan()) {
                        best = i;
                    }
                }
                out[o] = plane[best];
                arg[o] = best as u32;
            });
        });
    Ok(())
}

/// Max pooling's input gradient: each output gradient goes to its argmax.
pub fn max_backward(s: &PoolShape, dy: &[f32], argmax: &[u32], dx: &mut [f32]) -> Result<()> {
    s.check(dx.len(), dy.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    dx.par_chunks_mut(ip)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each(|(p, plane)| {
            plane.fill(0.0);
            for (&g, &a) in dy[p * op..][..op].iter().zip(&argmax[p * op..][..op]) {
                plane[a as usize] += g;
            }
        });
    Ok(())
}

/// Average pooling: each window's sum over the input, divided by the
/// window's size including padding.
pub fn avg_forward(s: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    s.check(x.len(), y.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    y.par_chunks_mut(op)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each(|(p, out)| {
            let plane = &x[p * ip..][..ip];
            s.each_window(|o, idx, div| {
                out[o] = idx.iter().map(|&i| plane[i]).sum::<f32>() / div as f32;
            });
        });
    Ok(())
}

/// Average pooling's input gradient.
pub fn avg_backward(s: &PoolShape, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    s.check(dx.len(), dy.len())?;
    let (ip, op) = (s.in_plane(), s.out_plane());
    dx.par_chunks_mut(ip)
        .enumerate()
        .with_min_len(s.planes_per_task())
        .for_each(|(p, plane)| {
            plane.fill(0.0);
            let grads = &dy[p * op..][..op];
            s.each_window(|o, idx, div| {
                let g = grads[o] / div as f32;
                idx.iter().for_each(|&i| plane[i] += g);
            });
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_errors() {
        let s = PoolShape {
            planes: 1,
            input: [4, 4],
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        }
        .validate()
        .unwrap();
        assert_eq!(s.output(), [2, 2]);
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let (mut y, mut a) = (vec![0.0; 4], vec![0; 4]);
        max_forward(&s, &x, &mut y, Some(&mut a)).unwrap();
        assert_eq!(y, [5.0, 7.0, 13.0, 15.0]);
        assert_eq!(a, [5, 7, 13, 15]);
        avg_forward(&s, &x, &mut y).unwrap();
        // Top-left window covers inputs 0, 1, 4, 5 and five padding zeros.
        assert_eq!(y[0], 10.0 / 9.0);
        assert!(
            PoolShape {
                padding: [2, 2],
                ..s
            }
            .validate()
            .is_err()
        );
        assert!(
            PoolShape {
                stride: [0, 1],
                ..s
            }
            .validate()
            .is_err()
        );
        assert!(max_forward(&s, &x[1..], &mut y, None).is_err());
    }
}
