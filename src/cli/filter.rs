//! `gconv filter`: MATLAB-style image filtering.

use anyhow::{Result, bail};
use gconv::filter::{NormScope, Normalize, filter_image, normalize, parse_kernel};
use gconv::io::{ColorMode, read_image, write_png};
use gconv::signal::{Method, Mode};
use std::path::PathBuf;

/// Filter an image as MATLAB does: conv2(im2double(rgb2gray(I)), K, mode),
/// then normalize, written as an 8-bit PNG clipped to [0, 1] like imshow.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Kernels:\n  sobel-x, sobel-y            fspecial('sobel') and its transpose\n  laplacian[:ALPHA]           fspecial('laplacian', ALPHA), ALPHA = 0.2 by default\n  gaussian:SIGMA[:SIZE]       fspecial('gaussian', SIZE, SIGMA), SIZE = 2*ceil(2*SIGMA)+1 by default\n  box:N                       ones(N)/N^2\n  sharpen, emboss             the usual 3x3 kernels\n  random-symmetric:N:SEED     the seed article's A = randi([-5,5],N,N); k = A.*A'\n  \"[1 2 1; 0 0 0; -1 -2 -1]\"   a matrix literal\n  kernel.npy                  a matrix from a file\n\nExample:\n  gconv filter photo.png -k sobel-x -o edges.png"
)]
pub struct Args {
    /// Input image (PNG or JPEG; colour is converted to grey with MATLAB's
    /// rgb2gray weights unless --per-channel).
    image: PathBuf,
    /// The kernel (see below). Convolution flips it, as conv2 does.
    #[arg(short, long)]
    kernel: String,
    /// Output PNG file (written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Part of the full result to keep.
    #[arg(long, default_value = "same", value_parser = ["full", "same", "valid"])]
    mode: String,
    /// Normalisation after filtering: zscore is MATLAB normalize's default,
    /// range maps to [0, 1], none keeps the filtered values.
    #[arg(long, default_value = "zscore", value_parser = ["zscore", "range", "none"])]
    normalize: String,
    /// Statistics per column (MATLAB normalize on a matrix) or over the image.
    #[arg(long, default_value = "columns", value_parser = ["columns", "image"])]
    norm_over: String,
    /// Filter the R, G and B channels separately and write a colour PNG.
    #[arg(long)]
    per_channel: bool,
    /// Algorithm: auto picks by a cost model.
    #[arg(long, default_value = "auto", value_parser = ["auto", "direct", "fft"])]
    method: String,
}

pub fn run(args: Args) -> Result<()> {
    let mode: Mode = args.mode.parse()?;
    let method: Method = args.method.parse()?;
    let how: Normalize = args.normalize.parse()?;
    let scope: NormScope = args.norm_over.parse()?;
    if args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("png")
    {
        bail!("output {} must be a .png file", args.output.display());
    }
    let kernel = parse_kernel(&args.kernel)?;
    let colour = if args.per_channel {
        ColorMode::PerChannel
    } else {
        ColorMode::Gray
    };
    let image = read_image(&args.image, colour)?;
    let mut out = filter_image(&image, &kernel, mode, method)?;
    normalize(&mut out, how, scope);
    write_png(&args.output, &out.view())?;
    Ok(())
}
