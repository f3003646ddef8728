//! `gconv conv`: MATLAB `convn` on `.npy` files or matrix text.

use anyhow::{Context, Result, bail};
use gconv::filter::parse_matrix;
use gconv::io::{read_npy, write_npy};
use gconv::signal::{DynArray, Method, Mode, conv_dyn, correlate_dyn};
use std::path::{Path, PathBuf};

/// Convolve two arrays (MATLAB conv/conv2/convn): C = conv(A, B, mode).
///
/// Integer inputs give exact integer results (an error if a sum overflows the
/// type); mixed types are promoted as NumPy does (int32 with float32 gives
/// float64). Arrays of different rank get trailing singleton dimensions.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  gconv conv signal.npy kernel.npy -o out.npy --mode same\n  gconv conv '[1 2 3]' '[1 1]' -o out.npy\n  gconv conv image.npy '[1 2 1; 0 0 0; -1 -2 -1]' -o edges.npy --mode valid"
)]
pub struct Args {
    /// First array: a .npy file, a text file with one matrix row per line,
    /// or a MATLAB-style literal such as "[1 2; 3 4]" (text is float64).
    a: String,
    /// Second array (the kernel), in the same forms as A.
    b: String,
    /// Output .npy file (written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Part of the full result to keep.
    #[arg(long, default_value = "full", value_parser = ["full", "same", "valid"])]
    mode: String,
    /// Algorithm: auto picks by a cost model; fft is for float data only.
    #[arg(long, default_value = "auto", value_parser = ["auto", "direct", "fft"])]
    method: String,
    /// Correlate instead (MATLAB filter2(B, A): B is not flipped).
    #[arg(long)]
    correlate: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mode: Mode = args.mode.parse()?;
    let method: Method = args.method.parse()?;
    if args.output.extension().and_then(|e| e.to_str()) != Some("npy") {
        bail!("output {} must be a .npy file", args.output.display());
    }
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let out = if args.correlate {
        correlate_dyn(a, b, mode, method)?
    } else {
        conv_dyn(a, b, mode, method)?
    };
    write_npy(&args.output, &out)?;
    Ok(())
}

/// An array argument: literal, .npy file or text file.
fn load(arg: &str) -> Result<DynArray> {
    if arg.trim_start().starts_with('[') {
        return Ok(DynArray::F64(parse_matrix(arg)?));
    }
    let path = Path::new(arg);
    if path.extension().and_then(|e| e.to_str()) == Some("npy") {
        return Ok(read_npy(path)?);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?;
    Ok(DynArray::F64(parse_matrix(&text).with_context(|| {
        format!("{arg} is neither a .npy file nor a text matrix")
    })?))
}
