//! Tests of the convolution algebra: fast paths against the plain reference,
//! FFT against direct, and MATLAB's identities.

use super::*;
use ndarray::{Array, ArrayD, Slice};
use proptest::prelude::*;

/// Shapes of equal rank 1..=3, lengths 0..=6 for `a` and 0..=5 for `b`.
fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..=3).prop_flat_map(|r| {
        (
            prop::collection::vec(0usize..=6, r),
            prop::collection::vec(0usize..=5, r),
        )
    })
}

fn ints(shape: &[usize], seed: u64, range: i64) -> ArrayD<i64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array::from_shape_fn(IxDyn(shape), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as i64 % (2 * range + 1)) - range
    })
}

fn floats(shape: &[usize], seed: u64) -> ArrayD<f64> {
    ints(shape, seed, 1000).mapv(|v| v as f64 / 317.0)
}

fn spans_of(a: &[usize], b: &[usize], mode: Mode) -> Vec<Span> {
    a.iter().zip(b).map(|(&m, &n)| mode.span(m, n)).collect()
}

const MODES: [Mode; 3] = [Mode::Full, Mode::Same, Mode::Valid];

fn max_abs_diff(x: &ArrayD<f64>, y: &ArrayD<f64>) -> f64 {
    assert_eq!(x.shape(), y.shape());
    crate::simd::max_or_nan(x.iter().zip(y).map(|(a, b)| (a - b).abs()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_matches_reference_on_every_isa((ash, bsh) in shapes(), seed in any::<u64>()) {
        let a = floats(&ash, seed);
        let b = floats(&bsh, seed ^ 1);
        for mode in MODES {
            let spans = spans_of(&ash, &bsh, mode);
            let want = direct::reference(a.as_slice().unwrap(), &ash, b.as_slice().unwrap(), &bsh, &spans);
            for isa in Isa::available() {
                let got = direct::direct(a.as_slice().unwrap(), &ash, b.as_slice().unwrap(), &bsh, &spans, isa);
                // Same sums in the same order: bit-identical.
                prop_assert_eq!(&got, &want);
            }
        }
    }

    #[test]
    fn fft_agrees_with_direct((ash, bsh) in shapes(), seed in any::<u64>()) {
        let a = floats(&ash, seed);
        let b = floats(&bsh, seed ^ 2);
        for mode in MODES {
            let d = conv_with(&a.view(), &b.view(), mode, Method::Direct).unwrap();
            let f = conv_with(&a.view(), &b.view(), mode, Method::Fft).unwrap();
            let scale = d.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            prop_assert!(max_abs_diff(&d, &f) <= 1e-10 * scale, "mode {mode}");
        }
    }

    #[test]
    fn full_is_commutative_and_exact_for_integers((ash, bsh) in shapes(), seed in any::<u64>()) {
        let a = ints(&ash, seed, 10);
        let b = ints(&bsh, seed ^ 3, 10);
        let ab = conv(&a.view(), &b.view(), Mode::Full).unwrap();
        let ba = conv(&b.view(), &a.view(), Mode::Full).unwrap();
        prop_assert_eq!(&ab, &ba);
        let want = direct::reference(a.as_slice().unwrap(), &ash, b.as_slice().unwrap(), &bsh, &spans_of(&ash, &bsh, Mode::Full));
        prop_assert_eq!(ab.as_slice().unwrap(), &want[..]);
    }

    #[test]
    fn same_and_valid_are_slices_of_full((ash, bsh) in shapes(), seed in any::<u64>()) {
        let a = ints(&ash, seed, 10);
        let b = ints(&bsh, seed ^ 4, 10);
        let full = conv(&a.view(), &b.view(), Mode::Full).unwrap();
        for mode in [Mode::Same, Mode::Valid] {
            let got = conv(&a.view(), &b.view(), mode).unwrap();
            if ash.iter().chain(&bsh).any(|&d| d == 0) {
                // Nothing to slice: the result is all zeros of the mode's shape.
                prop_assert!(got.iter().all(|&v| v == 0));
                continue;
            }
            let mut want = full.view();
            for (d, s) in spans_of(&ash, &bsh, mode).iter().enumerate() {
                want.slice_axis_inplace(Axis(d), Slice::from(s.start..s.start + s.len as isize));
            }
            prop_assert_eq!(got, want.to_owned());
        }
    }
}

use ndarray::Axis;

#[test]
fn matlab_examples() {
    // conv([1 2 3], [1 1]) and conv2 'same' with an even kernel (offset floor(n/2)).
    let a = ndarray::arr1(&[1.0, 2.0, 3.0]).into_dyn();
    let b = ndarray::arr1(&[1.0, 1.0]).into_dyn();
    assert_eq!(
        conv(&a.view(), &b.view(), Mode::Full)
            .unwrap()
            .into_raw_vec_and_offset()
            .0,
        vec![1.0, 3.0, 5.0, 3.0]
    );
    assert_eq!(
        conv(&a.view(), &b.view(), Mode::Same)
            .unwrap()
            .into_raw_vec_and_offset()
            .0,
        vec![3.0, 5.0, 3.0]
    );
    assert_eq!(
        conv(&a.view(), &b.view(), Mode::Valid)
            .unwrap()
            .into_raw_vec_and_offset()
            .0,
        vec![3.0, 5.0]
    );
    // Kernel larger than the signal: valid is empty.
    let big = ndarray::arr1(&[1.0, 1.0, 1.0, 1.0]).into_dyn();
    assert_eq!(
        conv(&a.view(), &big.view(), Mode::Valid).unwrap().shape(),
        &[0]
    );
    // Different ranks: trailing singleton dimensions.
    let m = ndarray::arr2(&[[1, 2], [3, 4]]).into_dyn();
    let col = ndarray::arr1(&[1, -1]).into_dyn();
    let c = conv(&m.view(), &col.view(), Mode::Full).unwrap();
    assert_eq!(c, ndarray::arr2(&[[1, 2], [2, 2], [-3, -4]]).into_dyn());
}

#[test]
fn i32_overflow_is_an_error_and_i64_stays_exact() {
    let a = ArrayD::from_elem(IxDyn(&[4]), i32::MAX);
    let b = ArrayD::from_elem(IxDyn(&[2]), 1i32);
    let err = conv(&a.view(), &b.view(), Mode::Full).unwrap_err();
    assert!(matches!(err, Error::Overflow(_)), "{err}");
    // Same data as int64: exact, through the wide accumulator.
    let a64 = a.mapv(i64::from);
    let c = conv(&a64.view(), &b.mapv(i64::from).view(), Mode::Full).unwrap();
    assert_eq!(
        c.as_slice().unwrap(),
        &[
            i32::MAX as i64,
            2 * i32::MAX as i64,
            2 * i32::MAX as i64,
            2 * i32::MAX as i64,
            i32::MAX as i64
        ]
    );
    // Products beyond i64 are summed in i128 and cancel exactly.
    let big = ndarray::arr1(&[i64::MAX / 2, i64::MAX / 2]).into_dyn();
    let diff = ndarray::arr1(&[4i64, -4]).into_dyn();
    let v = conv(&big.view(), &diff.view(), Mode::Valid).unwrap();
    assert_eq!(v.as_slice().unwrap(), &[0]);
    assert!(conv_with(&big.view(), &diff.view(), Mode::Full, Method::Fft).is_err());
}

#[test]
fn correlation_and_separable_forms() {
    let a = floats(&[7, 9], 11);
    let u = floats(&[3], 12);
    let v = floats(&[4], 13);
    let outer = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| u[[i[0]]] * v[[i[1]]]);
    for mode in MODES {
        let sep = conv2_sep(&u.view(), &v.view(), &a.view(), mode, Method::Auto).unwrap();
        let dense = conv(&a.view(), &outer.view(), mode).unwrap();
        assert!(max_abs_diff(&sep, &dense) < 1e-12, "{mode}");
        // filter2(h, X) = conv2(X, rot90(h, 2)).
        let mut rot = outer.clone();
        rot.invert_axis(Axis(0));
        rot.invert_axis(Axis(1));
        let corr = correlate(&a.view(), &outer.view(), mode, Method::Direct).unwrap();
        assert_eq!(
            corr,
            conv_with(&a.view(), &rot.view(), mode, Method::Direct).unwrap()
        );
    }
    assert!(
        conv2_sep(
            &outer.view(),
            &v.view(),
            &a.view(),
            Mode::Full,
            Method::Auto
        )
        .is_err()
    );
}

#[test]
fn complex_fft_agrees_with_direct() {
    let re = floats(&[9, 13], 21);
    let im = floats(&[9, 13], 22);
    let a = ArrayD::from_shape_fn(IxDyn(&[9, 13]), |i| {
        num_complex::Complex::new(re[&i], im[&i])
    });
    let b = a.slice(ndarray::s![..4, ..5]).to_owned().into_dyn();
    for mode in MODES {
        let d = conv_with(&a.view(), &b.view(), mode, Method::Direct).unwrap();
        let f = conv_with(&a.view(), &b.view(), mode, Method::Fft).unwrap();
        let err = crate::simd::max_or_nan(d.iter().zip(&f).map(|(x, y)| (x - y).norm()));
        assert!(err < 1e-10 * 100.0, "{mode}: {err}");
    }
}

#[test]
fn long_signals_use_overlap_add_and_stay_accurate() {
    let a = floats(&[50_000], 31);
    let b = floats(&[301], 32);
    let blocking = fft::Blocking::choose(50_000, 301, Mode::Full.span(50_000, 301), true);
    assert!(blocking.block < 50_000, "{blocking:?}");
    for mode in MODES {
        let d = conv_with(&a.view(), &b.view(), mode, Method::Direct).unwrap();
        let f = conv_with(&a.view(), &b.view(), mode, Method::Fft).unwrap();
        let scale = d.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&d, &f) <= 1e-10 * scale, "{mode}");
    }
    // Overlap-add along both dimensions of a wide 2-D array.
    let a2 = floats(&[40, 3000], 33);
    let b2 = floats(&[3, 40], 34);
    let d = conv_with(&a2.view(), &b2.view(), Mode::Same, Method::Direct).unwrap();
    let f = conv_with(&a2.view(), &b2.view(), Mode::Same, Method::Fft).unwrap();
    assert!(max_abs_diff(&d, &f) < 1e-9);
}

#[test]
fn large_2d_paths_agree() {
    // Sizes where the direct path splits rows across threads and the FFT
    // path uses a circular length shorter than the full result.
    let a = floats(&[300, 257], 41);
    for k in [3, 10, 31] {
        let b = floats(&[k, k], 42 + k as u64);
        for mode in MODES {
            let d = conv_with(&a.view(), &b.view(), mode, Method::Direct).unwrap();
            let f = conv_with(&a.view(), &b.view(), mode, Method::Fft).unwrap();
            let scale = d.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(max_abs_diff(&d, &f) <= 1e-10 * scale, "{k} {mode}");
        }
    }
    let row = floats(&[1, 200_000], 50);
    let k = floats(&[1, 7], 51);
    let want = direct::reference(
        row.as_slice().unwrap(),
        &[1, 200_000],
        k.as_slice().unwrap(),
        &[1, 7],
        &spans_of(&[1, 200_000], &[1, 7], Mode::Same),
    );
    let got = conv_with(&row.view(), &k.view(), Mode::Same, Method::Direct).unwrap();
    assert_eq!(got.as_slice().unwrap(), &want[..]);
}
