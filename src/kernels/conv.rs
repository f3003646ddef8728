//! 2-D grouped convolution (PyTorch `conv2d`: cross-correlation, NCHW).
//!
//! Shapes: input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, kH, kW]`,
//! bias `[C_out]`, output `[N, C_out, H_out, W_out]` with
//! `H_out = (H + 2·pad_h − dil_h·(kH − 1) − 1) / stride_h + 1` (same for W).
//! Output channel `o` of group `g = o / (C_out / groups)` sees input
//! channels `g·C_in/groups .. (g + 1)·C_in/groups`.

use crate::error::{Error, Result};
use num_traits::Float;

/// Checks that `groups` is positive and divides both channel counts; the
/// error names the numbers, after `layer`.
pub(crate) fn check_groups(layer: &str, groups: usize, [cin, cout]: [usize; 2]) -> Result<()> {
    if groups == 0 || !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
        return Err(Error::invalid(format!(
            "{layer}: groups = {groups} must divide in_channels = {cin} and out_channels = {cout}"
        )));
    }
    Ok(())
}

/// The geometry of one grouped 2-D convolution, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zero padding added on both sides, per dimension.
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dShape {
    /// A convolution with PyTorch's defaults for the rest: stride 1, no
    /// padding, no dilation. Change those with struct update syntax, then
    /// [`validate`](Self::validate).
    pub fn new(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        input: [usize; 2],
        kernel: [usize; 2],
        groups: usize,
    ) -> Self {
        Conv2dShape {
            batch,
            in_channels,
            out_channels,
            input,
            kernel,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups,
        }
    }

    /// Checks the geometry: every size positive, `groups` dividing both
    /// channel counts, and an output of at least 1×1. The error names the
    /// offending numbers.
    pub fn validate(self) -> Result<Self> {
        let s = self;
        let positive = [
            ("batch", s.batch),
            ("in_channels", s.in_channels),
            ("out_channels", s.out_channels),
            ("groups", s.groups),
            ("kernel height", s.kernel[0]),
            ("kernel width", s.kernel[1]),
            ("stride height", s.stride[0]),
            ("stride width", s.stride[1]),
            ("dilation height", s.dilation[0]),
            ("dilation width", s.dilation[1]),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(format!("conv2d: {name} must be at least 1")));
        }
        check_groups("conv2d", s.groups, [s.in_channels, s.out_channels])?;
        for d in 0..2 {
            let span = s.dilation[d] * (s.kernel[d] - 1) + 1;
            if s.input[d] + 2 * s.padding[d] < span {
                return Err(Error::invalid(format!(
                    "conv2d: input {}×{} with padding {:?} is smaller than the dilated kernel {}×{}",
                    s.input[0],
                    s.input[1],
                    s.padding,
                    s.dilation[0] * (s.kernel[0] - 1) + 1,
                    s.dilation[1] * (s.kernel[1] - 1) + 1
                )));
            }
        }
        Ok(s)
    }

    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| {
            (self.input[d] + 2 * self.padding[d] - self.dilation[d] * (self.kernel[d] - 1) - 1)
                / self.stride[d]
                + 1
        })
    }

    /// Input channels per group.
    pub fn group_in(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Elements of the input, weight and output arrays.
    pub fn lens(&self) -> (usize, usize, usize) {
        let [oh, ow] = self.output();
        (
            self.batch * self.in_channels * self.input[0] * self.input[1],
            self.out_channels * self.group_in() * self.kernel[0] * self.kernel[1],
            self.batch * self.out_channels * oh * ow,
        )
    }

    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        let [oh, ow] = self.output();
        self.batch * self.out_channels * oh * ow * self.group_in() * self.kernel[0] * self.kernel[1]
    }

    /// Input position (row or column, dimension `d`) read by output position
    /// `o` through kernel tap `k`, or `None` when it falls in the padding.
    fn input_pos(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        let p = (o * self.stride[d] + k * self.dilation[d]).checked_sub(self.padding[d])?;
        (p < self.input[d]).then_some(p)
    }

    /// Calls `f(x_index, w_index, y_index)` for every multiply-add of the
    /// forward pass, in a fixed order: the one loop nest the reference
    /// forward and backward passes share.
    fn each_product(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [h, w] = self.input;
        let [oh, ow] = self.output();
        let [kh, kw] = self.kernel;
        let (cig, cog) = (self.group_in(), self.group_out());
        for n in 0..self.batch {
            for o in 0..self.out_channels {
                let g = o / cog;
                for y in 0..oh {
                    for x in 0..ow {
                        let yi = ((n * self.out_channels + o) * oh + y) * ow + x;
                        for ci in 0..cig {
                            let c = g * cig + ci;
                            for ky in 0..kh {
                                let Some(iy) = self.input_pos(0, y, ky) else {
                                    continue;
                                };
                                for kx in 0..kw {
                                    let Some(ix) = self.input_pos(1, x, kx) else {
                                        continue;
                                    };
                                    let xi = ((n * self.in_channels + c) * h + iy) * w + ix;
                                    let wi = ((o * cig + ci) * kh + ky) * kw + kx;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Conv2dShape {
    /// Image `n`'s input planes of group `g`: `C_in/g × H × W` values of
    /// an input (or input gradient) laid out `[N, C_in, H, W]`.
    pub fn input_group<'a, T>(&self, x: &'a [T], n: usize, g: usize) -> &'a [T] {
        let len = self.group_in() * self.input[0] * self.input[1];
        &x[(n * self.groups + g) * len..][..len]
    }

    /// Image `n`'s output planes of group `g`: `C_out/g × H_out × W_out`
    /// values of an output (or output gradient).
    pub fn output_group<'a, T>(&self, y: &'a [T], n: usize, g: usize) -> &'a [T] {
        let [oh, ow] = self.output();
        let len = self.group_out() * oh * ow;
        &y[(n * self.groups + g) * len..][..len]
    }

    /// Group `g`'s kernels: `C_out/g × C_in/g × kH × kW` values.
    pub fn weight_group<'a, T>(&self, w: &'a [T], g: usize) -> &'a [T] {
        let len = self.group_out() * self.group_in() * self.kernel[0] * self.kernel[1];
        &w[g * len..][..len]
    }

    /// Checks the lengths of a forward pass's slices: input, weight,
    /// optional bias, and output (`y_len`, the output or its gradient).
    pub fn check_lens(&self, x: usize, w: usize, bias: Option<usize>, y_len: usize) -> Result<()> {
        let (xl, wl, yl) = self.lens();
        let checks = [
            ("input", x, xl),
            ("weight", w, wl),
            ("bias", bias.unwrap_or(self.out_channels), self.out_channels),
            ("output", y_len, yl),
        ];
        match checks.iter().find(|(_, got, want)| got != want) {
            Some((what, got, want)) => Err(Error::invalid(format!(
                "conv2d: {what} has {got} elements, the shape needs {want}"
            ))),
            None => Ok(()),
        }
    }
}

impl Conv2dShape {
    /// Checks the slices of a backward pass: input, weight and output
    /// gradient, and the gradient buffers that are given
    /// (`[dx, dw, db]`).
    pub fn check_grad_lens<T>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        grads: [Option<&[T]>; 3],
    ) -> Result<()> {
        self.check_lens(x.len(), w.len(), None, dy.len())?;
        let (xl, wl, _) = self.lens();
        let names = ["input gradient", "weight gradient", "bias gradient"];
        for ((what, want), grad) in names
            .into_iter()
            .zip([xl, wl, self.out_channels])
            .zip(grads)
        {
            if let Some(got) = grad.map(<[T]>::len).filter(|&g| g != want) {
                return Err(Error::invalid(format!(
                    "conv2d backward: {what} has {got} elements, the shape needs {want}"
                )));
            }
        }
        Ok(())
    }
}

/// Bias gradient, `db[o] = Σ_{n, y, x} dy[n, o, y, x]`, one parallel task
/// per channel.
pub(crate) fn bias_grad(s: &Conv2dShape, dy: &[f32], db: &mut [f32]) {
    use rayon::prelude::*;
    let [oh, ow] = s.output();
    let p = oh * ow;
    db.par_iter_mut().enumerate().for_each(|(o, d)| {
        *d = (0..s.batch)
            .map(|n| crate::simd::sum(&dy[(n * s.out_channels + o) * p..][..p]))
            .sum();
    });
}

/// Schedules a weight gradient summed over the batch, deterministically for
/// a fixed thread count: `f(scratch, images, g, dw_group, tasks)` writes
/// the contribution of the (non-empty) range `images` to group `g`'s
/// weights into `dw_group`; `tasks` is the number of tasks running side by
/// side.
/// The batch is cut into chunks (enough (chunk × group) tasks to keep the
/// threads busy); each task sums its chunk into its own partial buffer, and
/// the partials are added in chunk order.
pub(crate) fn weight_grad_tasks<S>(
    s: &Conv2dShape,
    dw: &mut [f32],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, std::ops::Range<usize>, usize, &mut [f32], usize) + Sync + Send,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let chunks = (2 * threads).div_ceil(s.groups).clamp(1, s.batch);
    let per_chunk = s.batch.div_ceil(chunks);
    let chunks = s.batch.div_ceil(per_chunk);
    let tasks = chunks * s.groups;
    let group_len = dw.len() / s.groups;
    let mut partials = vec![0f32; if chunks > 1 { chunks * dw.len() } else { 0 }];
    let target: &mut [f32] = if chunks > 1 { &mut partials } else { dw };
    target.par_chunks_mut(group_len).enumerate().for_each_init(
        init,
        |scratch, (task, dw_group)| {
            let (chunk, g) = (task / s.groups, task % s.groups);
            let images = chunk * per_chunk..((chunk + 1) * per_chunk).min(s.batch);
            f(scratch, images, g, dw_group, tasks);
        },
    );
    if chunks > 1 {
        let wl = dw.len();
        dw.par_chunks_mut(group_len)
            .enumerate()
            .for_each(|(g, out)| {
                out.fill(0.0);
                for part in partials.chunks_exact(wl) {
                    for (o, &v) in out.iter_mut().zip(&part[g * group_len..][..group_len]) {
                        *o += v;
                    }
                }
            });
    }
}

