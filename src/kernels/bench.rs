//! The convolution layers of ../shared/ANCHORS.md (ShuffleNet v1 and
//! ResNeXt-29 layers with PyTorch 2.15's times on the project's machine,
//! 2 threads), and runners that time gconv's kernels on them. Shared by
//! `gconv bench layers` and the criterion bench.

use super::{Conv2dShape, conv_gemm, direct};
use crate::error::Result;

/// One benchmarked layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The id used in ANCHORS.md, e.g. `sn_g3_dw_s2`.
    pub id: &'static str,
    pub shape: Conv2dShape,
    /// PyTorch 2.15 forward and backward (input + weight gradient) times, ms.
    pub pytorch_forward_ms: f64,
    pub pytorch_backward_ms: f64,
}

impl Layer {
    /// Whether the layer is depthwise (memory-bound).
    pub fn is_depthwise(&self) -> bool {
        self.shape.group_in() == 1
    }

    /// Floating-point operations of a pass: 2 per multiply-add; the
    /// backward pass does two products (input and weight gradients).
    pub fn flops(&self, backward: bool) -> f64 {
        2.0 * self.shape.macs() as f64 * if backward { 2.0 } else { 1.0 }
    }

    /// Bytes a pass must at least move: forward reads `x` and writes `y`;
    /// backward reads `x` and `dy` and writes `dx` (weights are tiny).
    pub fn min_bytes(&self, backward: bool) -> f64 {
        let (x, _, y) = self.shape.lens();
        4.0 * if backward {
            (2 * x + y) as f64
        } else {
            (x + y) as f64
        }
    }
}

/// The layer table of ANCHORS.md.
pub fn anchor_layers() -> Vec<Layer> {
    let conv = |batch, cin, cout, hw: usize, k: usize, stride: usize, groups| Conv2dShape {
        stride: [stride; 2],
        padding: [k / 2; 2],
        ..Conv2dShape::new(batch, cin, cout, [hw, hw], [k, k], groups)
    };
    let layer = |id, shape, f, b| Layer {
        id,
        shape,
        pytorch_forward_ms: f,
        pytorch_backward_ms: b,
    };
    vec![
        layer("sn_g3_compress", conv(32, 240, 60, 28, 1, 1, 3), 4.17, 17.6),
        layer("sn_g3_dw_s1", conv(32, 60, 60, 28, 3, 1, 60), 0.95, 2.10),
        layer("sn_g3_dw_s2", conv(32, 60, 60, 56, 3, 2, 60), 2.54, 25.0),
        layer("sn_g3_expand", conv(32, 60, 240, 28, 1, 1, 3), 4.10, 22.2),
        layer("sn_g8_compress", conv(32, 384, 96, 28, 1, 1, 8), 14.5, 24.2),
        layer("sn_g1_compress", conv(32, 144, 36, 28, 1, 1, 1), 1.88, 3.86),
        layer("rx29_g32_s1", conv(64, 128, 128, 32, 3, 1, 32), 29.1, 81.2),
        layer("rx29_g32_s2", conv(64, 256, 256, 32, 3, 2, 32), 20.4, 61.4),
    ]
}

/// Buffers for timing one layer: inputs filled with seeded values.
pub struct Buffers {
    x: Vec<f32>,
    w: Vec<f32>,
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

impl Buffers {
    pub fn new(s: &Conv2dShape) -> Buffers {
        let (xl, wl, yl) = s.lens();
        let fill = |len: usize, seed: u64| -> Vec<f32> {
            crate::random::uniform(&[len], seed)
                .iter()
                .map(|&v| v as f32)
                .collect()
        };
        Buffers {
            x: fill(xl, 1),
            w: fill(wl, 2),
            y: fill(yl, 3),
            dx: vec![0.0; xl],
            dw: vec![0.0; wl],
        }
    }
}

/// Which conv kernel a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The one the `conv2d` op picks for the shape.
    Auto,
    /// Grouped GEMM (im2col for spatial kernels).
    Gemm,
    /// Direct (padded phase-split planes).
    Direct,
}

/// One forward pass of `s`.
pub fn forward(s: &Conv2dShape, b: &mut Buffers, kernel: Kernel) -> Result<()> {
    let f = match kernel {
        Kernel::Auto => super::conv2d_forward,
        Kernel::Gemm => conv_gemm::forward,
        Kernel::Direct => direct::forward,
    };
    f(s, &b.x, &b.w, None, &mut b.y)
}

/// One backward pass (input and weight gradients; `y` serves as `dy`).
pub fn backward(s: &Conv2dShape, b: &mut Buffers, kernel: Kernel) -> Result<()> {
    let (dx, dw) = (Some(&mut b.dx[..]), Some(&mut b.dw[..]));
    match kernel {
        Kernel::Auto => super::conv2d_backward(s, &b.x, &b.w, &b.y, [dx, dw, None]),
        Kernel::Gemm => conv_gemm::backward(s, &b.x, &b.w, &b.y, dx, dw, None),
        Kernel::Direct => direct::backward(s, &b.x, &b.w, &b.y, dx, dw, None),
    }
}
