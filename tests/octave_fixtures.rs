//! gconv::signal against GNU Octave's conv, conv2, convn, conv2(u, v, A) and
//! filter2, from fixtures made by tools/octave_fixtures.m.

use gconv::signal::{Method, Mode, conv_with, conv2_sep, correlate};
use ndarray::{ArrayD, IxDyn};

struct Case {
    name: String,
    func: String,
    mode: Mode,
    integer: bool,
    arrays: Vec<(String, ArrayD<f64>)>,
}

impl Case {
    fn get(&self, key: &str) -> &ArrayD<f64> {
        &self
            .arrays
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{}: no {key}", self.name))
            .1
    }
}

fn load() -> Vec<Case> {
    let text = include_str!("fixtures/octave_conv.txt");
    let mut cases: Vec<Case> = Vec::new();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"case") {
            cases.push(Case {
                name: words[1].to_string(),
                func: words[2].to_string(),
                mode: words[3].parse().unwrap(),
                integer: words[4] == "int",
                arrays: Vec::new(),
            });
            continue;
        }
        let rank: usize = words[1].parse().unwrap();
        let shape: Vec<usize> = words[2..2 + rank]
            .iter()
            .map(|w| w.parse().unwrap())
            .collect();
        let values: Vec<f64> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let array = ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap();
        cases
            .last_mut()
            .unwrap()
            .arrays
            .push((words[0].to_string(), array));
    }
    cases
}

fn compute(case: &Case, method: Method) -> ArrayD<f64> {
    let (a, b) = (case.get("A").view(), case.get("B").view());
    match case.func.as_str() {
        "conv" | "conv2" | "convn" => conv_with(&a, &b, case.mode, method),
        "sep" => conv2_sep(&b, &case.get("V").view(), &a, case.mode, method),
        "filter2" => correlate(&a, &b, case.mode, method),
        f => panic!("unknown function {f}"),
    }
    .unwrap()
}

#[test]
fn fixtures_cover_every_function_and_mode() {
    let cases = load();
    assert_eq!(cases.len(), 48);
    for func in ["conv", "conv2", "convn", "sep", "filter2"] {
        for mode in [Mode::Full, Mode::Same, Mode::Valid] {
            assert!(
                cases.iter().any(|c| c.func == func && c.mode == mode),
                "{func} {mode}"
            );
        }
    }
}

#[test]
fn float_results_match_octave_by_direct_and_fft() {
    for case in load() {
        let want = case.get("C");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (method, tol) in [
            (Method::Direct, 1e-13),
            (Method::Fft, 1e-10),
            (Method::Auto, 1e-10),
        ] {
            let got = compute(&case, method);
            assert_eq!(got.shape(), want.shape(), "{} {method:?}: shape", case.name);
            let err = gconv::simd::max_or_nan(got.iter().zip(want).map(|(g, w)| (g - w).abs()));
            assert!(
                err <= tol * scale,
                "{} {method:?}: max error {err}",
                case.name
            );
        }
    }
}

#[test]
fn integer_results_match_octave_exactly() {
    let mut checked = 0;
    for case in load().into_iter().filter(|c| c.integer) {
        let to_int = |x: &ArrayD<f64>| x.mapv(|v| v as i64);
        let (a, b) = (to_int(case.get("A")), to_int(case.get("B")));
        let got = match case.func.as_str() {
            "filter2" => correlate(&a.view(), &b.view(), case.mode, Method::Auto),
            _ => conv_with(&a.view(), &b.view(), case.mode, Method::Auto),
        }
        .unwrap();
        assert_eq!(got, to_int(case.get("C")), "{}", case.name);
        // int32 too.
        let got32 = conv_with(
            &a.mapv(|v| v as i32).view(),
            &b.mapv(|v| v as i32).view(),
            case.mode,
            Method::Direct,
        )
        .unwrap();
        if case.func != "filter2" {
            assert_eq!(
                got32.mapv(i64::from),
                to_int(case.get("C")),
                "{} int32",
                case.name
            );
        }
        checked += 1;
    }
    assert!(checked >= 24, "{checked}");
}
