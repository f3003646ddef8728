//! `gconv demo`: the seed article's walk through convolution, run for real.

use anyhow::{Context, Result};
use gconv::filter::{NormScope, Normalize, filter_image, normalize, parse_kernel};
use gconv::io::{ColorMode, read_image, write_png};
use gconv::signal::{Method, Mode, conv};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Walk through the seed article: 1-D convolution and its commutativity,
/// conv2 'valid', then an image filtered with several kernels (written as
/// PNG files).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for the filtered images (created if missing).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Image to filter; without it a 256×256 test pattern is generated.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Seed for the random vectors and kernels.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut randi = |lo: i64, hi: i64, n: usize| {
        Array1::from_shape_fn(n, |_| rng.random_range(lo..=hi)).into_dyn()
    };

    println!("1. Full convolution of two vectors (length m + n - 1):");
    let (v1, v2) = (randi(-10, 10, 5), randi(-10, 10, 5));
    let full = conv(&v1.view(), &v2.view(), Mode::Full)?;
    println!("   vec1 = {v1}\n   vec2 = {v2}\n   conv(vec1, vec2) = {full}");
    let (l1, l2) = (rng_len(args.seed, 1), rng_len(args.seed, 2));
    let (u, w) = (randi(-10, 10, l1), randi(-10, 10, l2));
    let commutes =
        conv(&u.view(), &w.view(), Mode::Full)? == conv(&w.view(), &u.view(), Mode::Full)?;
    println!("   conv(u, v) == conv(v, u) for lengths {l1} and {l2}: {commutes}");
    for mode in [Mode::Same, Mode::Valid] {
        println!(
            "   conv(vec1, vec2, '{mode}') = {}",
            conv(&v1.view(), &v2.view(), mode)?
        );
    }

    println!(
        "\n2. conv2 'valid' of an 8×8 integer matrix with k = A .* A' (A = randi([-5, 5], 3, 3)):"
    );
    let m = randi(0, 10, 64).into_shape_with_order(IxDyn(&[8, 8]))?;
    let k = parse_kernel(&format!("random-symmetric:3:{}", args.seed))?.mapv(|v| v as i64);
    let valid = conv(&m.view(), &k.view(), Mode::Valid)?;
    println!(
        "   k =\n{}\n   conv2(M, k, 'valid') is {:?}:\n{}",
        indent(&k),
        valid.shape(),
        indent(&valid)
    );

    println!("\n3. Image filtering: conv2(im2double(I), k, 'valid'), normalize, imshow-style PNG:");
    let image = match &args.image {
        Some(p) => read_image(p, ColorMode::Gray)?,
        None => test_pattern(256),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let input_png = args.out.join("input.png");
    write_png(&input_png, &image.view())?;
    println!(
        "   input ({}×{}): {}",
        image.shape()[0],
        image.shape()[1],
        input_png.display()
    );
    let random = format!("random-symmetric:3:{}", args.seed);
    for spec in [
        "sobel-x",
        "sobel-y",
        "laplacian",
        "gaussian:2",
        "sharpen",
        random.as_str(),
    ] {
        let kernel = parse_kernel(spec)?;
        let mut out = filter_image(&image, &kernel, Mode::Valid, Method::Auto)?;
        normalize(&mut out, Normalize::Zscore, NormScope::Columns);
        let name = spec.split(':').next().unwrap_or(spec);
        let path = args.out.join(format!("{name}.png"));
        write_png(&path, &out.view())?;
        println!("   {spec:<22} -> {}", path.display());
    }
    Ok(())
}

/// A length in 1..=10 derived from the seed (the article's randi([1, 10])).
fn rng_len(seed: u64, salt: u64) -> usize {
    ChaCha8Rng::seed_from_u64(seed ^ (salt << 32)).random_range(1..=10)
}

fn indent(a: &ArrayD<i64>) -> String {
    a.to_string()
        .lines()
        .map(|l| format!("   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A grey test image in [0, 1]: a shaded background, a bright disc, a dark
/// square and a band of diagonal stripes, so every kernel has edges to find.
fn test_pattern(n: usize) -> ArrayD<f64> {
    let f = n as f64;
    Array2::from_shape_fn((n, n), |(i, j)| {
        let (y, x) = (i as f64 / f, j as f64 / f);
        let mut v = 0.25 + 0.3 * x;
        if (x - 0.3).powi(2) + (y - 0.35).powi(2) < 0.04 {
            v = 0.9;
        }
        if (0.55..0.85).contains(&x) && (0.15..0.45).contains(&y) {
            v = 0.1;
        }
        if y > 0.65 && ((x + y) * 20.0).floor() as i64 % 2 == 0 {
            v = 0.75;
        }
        v
    })
    .into_dyn()
}
