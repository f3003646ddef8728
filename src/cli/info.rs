//! `gconv info`: a model's layers, parameters and multiply-adds.

use anyhow::{Context, Result};
use gconv::models;
use gconv::nn::{Summary, summary};
use rand::SeedableRng;
use serde_json::json;

/// Describe a registered model: per-layer table (name, type, output shape,
/// parameters, multiply-adds) and totals.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A registered model name (see --list).
    #[arg(required_unless_present = "list")]
    model: Option<String>,
    /// Input height and width (default: the model's nominal size, 224×224
    /// for ImageNet models, 32×32 for CIFAR ones).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    input_size: Option<Vec<usize>>,
    /// Print one JSON object (params, macs, layers) instead of a table.
    #[arg(long)]
    json: bool,
    /// List the registered models and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.list {
        for name in models::names() {
            println!("{name}");
        }
        return Ok(());
    }
    let name = args.model.expect("clap requires a model without --list");
    let mut input = models::input_shape(&name)?;
    if let Some(hw) = &args.input_size {
        anyhow::ensure!(
            hw.iter().all(|&s| s > 0),
            "--input-size {} {}: sizes must be positive",
            hw[0],
            hw[1]
        );
        input[1..].copy_from_slice(hw);
    }
    let mut net = models::build(&name, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
    net.set_training(false);
    let s = summary(net.as_ref(), &input)
        .with_context(|| format!("{name} at {}×{}", input[1], input[2]))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&name, &s))?);
    } else {
        print_table(&name, &s);
    }
    Ok(())
}

fn to_json(name: &str, s: &Summary) -> serde_json::Value {
    let layers: Vec<_> = s
        .layers
        .iter()
        .map(|l| {
            json!({"name": l.name, "type": l.kind, "output_shape": l.output_shape,
                   "params": l.params, "macs": l.macs})
        })
        .collect();
    json!({"model": name, "input_shape": s.input_shape, "params": s.params,
           "macs": s.macs, "layers": layers})
}

fn print_table(name: &str, s: &Summary) {
    let shape = |v: &[usize]| {
        v.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    };
    let width = s
        .layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(5);
    println!("{name}, input {}", shape(&s.input_shape));
    println!(
        "{:<width$}  {:<18} {:>14} {:>10} {:>14}",
        "layer", "type", "output", "params", "mult-adds"
    );
    for l in &s.layers {
        println!(
            "{:<width$}  {:<18} {:>14} {:>10} {:>14}",
            l.name,
            l.kind,
            shape(&l.output_shape),
            l.params,
            l.macs
        );
    }
    println!(
        "total: {} parameters ({:.3} M), {} multiply-adds per image ({:.1} M)",
        s.params,
        s.params as f64 / 1e6,
        s.macs,
        s.macs as f64 / 1e6
    );
}
