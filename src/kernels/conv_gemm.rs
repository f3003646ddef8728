//! Fast grouped conv2d forward (float32) as one GEMM per (image, group):
//! `Y[n, group g] (C_out/g × P) = W_g (C_out/g × K) · cols (K × P)`, with
//! `P = H_out · W_out` and `K = C_in/g · kH · kW`, written straight into the
//! output's channels of that group: no concatenation. Pointwise layers (1×1,
//! stride 1, no padding) read the input in place; the others gather a
//! per-thread column buffer (im2col of one image and group). One parallel
//! region over (image × group); the GEMM itself runs single-threaded inside
//! it unless there are fewer tasks than threads.

use super::conv::Conv2dShape;
use crate::error::Result;
use gemm::Parallelism;
use rayon::prelude::*;

/// `y = conv2d(x, w) + bias` for float32 NCHW data; `y` must hold
/// `batch × C_out × H_out × W_out` values. Same results as
/// [`forward_ref`](super::conv::forward_ref) up to summation order.
pub fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    s.check_lens(x.len(), w.len(), bias.map(<[f32]>::len), y.len())?;
    let [oh, ow] = s.output();
    let p = oh * ow;
    let (cig, cog) = (s.group_in(), s.group_out());
    let k = cig * s.kernel[0] * s.kernel[1];
    let plane = s.input[0] * s.input[1];
    let pointwise = s.kernel == [1, 1] && s.stride == [1, 1] && s.padding == [0, 0];
    let tasks = s.batch * s.groups;
    let threads = rayon::current_num_threads();
    let inner = if tasks < threads {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };

    y.par_chunks_mut(cog * p).enumerate().for_each_init(
        || {
            if pointwise {
                Vec::new()
            } else {
                vec![0f32; k * p]
            }
        },
        |cols, (task, out)| {
            let (n, g) = (task / s.groups, task % s.groups);
            let x_group = &x[(n * s.in_channels + g * cig) * plane..][..cig * plane];
            let rhs: &[f32] = if pointwise {
                x_group
            } else {
                im2col(s, x_group, cols);
                cols
            };
            let lhs = &w[g * cog * k..][..cog * k];
            if let Some(b) = bias {
                for (row, &bv) in out.chunks_exact_mut(p).zip(&b[g * cog..]) {
                    row.fill(bv);
                }
            }
            // SAFETY: out is cog × p (row stride p), lhs cog × k (row stride
            // k), rhs k × p (row stride p); all three are in bounds.
            unsafe {
                gemm::gemm(
                    cog,
                    p,
                    k,
                    out.as_mut_ptr(),
                    1,
                    p as isize,
                    bias.is_some(),
                    lhs.as_ptr(),
                    1,
                    k as isize,
                    rhs.as_ptr(),
                    1,
                    p as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    inner,
                );
            }
        },
    );
    Ok(())
}

/// Column buffer of one image and group: row `(c · kH + ky) · kW + kx`,
/// column `oy · W_out + ox` holds the input value under that kernel tap
/// (zero in the padding). `x` is the group's `C_in/g` input planes.
fn im2col(s: &Conv2dShape, x: &[f32], cols: &mut [f32]) {
    let [h, w] = s.input;
    let [oh, ow] = s.output();
    let [kh, kw] = s.kernel;
    let mut rows = cols.chunks_exact_mut(oh * ow);
    for c in 0..s.group_in() {
        let plane = &x[c * h * w..][..h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = rows.next().expect("one row per (channel, tap)");
                for oy in 0..oh {
                    let dst = &mut row[oy * ow..][..ow];
                    let iy = (oy * s.stride[0] + ky * s.dilation[0]).checked_sub(s.padding[0]);
                    match iy.filter(|&iy| iy < h) {
                        None => dst.fill(0.0),
                        Some(iy) => {
                            let src = &plane[iy * w..][..w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * s.stride[1] + kx * s.dilation[1])
                                    .checked_sub(s.padding[1]);
                                *d = ix.filter(|&ix| ix < w).map_or(0.0, |ix| src[ix]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::assert_forward_matches_reference;

    #[test]
    fn matches_the_reference_on_many_shapes() {
        // (batch, c_in, c_out, h, w, k, stride, pad, dil, groups, bias)
        let cases = [
            (2, 8, 16, 5, 7, [1, 1], [1, 1], [0, 0], [1, 1], 1, false),
            (1, 16, 24, 7, 9, [1, 1], [1, 1], [0, 0], [1, 1], 8, true),
            (2, 16, 16, 7, 9, [1, 1], [2, 2], [0, 0], [1, 1], 4, false),
            (3, 6, 9, 9, 7, [3, 3], [2, 2], [1, 1], [1, 1], 3, true),
            (1, 64, 64, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1], 32, false),
            (2, 12, 12, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], 12, true),
            (2, 7, 7, 10, 9, [3, 3], [2, 1], [2, 1], [2, 1], 7, false),
            (1, 3, 8, 13, 11, [7, 7], [2, 2], [3, 3], [1, 1], 1, true),
            (2, 5, 10, 6, 8, [3, 5], [1, 2], [1, 2], [1, 1], 5, false),
        ];
        for (i, &(batch, cin, cout, h, w, k, stride, pad, dil, groups, bias)) in
            cases.iter().enumerate()
        {
            let s = Conv2dShape {
                stride,
                padding: pad,
                dilation: dil,
                ..Conv2dShape::new(batch, cin, cout, [h, w], k, groups)
            }
            .validate()
            .unwrap();
            assert_forward_matches_reference(&s, bias, i as u64, |x, w, b, y| {
                forward(&s, x, w, b, y)
            });
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = Conv2dShape::new(1, 2, 2, [3, 3], [1, 1], 1);
        let mut y = vec![0.0; 18];
        assert!(forward(&s, &[0.0; 17], &[0.0; 4], None, &mut y).is_err());
        assert!(forward(&s, &[0.0; 18], &[0.0; 4], Some(&[0.0]), &mut y).is_err());
    }
}