/// Reference forward pass: `y = conv2d(x, w) + bias`.
pub fn forward_ref<F: Float>(
    s: &Conv2dShape,
    x: &[F],
    w: &[F],
    bias: Option<&[F]>,
) -> Result<Vec<F>> {
    let yl = s.lens().2;
    s.check_lens(x.len(), w.len(), bias.map(<[F]>::len), yl)?;
    let mut y = vec![F::zero(); yl];
    s.each_product(|xi, wi, yi| y[yi] = y[yi] + x[xi] * w[wi]);
    if let Some(b) = bias {
        let plane = yl / (s.batch * s.out_channels);
        for (i, v) in y.iter_mut().enumerate() {
            *v = *v + b[(i / plane) % s.out_channels];
        }
    }
    Ok(y)
}

/// Reference gradients of `Σ dy · conv2d(x, w)`: with respect to the input
/// (`dx`, shape of `x`), the weight (`dw`) and the bias (`db`, `[C_out]`).
pub fn backward_ref<F: Float>(
    s: &Conv2dShape,
    x: &[F],
    w: &[F],
    dy: &[F],
) -> Result<(Vec<F>, Vec<F>, Vec<F>)> {
    let (xl, wl, yl) = s.lens();
    s.check_lens(x.len(), w.len(), None, dy.len())?;
    let mut dx = vec![F::zero(); xl];
    let mut dw = vec![F::zero(); wl];
    s.each_product(|xi, wi, yi| {
        dx[xi] = dx[xi] + w[wi] * dy[yi];
        dw[wi] = dw[wi] + x[xi] * dy[yi];
    });
    let plane = yl / (s.batch * s.out_channels);
    let mut db = vec![F::zero(); s.out_channels];
    for (i, &g) in dy.iter().enumerate() {
        let o = (i / plane) % s.out_channels;
        db[o] = db[o] + g;
    }
    Ok((dx, dw, db))
}

