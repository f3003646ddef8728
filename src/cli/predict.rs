//! `gconv predict`: a registered model with saved weights, on arrays or
//! images.

use anyhow::{Context, Result, bail, ensure};
use gconv::data::imagenet_eval;
use gconv::infer::Plan;
use gconv::io::{read_npy, write_npy};
use gconv::nn::{self, Module, Strictness};
use gconv::signal::DynArray;
use gconv::{Tensor, models, no_grad, ops};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Run a model on NCHW arrays (.npy in, logits .npy out) or classify
/// images (torchvision's ImageNet evaluation preprocessing, top-K).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A registered model name (`gconv info --list`).
    model: String,
    /// Weights: a safetensors file with the pytorchcv names (from gconv,
    /// or `safetensors.torch.save_file(model.state_dict(), path)`).
    #[arg(long)]
    weights: PathBuf,
    /// Load weights even when names are missing or unexpected (reported
    /// on stderr); shapes must still match.
    #[arg(long)]
    lenient: bool,
    /// Input images, NCHW float32 (or float64) .npy.
    #[arg(long, requires = "output", conflicts_with = "image")]
    input: Option<PathBuf>,
    /// Where to write the logits, [N, classes] float32 .npy.
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Image files to classify (repeatable).
    #[arg(long, required_unless_present = "input")]
    image: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line, in class order.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Images per forward pass (--input).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let mut net = models::build(&args.model, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
    let strictness = if args.lenient {
        Strictness::Lenient
    } else {
        Strictness::Strict
    };
    let report = nn::load_safetensors(net.as_ref(), &args.weights, strictness)?;
    for name in &report.missing {
        eprintln!(
            "gconv: warning: {} has no {name}; it keeps its initial value",
            args.weights.display()
        );
    }
    for name in &report.unexpected {
        eprintln!(
            "gconv: warning: {}: {name} is not a parameter of {}, ignored",
            args.weights.display(),
            args.model
        );
    }
    net.set_training(false);
    let input = models::input_shape(&args.model)?;
    match (&args.input, &args.output) {
        (Some(input_path), Some(output)) => {
            let x = read_images(input_path, input[0])?;
            let logits = forward_batches(net.as_ref(), &x, args.batch_size)?;
            let array = ArrayD::from_shape_vec(IxDyn(logits.shape()), logits.to_vec())?;
            write_npy(output, &DynArray::F32(array))?;
            Ok(())
        }
        _ => classify(&args, net.as_ref(), input),
    }
}

/// An NCHW array with `channels` channels and finite values, as a tensor.
fn read_images(path: &Path, channels: usize) -> Result<Tensor> {
    let (shape, values): (Vec<usize>, Vec<f32>) = match read_npy(path)? {
        DynArray::F32(a) => (a.shape().to_vec(), a.iter().copied().collect()),
        DynArray::F64(a) => (a.shape().to_vec(), a.iter().map(|&v| v as f32).collect()),
        other => bail!(
            "{}: holds {}; the model needs float32 images",
            path.display(),
            other.dtype().name()
        ),
    };
    ensure!(
        shape.len() == 4 && shape[1] == channels && shape.iter().all(|&d| d > 0),
        "{}: shape {shape:?}; the model needs [N, {channels}, H, W]",
        path.display()
    );
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: value {} at index {i} is not finite",
            path.display(),
            values[i]
        );
    }
    Ok(Tensor::from_vec(values, &shape)?)
}

/// Logits `[N, classes]` for images `[N, C, H, W]`, `batch` images at a time.
/// The logits of `x` (`[N, C, H, W]`) in runs of `batch` images, through
/// an inference plan (one per run length).
fn forward_batches(net: &dyn Module, x: &Tensor, batch: usize) -> Result<Tensor> {
    let &[images, c, h, w] = x.shape() else {
        bail!("the input must be [N, C, H, W], not {:?}", x.shape());
    };
    let per_image = c * h * w;
    let data = x.data();
    let mut logits = Vec::new();
    let mut plan: Option<Plan> = None;
    for (i, chunk) in data.chunks(batch * per_image).enumerate() {
        let n = chunk.len() / per_image;
        let context = || format!("images {}..{}", i * batch, i * batch + n);
        let plan = match &mut plan {
            Some(p) if p.output_shape()[0] == n => p,
            _ => {
                plan.insert(Plan::new([n, c, h, w], |b, v| net.lower(b, v)).with_context(context)?)
            }
        };
        logits.extend_from_slice(plan.run(chunk).with_context(context)?);
    }
    let classes = logits.len() / images.max(1);
    Ok(Tensor::from_vec(logits, &[images, classes])?)
}

fn classify(args: &Args, net: &dyn Module, input: [usize; 3]) -> Result<()> {
    ensure!(
        input[0] == 3,
        "--image needs a model with RGB input; {} takes {} channels (use --input)",
        args.model,
        input[0]
    );
    ensure!(args.top >= 1, "--top must be at least 1");
    let labels = match &args.labels {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            Some(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    let mut plan = Plan::new([1, input[0], input[1], input[2]], |b, v| net.lower(b, v))?;
    for path in &args.image {
        let x = imagenet_eval(path, [input[1], input[2]])?;
        let logits = plan.run(&x).with_context(|| path.display().to_string())?;
        let logits = Tensor::from_vec(logits.to_vec(), &[1, logits.len()])?;
        let probs = no_grad(|| ops::softmax(&logits))?.to_vec();
        if let Some(labels) = &labels {
            ensure!(
                labels.len() == probs.len(),
                "{}: {} labels for {} classes",
                args.labels.as_ref().unwrap().display(),
                labels.len(),
                probs.len()
            );
        }
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        println!("{}", path.display());
        for &k in order.iter().take(args.top) {
            let name = labels
                .as_ref()
                .map_or(String::new(), |l| format!("  {}", l[k]));
            println!("  {:>6.2}%  class {k}{name}", 100.0 * probs[k]);
        }
    }
    Ok(())
}
