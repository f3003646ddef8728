//! The fast conv kernels against the reference on random shapes, odd
//! channel counts and sizes that do not fill a vector included.

use super::conv::{assert_backward_matches_reference, assert_forward_matches_reference};
use super::{Conv2dShape, conv_gemm, depthwise, direct};
use proptest::prelude::*;

fn shapes() -> impl Strategy<Value = Conv2dShape> {
    (
        (1usize..4, 1usize..5, 1usize..6, 1usize..6),
        (1usize..10, 1usize..10, 1usize..4, 1usize..4),
        (
            1usize..3,
            1usize..3,
            0usize..3,
            0usize..2,
            1usize..3,
            1usize..3,
        ),
    )
        .prop_filter_map(
            "the kernel must fit the padded input",
            |((batch, groups, cig, cog), (h, w, kh, kw), (sh, sw, ph, pw, dh, dw))| {
                Conv2dShape {
                    stride: [sh, sw],
                    padding: [ph, pw],
                    dilation: [dh, dw],
                    ..Conv2dShape::new(batch, groups * cig, groups * cog, [h, w], [kh, kw], groups)
                }
                .validate()
                .ok()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemm_direct_and_depthwise_kernels_match_the_reference(s in shapes(), bias: bool, seed in 0u64..1000) {
        assert_forward_matches_reference(&s, bias, seed, |x, w, b, y| conv_gemm::forward(&s, x, w, b, y));
        assert_forward_matches_reference(&s, bias, seed, |x, w, b, y| direct::forward(&s, x, w, b, y));
        assert_backward_matches_reference(&s, seed, |x, w, dy, dx, dw, db| {
            conv_gemm::backward(&s, x, w, dy, Some(dx), Some(dw), Some(db))
        });
        assert_backward_matches_reference(&s, seed, |x, w, dy, dx, dw, db| {
            direct::backward(&s, x, w, dy, Some(dx), Some(dw), Some(db))
        });
        if depthwise::suits(&s) {
            assert_forward_matches_reference(&s, bias, seed, |x, w, b, y| depthwise::forward(&s, x, w, b, y));
            assert_backward_matches_reference(&s, seed, |x, w, dy, dx, dw, db| {
                depthwise::input_grad(&s, w, dy, dx)?;
                direct::backward(&s, x, w, dy, None, Some(dw), Some(db))
            });
        }
    }
}

/// Shapes whose weight gradient takes the register tiles of
/// `row_dots` (planes of at least 512 positions, few weights per group),
/// which the random shapes above are too small to reach: 1×1 layers on
/// planes with and without a partial last vector, a strided 1×1 layer and
/// a 3×3 one (their im2col matrices), group sizes that leave partial
/// tiles.
#[test]
fn gemm_weight_gradient_tiles_match_the_reference() {
    let shapes = [
        (Conv2dShape::new(2, 24, 6, [24, 24], [1, 1], 3), [1, 0]),
        (Conv2dShape::new(2, 10, 35, [23, 23], [1, 1], 5), [1, 0]),
        (Conv2dShape::new(1, 6, 9, [47, 45], [1, 1], 3), [2, 0]),
        (Conv2dShape::new(2, 8, 12, [24, 25], [3, 3], 4), [1, 1]),
    ];
    for (seed, (s, [stride, padding])) in shapes.into_iter().enumerate() {
        let s = Conv2dShape {
            stride: [stride; 2],
            padding: [padding; 2],
            ..s
        }
        .validate()
        .unwrap();
        let [oh, ow] = s.output();
        assert!(oh * ow >= 512, "{s:?} is too small to reach the tiles");
        assert_backward_matches_reference(&s, seed as u64, |x, w, dy, dx, dw, db| {
            conv_gemm::backward(&s, x, w, dy, Some(dx), Some(dw), Some(db))
        });
    }
}
