//! Output shapes of MATLAB's `shape` argument (`'full'`, `'same'`, `'valid'`).

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Which part of the full convolution to return, as MATLAB's `shape` argument.
///
/// Per dimension, with `m` the length of `a` and `n` that of the kernel `b`:
/// - `Full`: all `m + n - 1` values (0 when either is empty);
/// - `Same`: `m` values, the central part of full starting at index
///   `floor(n / 2)` (0-based). SciPy starts at `(n - 1) / 2`, which differs
///   for even `n`; gconv follows MATLAB;
/// - `Valid`: the `max(m - n + 1, 0)` values computed without zero padding,
///   starting at index `n - 1` of full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Full,
    Same,
    Valid,
}

/// The part of the full result kept along one dimension: full indices
/// `start .. start + len`. `start` is negative only for `Valid` with an
/// empty kernel, where MATLAB returns `m + 1` zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: isize,
    pub len: usize,
}

impl Mode {
    /// The kept span along a dimension where `a` has length `m`, `b` length `n`.
    pub(crate) fn span(self, m: usize, n: usize) -> Span {
        match self {
            Mode::Full => Span {
                start: 0,
                len: if m == 0 || n == 0 { 0 } else { m + n - 1 },
            },
            Mode::Same => Span {
                start: (n / 2) as isize,
                len: m,
            },
            Mode::Valid => Span {
                start: n as isize - 1,
                len: (m + 1).saturating_sub(n),
            },
        }
    }

    /// The name MATLAB uses for this mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Same => "same",
            Mode::Valid => "valid",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Mode::Full),
            "same" => Ok(Mode::Same),
            "valid" => Ok(Mode::Valid),
            _ => Err(Error::invalid(format!(
                "unknown mode '{s}': expected full, same or valid"
            ))),
        }
    }
}

/// How to compute a convolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// Pick by a cost model: direct for integers, small kernels and small
    /// outputs, FFT otherwise.
    #[default]
    Auto,
    /// Sum the products directly (exact for integers).
    Direct,
    /// Multiply spectra (floating-point types only), with overlap-add for
    /// signals much longer than the kernel.
    Fft,
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Method::Auto),
            "direct" => Ok(Method::Direct),
            "fft" => Ok(Method::Fft),
            _ => Err(Error::invalid(format!(
                "unknown method '{s}': expected auto, direct or fft"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_matlab() {
        assert_eq!(Mode::Full.span(5, 3), Span { start: 0, len: 7 });
        assert_eq!(Mode::Same.span(5, 4), Span { start: 2, len: 5 });
        assert_eq!(Mode::Same.span(5, 3), Span { start: 1, len: 5 });
        assert_eq!(Mode::Valid.span(5, 3), Span { start: 2, len: 3 });
        assert_eq!(Mode::Valid.span(2, 3), Span { start: 2, len: 0 });
        assert_eq!(Mode::Full.span(0, 3).len, 0);
        assert_eq!(Mode::Valid.span(4, 0), Span { start: -1, len: 5 });
    }

    #[test]
    fn parses_names() {
        assert_eq!("SAME".parse::<Mode>().unwrap(), Mode::Same);
        assert!("middle".parse::<Mode>().is_err());
        assert_eq!("fft".parse::<Method>().unwrap(), Method::Fft);
        assert!("fast".parse::<Method>().is_err());
    }
}
