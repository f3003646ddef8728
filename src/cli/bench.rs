//! `gconv bench`: timings with GFLOP/s and ratios to the reference numbers
//! of ../shared/ANCHORS.md (same machine kind, 2 threads).

use anyhow::Result;
use clap::Subcommand;
use gconv::kernels::bench::{self as layer_bench, Buffers, Kernel, anchor_layers};
use gconv::random::uniform;
use gconv::signal::{Method, Mode, auto_method, conv_with, direct_macs};
use serde_json::json;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum Which {
    /// 2-D float64 convolution, 1024×1024, mode 'same', kernels 3, 11, 31
    /// and 101 square, against SciPy 1.17 and Octave 7.3.
    Signal(SignalArgs),
    /// The grouped, depthwise and pointwise float32 conv layers of
    /// ShuffleNet v1 and ResNeXt-29 (ANCHORS.md), forward and backward
    /// (input + weight gradients), against PyTorch 2.15.
    Layers(LayersArgs),
    /// Whole-model inference (eval mode, no autograd) of registered models:
    /// batch latency and throughput, against PyTorch 2.15 and ONNX Runtime
    /// 1.32 at batch 1 (ANCHORS.md).
    Models(ModelsArgs),
    /// Training steps (forward, backward, SGD-momentum update) on random
    /// data, against PyTorch 2.15's images/s (ANCHORS.md).
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Models to time (repeatable); default: shufflenet_g1_w1, g3_w1, g8_w1
    /// at batch 32 and resnext29_32x4d_cifar10 at batch 64.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Images per step (default: 64 for CIFAR models, 32 otherwise).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Input height and width (default: the model's nominal size).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    input_size: Option<Vec<usize>>,
    /// Timed steps per model (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Run the whole batch through the network at once, each operation
    /// spread over the threads, instead of as two halves on separate
    /// threads (the default, as `gconv train`; batch statistics per half).
    #[arg(long)]
    whole_batch: bool,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// Training throughput of ANCHORS.md, images/s: (model, batch, PyTorch 2.15).
const TRAIN_REFERENCE: [(&str, usize, f64); 4] = [
    ("shufflenet_g1_w1", 32, 71.6),
    ("shufflenet_g3_w1", 32, 28.2),
    ("shufflenet_g8_w1", 32, 23.6),
    ("resnext29_32x4d_cifar10", 64, 17.7),
];

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Models to time (repeatable); default: shufflenet_g1_w1, g3_w1,
    /// g8_w1, resnext29_32x4d_cifar10, resnext50_32x4d.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Timed runs per model (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 9)]
    repeat: usize,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Time the modules' own forward pass (every op separate, batch norm
    /// unfolded where a ReLU follows) instead of the inference plan.
    #[arg(long)]
    unfused: bool,
    /// After each model's line, print the plan's steps with the median
    /// time of each (ms) over the timed runs, and the share of the total.
    #[arg(long, conflicts_with_all = ["unfused", "json"])]
    profile: bool,
}

/// Batch-1 inference times of ANCHORS.md, ms: (model, PyTorch, ONNX Runtime).
const MODEL_REFERENCE: [(&str, f64, Option<f64>); 10] = [
    ("shufflenet_g1_w1", 8.36, Some(2.22)),
    ("shufflenet_g2_w1", 10.5, None),
    ("shufflenet_g3_w1", 11.4, Some(2.56)),
    ("shufflenet_g4_w1", 11.7, None),
    ("shufflenet_g8_w1", 13.4, Some(2.69)),
    ("shufflenet_g3_wd2", 7.58, None),
    ("shufflenet_g1_wd4", 4.23, None),
    ("resnext29_32x4d_cifar10", 11.4, Some(6.36)),
    ("resnext29_16x64d_cifar10", 187.0, None),
    ("resnext50_32x4d", 48.0, Some(33.1)),
];

#[derive(clap::Args, Debug)]
pub struct LayersArgs {
    /// Timed runs per case (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 9)]
    repeat: usize,
    /// Only layers whose id contains this text (e.g. `dw`, `rx29`).
    #[arg(long)]
    filter: Option<String>,
    /// The conv kernel: the one `conv2d` picks, or one forced.
    #[arg(long, default_value = "auto", value_parser = ["auto", "gemm", "direct"])]
    kernel: String,
    /// Report the fastest run instead of the median (steadier on a busy
    /// machine).
    #[arg(long)]
    min: bool,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SignalArgs {
    /// Timed runs per case (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Force a method instead of the automatic choice.
    #[arg(long, default_value = "auto", value_parser = ["auto", "direct", "fft"])]
    method: String,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// The machine's measured dense SGEMM peak (2 threads, MKL); float64 peak is half.
const PEAK_F32_GFLOPS: f64 = 325.0;

/// (kernel size, best SciPy ms and which, Octave conv2 ms), from ANCHORS.md.
const SIGNAL_REFERENCE: [(usize, f64, &str, Option<f64>); 4] = [
    (3, 20.4, "convolve2d", Some(6.6)),
    (11, 27.8, "convolve(auto)", Some(24.4)),
    (31, 28.5, "fftconvolve", Some(164.0)),
    (101, 25.7, "fftconvolve", None),
];

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Signal(args) => signal(args),
        Which::Layers(args) => layers(args),
        Which::Models(args) => models(args),
        Which::Train(args) => train_steps(args),
    }
}