/// Test support: runs a fast float32 forward pass on seeded data and
/// checks it against [`forward_ref`] computed in float64.
#[cfg(test)]
pub(crate) fn assert_forward_matches_reference(
    s: &Conv2dShape,
    bias: bool,
    seed: u64,
    forward: impl Fn(&[f32], &[f32], Option<&[f32]>, &mut [f32]) -> Result<()>,
) {
    let (xl, wl, yl) = s.lens();
    let f32s = |len: usize, k: u64| -> Vec<f32> {
        crate::random::uniform(&[len], 3 * seed + k)
            .iter()
            .map(|&v| v as f32)
            .collect()
    };
    let (x, w, b) = (f32s(xl, 0), f32s(wl, 1), f32s(s.out_channels, 2));
    let b = bias.then_some(b.as_slice());
    let mut y = vec![f32::NAN; yl];
    forward(&x, &w, b, &mut y).unwrap();
    let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let want = forward_ref(s, &to64(&x), &to64(&w), b.map(to64).as_deref()).unwrap();
    let err = crate::simd::max_or_nan(y.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()));
    assert!(err < 1e-5, "{s:?}: max error {err}");
}

/// Test support: a validated shape from `[C_in, C_out, groups]`, the input
/// size, the kernel and `[stride, padding, dilation]`.
#[cfg(test)]
pub(crate) fn test_shape(
    batch: usize,
    [cin, cout, groups]: [usize; 3],
    input: [usize; 2],
    kernel: [usize; 2],
    [stride, padding, dilation]: [[usize; 2]; 3],
) -> Conv2dShape {
    Conv2dShape {
        stride,
        padding,
        dilation,
        ..Conv2dShape::new(batch, cin, cout, input, kernel, groups)
    }
    .validate()
    .unwrap()
}

