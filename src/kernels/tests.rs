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
