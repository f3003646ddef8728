//! Fixture files made by tools/torch_fixtures.py: a header line per case
//! (kind, name, numbers), then one line per array (name, values).

use std::collections::HashMap;

pub struct Case {
    pub kind: String,
    pub name: String,
    pub dims: Vec<f64>,
    pub arrays: HashMap<String, Vec<f64>>,
}

impl Case {
    /// Header number `i` as a size.
    pub fn dim(&self, i: usize) -> usize {
        self.dims[i] as usize
    }

    /// The array `key`, as float64 or float32.
    pub fn get(&self, key: &str) -> &[f64] {
        self.arrays
            .get(key)
            .unwrap_or_else(|| panic!("{} {}: no {key}", self.kind, self.name))
    }

    pub fn f32s(&self, key: &str) -> Vec<f32> {
        self.get(key).iter().map(|&v| v as f32).collect()
    }
}

/// Parses a fixture file; `kinds` are the header words.
pub fn load(text: &str, kinds: &[&str]) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let head = words.next().unwrap();
        let numbers = |words: std::str::SplitWhitespace| -> Vec<f64> {
            words.map(|w| w.parse().unwrap()).collect()
        };
        if kinds.contains(&head) {
            cases.push(Case {
                kind: head.to_string(),
                name: words.next().unwrap().to_string(),
                dims: numbers(words),
                arrays: HashMap::new(),
            });
        } else {
            let values = numbers(words);
            cases
                .last_mut()
                .unwrap()
                .arrays
                .insert(head.to_string(), values);
        }
    }
    cases
}

/// max |got − want| ≤ 1e-4 · max(1, max |want|), the project's parity bar.
pub fn assert_close<T: Copy + Into<f64>>(got: &[T], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = gconv::simd::max_or_nan(got.iter().zip(want).map(|(&g, w)| (g.into() - w).abs()));
    assert!(
        err <= 1e-4 * scale,
        "{what}: max error {err} (scale {scale})"
    );
}
