//! The library's error type: every failure names the value and what was expected.

use std::path::PathBuf;

/// Errors returned by the gconv library. The CLI prints them as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments that do not fit together (shapes, ranks, options).
    #[error("{0}")]
    Invalid(String),

    /// An exact integer result does not fit the output type.
    #[error("integer overflow: {0}")]
    Overflow(String),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file was read but its contents are not what its format requires.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

impl Error {
    /// An [`Error::Invalid`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