/// Test support: runs a fast float32 backward pass (`dx`, `dw`, `db`) on
/// seeded data and checks it against [`backward_ref`] in float64, relative
/// to the largest gradient.
#[cfg(test)]
pub(crate) fn assert_backward_matches_reference(
    s: &Conv2dShape,
    seed: u64,
    backward: impl Fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32], &mut [f32]) -> Result<()>,
) {
    let (xl, wl, yl) = s.lens();
    let f32s = |len: usize, k: u64| -> Vec<f32> {
        crate::random::uniform(&[len], 5 * seed + k)
            .iter()
            .map(|&v| v as f32)
            .collect()
    };
    let (x, w, dy) = (f32s(xl, 0), f32s(wl, 1), f32s(yl, 2));
    let (mut dx, mut dw, mut db) = (
        vec![f32::NAN; xl],
        vec![f32::NAN; wl],
        vec![f32::NAN; s.out_channels],
    );
    backward(&x, &w, &dy, &mut dx, &mut dw, &mut db).unwrap();
    let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let want = backward_ref(s, &to64(&x), &to64(&w), &to64(&dy)).unwrap();
    for (name, got, want) in [
        ("dx", &dx, &want.0),
        ("dw", &dw, &want.1),
        ("db", &db, &want.2),
    ] {
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let err = crate::simd::max_or_nan(got.iter().zip(want).map(|(a, b)| (*a as f64 - b).abs()));
        assert!(err < 1e-5 * scale, "{s:?} {name}: max error {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::uniform;

    fn shape(
        c_in: usize,
        c_out: usize,
        groups: usize,
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dil: [usize; 2],
    ) -> Conv2dShape {
        Conv2dShape {
            stride,
            padding: pad,
            dilation: dil,
            ..Conv2dShape::new(2, c_in, c_out, [7, 6], k, groups)
        }
        .validate()
        .unwrap()
    }

    fn data(len: usize, seed: u64) -> Vec<f64> {
        uniform(&[len], seed).into_raw_vec_and_offset().0
    }

    /// Central differences of L(x, w, b) = Σ dy · forward(x, w, b).
    #[test]
    fn gradients_match_finite_differences() {
        let cases = [
            shape(4, 6, 2, [3, 3], [1, 1], [1, 1], [1, 1]),
            shape(3, 3, 3, [3, 2], [2, 1], [1, 0], [1, 2]),
            shape(4, 8, 4, [1, 1], [1, 1], [0, 0], [1, 1]),
            shape(2, 4, 1, [5, 3], [2, 2], [2, 1], [1, 1]),
        ];
        for s in cases {
            let (xl, wl, yl) = s.lens();
            let (x, w, b, dy) = (
                data(xl, 1),
                data(wl, 2),
                data(s.out_channels, 3),
                data(yl, 4),
            );
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                forward_ref(&s, x, w, Some(b))
                    .unwrap()
                    .iter()
                    .zip(&dy)
                    .map(|(y, g)| y * g)
                    .sum()
            };
            let (dx, dw, db) = backward_ref(&s, &x, &w, &dy).unwrap();
            let h = 1e-6;
            let numeric = |v: &[f64], i: usize, which: usize| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[i] += h;
                m[i] -= h;
                let f = |t: &[f64]| match which {
                    0 => loss(t, &w, &b),
                    1 => loss(&x, t, &b),
                    _ => loss(&x, &w, t),
                };
                (f(&p) - f(&m)) / (2.0 * h)
            };
            for (which, (v, g)) in [(&x, &dx), (&w, &dw), (&b, &db)].into_iter().enumerate() {
                for i in (0..v.len()).step_by(7) {
                    let n = numeric(v, i, which);
                    assert!(
                        (n - g[i]).abs() < 1e-6 * (1.0 + n.abs()),
                        "{s:?} grad {which}[{i}]: {} vs {n}",
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn one_by_one_conv_is_a_matrix_product_per_group() {
        let s = shape(4, 6, 2, [1, 1], [1, 1], [0, 0], [1, 1]);
        let (xl, wl, _) = s.lens();
        let (x, w) = (data(xl, 5), data(wl, 6));
        let y = forward_ref(&s, &x, &w, None).unwrap();
        let hw = 42;
        // y[n, o, p] = Σ_{c in group} w[o, c'] x[n, c, p]
        for n in 0..2 {
            for o in 0..6 {
                let g = o / 3;
                for p in 0..hw {
                    let want: f64 = (0..2)
                        .map(|ci| w[o * 2 + ci] * x[(n * 4 + g * 2 + ci) * hw + p])
                        .sum();
                    assert!((y[(n * 6 + o) * hw + p] - want).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_numbers() {
        let base = shape(4, 6, 2, [3, 3], [1, 1], [1, 1], [1, 1]);
        let e = Conv2dShape { groups: 3, ..base }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("groups = 3") && e.contains("in_channels = 4"),
            "{e}"
        );
        let e = Conv2dShape {
            kernel: [9, 3],
            padding: [0, 0],
            ..base
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("smaller than the dilated kernel"), "{e}");
        assert!(
            Conv2dShape {
                stride: [0, 1],
                ..base
            }
            .validate()
            .is_err()
        );
        assert!(
            forward_ref(&base, &[0.0; 3], &[0.0; 3], None)
                .unwrap_err()
                .to_string()
                .contains("input has 3")
        );
        assert_eq!(base.output(), [7, 6]);
        assert_eq!(
            Conv2dShape {
                stride: [2, 2],
                ..base
            }
            .output(),
            [4, 3]
        );
    }
}