/// Median wall time of `f` in milliseconds over `repeat` runs after a warm-up.
fn median_ms(repeat: usize, f: impl FnMut()) -> f64 {
    let times = times_ms(repeat, f);
    times[times.len() / 2]
}

/// Sorted wall times of `f` in milliseconds over `repeat` runs after a warm-up.
fn times_ms(repeat: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    let mut times: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// [`times_ms`] of a step that can fail: the first error ends the timing.
fn try_times_ms(repeat: usize, mut f: impl FnMut() -> gconv::Result<()>) -> Result<Vec<f64>> {
    let mut error = None;
    let times = times_ms(repeat, || {
        if error.is_none()
            && let Err(e) = f()
        {
            error = Some(e);
        }
    });
    match error {
        Some(e) => Err(e.into()),
        None => Ok(times),
    }
}

/// Profiles `plan` `repeat` times and prints each step's median time, its
/// share of the summed medians and what it computes.
fn print_profile(plan: &mut gconv::infer::Plan, x: &[f32], repeat: usize) -> Result<()> {
    let runs = (0..repeat.max(1))
        .map(|_| plan.profile(x))
        .collect::<gconv::Result<Vec<_>>>()?;
    let medians: Vec<f64> = (0..runs[0].len())
        .map(|i| {
            let mut t: Vec<f64> = runs.iter().map(|r| r[i].1).collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let total: f64 = medians.iter().sum();
    for (i, ((what, _), ms)) in runs[0].iter().zip(&medians).enumerate() {
        println!(
            "  {i:>3} {ms:>8.3} ms {:>5.1} %  {what}",
            100.0 * ms / total
        );
    }
    println!("      {total:>8.3} ms summed step medians");
    Ok(())
}

fn signal(args: SignalArgs) -> Result<()> {
    let forced: Method = args.method.parse()?;
    let shape = [1024usize, 1024];
    let a = uniform(&shape, 1);
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "conv2(A, K, 'same'), A 1024×1024 float64, {} threads, median of {}",
            rayon::current_num_threads(),
            args.repeat
        );
        println!(
            "{:>9} {:>7} {:>9} {:>9} {:>7} {:>11} {:>18} {:>15}",
            "kernel",
            "method",
            "ms",
            "GFLOP/s",
            "%peak",
            "scipy ms",
            "× vs best scipy",
            "× vs octave"
        );
    }
    for (k, scipy_ms, scipy_name, octave_ms) in SIGNAL_REFERENCE {
        let b = uniform(&[k, k], k as u64);
        let method = match forced {
            Method::Auto => auto_method(&shape, &[k, k], Mode::Same),
            m => m,
        };
        let ms = median_ms(args.repeat, || {
            conv_with(&a.view(), &b.view(), Mode::Same, method).expect("valid shapes");
        });
        // Work counted as the direct method's multiply-adds, 2 flops each.
        let gflops = 2.0 * direct_macs(&shape, &[k, k], Mode::Same) / (ms * 1e6);
        // Against the float64 peak only where the work is really done (direct).
        let peak = (method == Method::Direct).then(|| 100.0 * gflops / (PEAK_F32_GFLOPS / 2.0));
        let name = format!("{k}x{k}");
        let method_name = format!("{method:?}").to_lowercase();
        if !args.json {
            let octave = octave_ms.map_or("—".to_string(), |o| format!("{:.1}×", o / ms));
            let peak = peak.map_or("—".to_string(), |p| format!("{p:.1}%"));
            println!(
                "{name:>9} {method_name:>7} {ms:>9.2} {gflops:>9.1} {peak:>7} {scipy_ms:>11.1} {:>18} {octave:>15}",
                format!("{:.1}× ({scipy_name})", scipy_ms / ms)
            );
        }
        rows.push(json!({
            "case": format!("conv2_same_1024_f64_{name}"),
            "kernel": name,
            "method": method_name,
            "ms": ms,
            "gflops": gflops,
            "percent_of_f64_peak": peak,
            "scipy_best_ms": scipy_ms,
            "speedup_vs_scipy": scipy_ms / ms,
            "octave_ms": octave_ms,
            "speedup_vs_octave": octave_ms.map(|o| o / ms),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "GFLOP/s counts the direct method's multiply-adds (for FFT rows: the direct-equivalent rate); %peak (direct only) is of {} GFLOP/s, float64 being half the 325 GFLOP/s SGEMM peak.",
            PEAK_F32_GFLOPS / 2.0
        );
    }
    Ok(())
}

/// Memory bandwidth of the machine (streaming scale, 2 threads), GB/s.
const BANDWIDTH_GBS: f64 = 21.0;

fn layers(args: LayersArgs) -> Result<()> {
    let kernel = match args.kernel.as_str() {
        "gemm" => Kernel::Gemm,
        "direct" => Kernel::Direct,
        _ => Kernel::Auto,
    };
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "conv2d layers of ANCHORS.md, float32 NCHW, {} threads, {} of {}, {} kernel; backward = input + weight gradients",
            rayon::current_num_threads(),
            if args.min { "fastest" } else { "median" },
            args.repeat,
            args.kernel
        );
        println!(
            "{:<15} {:<8} {:>8} {:>8} {:>6} {:>7} {:>10} {:>9}",
            "layer", "pass", "ms", "GFLOP/s", "%peak", "GB/s", "torch ms", "× torch"
        );
    }
    let wanted = anchor_layers().into_iter().filter(|l| {
        args.filter
            .as_ref()
            .is_none_or(|f| l.id.contains(f.as_str()))
    });
    for layer in wanted {
        let s = layer.shape;
        let mut bufs = Buffers::new(&s);
        for backward in [false, true] {
            let times = try_times_ms(args.repeat, || {
                if backward {
                    layer_bench::backward(&s, &mut bufs, kernel)
                } else {
                    layer_bench::forward(&s, &mut bufs, kernel)
                }
            })?;
            let ms = if args.min {
                times[0]
            } else {
                times[times.len() / 2]
            };
            let gflops = layer.flops(backward) / (ms * 1e6);
            let gbs = layer.min_bytes(backward) / (ms * 1e6);
            let torch = if backward {
                layer.pytorch_backward_ms
            } else {
                layer.pytorch_forward_ms
            };
            let pass = if backward { "backward" } else { "forward" };
            if !args.json {
                println!(
                    "{:<15} {:<8} {ms:>8.2} {gflops:>8.1} {:>5.1}% {gbs:>7.1} {torch:>10.2} {:>8.2}×",
                    layer.id,
                    pass,
                    100.0 * gflops / PEAK_F32_GFLOPS,
                    torch / ms
                );
            }
            rows.push(json!({
                "layer": layer.id,
                "pass": pass,
                "ms": ms,
                "gflops": gflops,
                "percent_of_peak": 100.0 * gflops / PEAK_F32_GFLOPS,
                "gbytes_per_s": gbs,
                "percent_of_bandwidth": 100.0 * gbs / BANDWIDTH_GBS,
                "depthwise": layer.is_depthwise(),
                "pytorch_ms": torch,
                "speedup_vs_pytorch": torch / ms,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "%peak is of the {PEAK_F32_GFLOPS} GFLOP/s SGEMM peak; GB/s counts the least traffic a pass needs (x and y forward; x, dy and dx backward) against ~{BANDWIDTH_GBS} GB/s; torch ms: PyTorch 2.15 in ANCHORS.md (rerun tools/pytorch_layers.py to compare in the same session)."
        );
    }
    Ok(())
}

fn models(args: ModelsArgs) -> Result<()> {
    use rand::SeedableRng;
    let names = if args.models.is_empty() {
        [
            "shufflenet_g1_w1",
            "shufflenet_g3_w1",
            "shufflenet_g8_w1",
            "resnext29_32x4d_cifar10",
            "resnext50_32x4d",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args.models.clone()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "inference ({}), float32, eval mode, {} threads, batch {}, median of {}",
            if args.unfused {
                "unfused modules"
            } else {
                "plan"
            },
            rayon::current_num_threads(),
            args.batch_size,
            args.repeat
        );
        println!(
            "{:<26} {:>9} {:>10} {:>10} {:>9} {:>10} {:>9}",
            "model", "ms", "images/s", "torch ms", "× torch", "ORT ms", "× ORT"
        );
    }
    for name in &names {
        let mut net = gconv::models::build(name, &mut rng)?;
        net.set_training(false);
        let size = if name.contains("cifar") { 32 } else { 224 };
        let shape = [args.batch_size, 3, size, size];
        let x = gconv::Tensor::randn(&shape, &mut rng);
        let times = if args.unfused {
            try_times_ms(args.repeat, || gconv::no_grad(|| net.forward(&x)).map(drop))?
        } else {
            let mut plan = gconv::infer::Plan::new(shape, |b, v| net.lower(b, v))?;
            let x = x.to_vec();
            let times = try_times_ms(args.repeat, || plan.run(&x).map(drop))?;
            if args.profile {
                print_profile(&mut plan, &x, args.repeat)?;
            }
            times
        };
        let ms = times[times.len() / 2];
        let reference = MODEL_REFERENCE
            .iter()
            .find(|r| r.0 == name.as_str())
            .filter(|_| args.batch_size == 1);
        let torch = reference.map(|r| r.1);
        let ort = reference.and_then(|r| r.2);
        let images_per_s = args.batch_size as f64 / (ms / 1e3);
        if !args.json {
            let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
            let ratio = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.2}×", v / ms));
            println!(
                "{name:<26} {ms:>9.2} {images_per_s:>10.1} {:>10} {:>9} {:>10} {:>9}",
                show(torch),
                ratio(torch),
                show(ort),
                ratio(ort)
            );
        }
        rows.push(json!({
            "model": name,
            "batch_size": args.batch_size,
            "input_size": size,
            "ms": ms,
            "images_per_s": images_per_s,
            "plan": !args.unfused,
            "pytorch_ms": torch,
            "onnxruntime_ms": ort,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

fn train_steps(args: TrainArgs) -> Result<()> {
    use gconv::nn;
    use gconv::optim::{Sgd, SgdConfig};
    use rand::{Rng, SeedableRng};
    anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let names = if args.models.is_empty() {
        TRAIN_REFERENCE.iter().map(|r| r.0.to_string()).collect()
    } else {
        args.models.clone()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "training step (forward, backward, SGD momentum), float32, {} threads, {}, median of {}",
            rayon::current_num_threads(),
            if args.whole_batch {
                "whole batch"
            } else {
                "batch split in two halves across the threads"
            },
            args.repeat
        );
        println!(
            "{:<26} {:>6} {:>9} {:>10} {:>10} {:>9}",
            "model", "batch", "ms", "images/s", "torch i/s", "× torch"
        );
    }
    for name in &names {
        let [c, mut h, mut w] = gconv::models::input_shape(name)?;
        if let Some(hw) = &args.input_size {
            anyhow::ensure!(hw.iter().all(|&s| s > 0), "--input-size must be positive");
            (h, w) = (hw[0], hw[1]);
        }
        let batch = args
            .batch_size
            .unwrap_or(if name.contains("cifar") { 64 } else { 32 });
        let min_batch = if args.whole_batch { 2 } else { 4 };
        anyhow::ensure!(
            batch >= min_batch,
            "--batch-size must be at least {min_batch} (batch norm{})",
            if args.whole_batch {
                ""
            } else {
                " on each half"
            }
        );
        let net = gconv::models::build(name, &mut rng)?;
        let mut opt = Sgd::new(nn::parameters(net.as_ref()), SgdConfig::default())?;
        // The batch as parts run side by side: one, or two halves.
        let parts = if args.whole_batch {
            vec![batch]
        } else {
            vec![batch / 2, batch - batch / 2]
        };
        let parts: Vec<(gconv::Tensor, Vec<usize>)> = parts
            .into_iter()
            .map(|n| {
                let x = gconv::Tensor::randn(&[n, c, h, w], &mut rng);
                (x, (0..n).map(|_| rng.random_range(0..10)).collect())
            })
            .collect();
        // Adds the gradients of one part, its loss weighted by its share.
        let part = |(x, labels): &(gconv::Tensor, Vec<usize>)| -> gconv::Result<()> {
            let loss = gconv::ops::cross_entropy(&net.forward(x)?, labels, 0.0)?;
            loss.backward_with(vec![labels.len() as f32 / batch as f32])
        };
        let times = try_times_ms(args.repeat, || {
            opt.zero_grad();
            match &parts[..] {
                [a, b] => {
                    let (ra, rb) =
                        rayon::join(|| part(a), || nn::without_running_stats(|| part(b)));
                    ra.and(rb)?;
                }
                whole => whole.iter().try_for_each(part)?,
            }
            opt.step(0.01);
            Ok(())
        })?;
        let ms = times[times.len() / 2];
        let images_per_s = batch as f64 / (ms / 1e3);
        let torch = TRAIN_REFERENCE
            .iter()
            .find(|r| r.0 == name.as_str() && r.1 == batch && args.input_size.is_none())
            .map(|r| r.2);
        if !args.json {
            let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
            let ratio = torch.map_or("—".to_string(), |t| format!("{:.2}×", images_per_s / t));
            println!(
                "{name:<26} {batch:>6} {ms:>9.1} {images_per_s:>10.1} {:>10} {ratio:>9}",
                show(torch)
            );
        }
        rows.push(json!({
            "model": name,
            "batch_size": batch,
            "input_size": [h, w],
            "ms": ms,
            "images_per_s": images_per_s,
            "split_batch": !args.whole_batch,
            "pytorch_images_per_s": torch,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
