//! Filter kernels by name (MATLAB `fspecial` conventions), as matrix
//! literals, or from `.npy` files.

use crate::error::{Error, Result};
use crate::io::read_npy;
use crate::signal::{DType, DynArray};
use ndarray::{Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The preset names [`parse_kernel`] knows, with their syntax.
pub const PRESETS: &[&str] = &[
    "sobel-x",
    "sobel-y",
    "laplacian[:ALPHA]",
    "gaussian:SIGMA[:SIZE]",
    "box:N",
    "sharpen",
    "emboss",
    "random-symmetric:N:SEED",
];

/// A kernel from its description:
/// - a preset: `sobel-y` is `fspecial('sobel')` = `[1 2 1; 0 0 0; -1 -2 -1]`
///   (horizontal edges), `sobel-x` its transpose; `laplacian[:ALPHA]` is
///   `fspecial('laplacian', ALPHA)` (default 0.2); `gaussian:SIGMA[:SIZE]` is
///   `fspecial('gaussian', SIZE, SIGMA)` with SIZE defaulting to
///   `2·ceil(2·SIGMA) + 1` (as `imgaussfilt`); `box:N` is `ones(N)/N²`;
///   `sharpen` is `[0 -1 0; -1 5 -1; 0 -1 0]`; `emboss` is
///   `[-2 -1 0; -1 1 1; 0 1 2]`; `random-symmetric:N:SEED` is the seed
///   article's `A = randi([-5, 5], N, N); k = A .* A'` from a seeded generator;
/// - a matrix literal such as `"[1 2 1; 0 0 0; -1 -2 -1]"`;
/// - the path of a `.npy` file holding a matrix.
pub fn parse_kernel(spec: &str) -> Result<ArrayD<f64>> {
    let spec = spec.trim();
    if spec.starts_with('[') {
        return parse_matrix(spec);
    }
    if spec.ends_with(".npy") {
        let array = read_npy(Path::new(spec))?;
        return match array.dtype() {
            DType::C64 | DType::C128 => Err(Error::invalid(format!(
                "{spec}: a kernel must be real, got {}",
                array.dtype()
            ))),
            _ => match array.cast(DType::F64) {
                DynArray::F64(a) => Ok(a),
                _ => unreachable!("cast to float64"),
            },
        };
    }
    let mut parts = spec.split(':');
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let num = |i: usize, what: &str| -> Result<f64> {
        args.get(i)
            .ok_or_else(|| Error::invalid(format!("kernel '{spec}' needs {what}")))?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Error::invalid(format!("kernel '{spec}': {what} must be a number")))
    };
    let count = |i: usize, what: &str| -> Result<usize> {
        let v = num(i, what)?;
        if v >= 1.0 && v.fract() == 0.0 && v <= 4096.0 {
            Ok(v as usize)
        } else {
            Err(Error::invalid(format!(
                "kernel '{spec}': {what} must be a whole number from 1 to 4096"
            )))
        }
    };
    let max_args = match name {
        "sobel-x" | "sobel-y" | "sharpen" | "emboss" => 0,
        "laplacian" | "box" => 1,
        "gaussian" | "random-symmetric" => 2,
        _ => {
            return Err(Error::invalid(format!(
                "unknown kernel '{spec}': expected a matrix like \"[1 2; 3 4]\", a .npy file, or one of {}",
                PRESETS.join(", ")
            )));
        }
    };
    if args.len() > max_args {
        return Err(Error::invalid(format!(
            "kernel '{spec}' has too many ':' arguments"
        )));
    }
    let k = match name {
        "sobel-y" => matrix3([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]),
        "sobel-x" => matrix3([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]),
        "sharpen" => matrix3([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
        "emboss" => matrix3([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]),
        "laplacian" => {
            let alpha = if args.is_empty() {
                0.2
            } else {
                num(0, "ALPHA")?
            };
            if !(0.0..=1.0).contains(&alpha) {
                return Err(Error::invalid(format!(
                    "kernel '{spec}': ALPHA must be in [0, 1]"
                )));
            }
            let (c, e) = (alpha / 4.0, (1.0 - alpha) / 4.0);
            matrix3([[c, e, c], [e, -1.0, e], [c, e, c]]).mapv(|v| v * 4.0 / (alpha + 1.0))
        }
        "gaussian" => {
            let sigma = num(0, "SIGMA")?;
            if sigma <= 0.0 {
                return Err(Error::invalid(format!(
                    "kernel '{spec}': SIGMA must be positive"
                )));
            }
            let size = if args.len() > 1 {
                count(1, "SIZE")?
            } else {
                2 * (2.0 * sigma).ceil() as usize + 1
            };
            gaussian(sigma, size)
        }
        "box" => {
            let n = count(0, "N")?;
            Array2::from_elem((n, n), 1.0 / (n * n) as f64).into_dyn()
        }
        "random-symmetric" => random_symmetric(count(0, "N")?, num(1, "SEED")? as u64),
        _ => unreachable!("names were checked above"),
    };
    Ok(k)
}

fn matrix3(rows: [[f64; 3]; 3]) -> ArrayD<f64> {
    Array2::from_shape_fn((3, 3), |(i, j)| rows[i][j]).into_dyn()
}

/// `fspecial('gaussian', size, sigma)`: exp(−(x² + y²) / 2σ²) on a grid
/// centred at (size − 1) / 2, normalised to sum 1.
fn gaussian(sigma: f64, size: usize) -> ArrayD<f64> {
    let c = (size as f64 - 1.0) / 2.0;
    let g = Array2::from_shape_fn((size, size), |(i, j)| {
        let (y, x) = (i as f64 - c, j as f64 - c);
        (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
    });
    let sum = g.sum();
    g.mapv(|v| v / sum).into_dyn()
}

/// The seed article's kernel: `A = randi([-5, 5], n, n); k = A .* A'`.
fn random_symmetric(n: usize, seed: u64) -> ArrayD<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = Array2::from_shape_fn((n, n), |_| rng.random_range(-5i32..=5) as f64);
    (&a * &a.t()).into_dyn()
}

/// Parses a MATLAB-style matrix: rows separated by `;` or new lines,
/// values by spaces or commas, optional brackets. `"[]"` is the 0×0 matrix.
pub fn parse_matrix(text: &str) -> Result<ArrayD<f64>> {
    let body = text.trim();
    let body = body.strip_prefix('[').unwrap_or(body);
    let body = body.strip_suffix(']').unwrap_or(body);
    if body.contains(['[', ']']) {
        return Err(Error::invalid(format!(
            "matrix '{text}': nested brackets are not supported"
        )));
    }
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (r, line) in body.split([';', '\n']).enumerate() {
        let mut row = Vec::new();
        for token in line.split([' ', ',', '\t', '\r']).filter(|t| !t.is_empty()) {
            let v: f64 = token.parse().map_err(|_| {
                Error::invalid(format!(
                    "matrix '{text}': '{token}' in row {} is not a number",
                    r + 1
                ))
            })?;
            row.push(v);
        }
        if !row.is_empty() {
            rows.push(row);
        }
    }
    let cols = rows.first().map_or(0, Vec::len);
    if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != cols) {
        return Err(Error::invalid(format!(
            "matrix '{text}': row {} has {} values, row 1 has {cols}",
            r + 1,
            row.len()
        )));
    }
    let n = rows.len();
    ArrayD::from_shape_vec(IxDyn(&[n, cols]), rows.concat())
        .map_err(|e| Error::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse() {
        let k = parse_matrix("[1 2 1; 0 0 0; -1 -2 -1]").unwrap();
        assert_eq!(k.shape(), &[3, 3]);
        assert_eq!(k, parse_kernel("sobel-y").unwrap());
        assert_eq!(parse_matrix("1,2\n3,4").unwrap().shape(), &[2, 2]);
        assert_eq!(parse_matrix("[]").unwrap().shape(), &[0, 0]);
        assert!(
            parse_matrix("[1 2; 3]")
                .unwrap_err()
                .to_string()
                .contains("row 2")
        );
        assert!(
            parse_matrix("[1 x]")
                .unwrap_err()
                .to_string()
                .contains("'x'")
        );
    }

    #[test]
    fn presets_match_fspecial() {
        // fspecial('laplacian') with alpha 0.2.
        let l = parse_kernel("laplacian").unwrap();
        let want = [0.1667, 0.6667, 0.1667, 0.6667, -3.3333, 0.6667];
        for (g, w) in l.iter().zip(want) {
            assert!((g - w).abs() < 1e-4);
        }
        let g = parse_kernel("gaussian:1").unwrap();
        assert_eq!(g.shape(), &[5, 5]);
        assert!((g.sum() - 1.0).abs() < 1e-12);
        // fspecial('gaussian', 5, 1) centre value: 1 / (Σ_{x=-2..2} e^{-x²/2})².
        let s: f64 = (-2..=2).map(|x: i32| (-(x * x) as f64 / 2.0).exp()).sum();
        assert!((g[[2, 2]] - 1.0 / (s * s)).abs() < 1e-15);
        assert_eq!(parse_kernel("box:2").unwrap().sum(), 1.0);
        assert_eq!(
            parse_kernel("sobel-x").unwrap().t(),
            parse_kernel("sobel-y").unwrap()
        );
    }

    #[test]
    fn random_symmetric_is_symmetric_and_seeded() {
        let k = parse_kernel("random-symmetric:5:7").unwrap();
        assert_eq!(k, parse_kernel("random-symmetric:5:7").unwrap());
        assert_ne!(k, parse_kernel("random-symmetric:5:8").unwrap());
        assert_eq!(k.t(), k.view());
        assert!(k.iter().all(|v| v.abs() <= 25.0 && v.fract() == 0.0));
    }

    #[test]
    fn bad_specs_are_errors() {
        for bad in [
            "blur",
            "gaussian",
            "gaussian:-1",
            "box:0",
            "box:2.5",
            "sobel-x:3",
            "laplacian:2",
        ] {
            assert!(parse_kernel(bad).is_err(), "{bad}");
        }
    }
}
