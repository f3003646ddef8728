//! Subcommands: argument definitions and the code that runs them.

mod bench;
mod conv;
mod demo;
mod filter;
mod info;
mod predict;
mod train;

use clap::{Parser, Subcommand};

/// gconv: convolution as signal processing and deep learning use it.
///
/// MATLAB-compatible conv/conv2/convn (modes full, same, valid; exact for
/// integers; direct and FFT algorithms) and image filtering.
#[derive(Parser, Debug)]
#[command(name = "gconv", version, about, long_about)]
pub struct Cli {
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Conv(conv::Args),
    Filter(filter::Args),
    Demo(demo::Args),
    Info(info::Args),
    Predict(predict::Args),
    Train(train::TrainArgs),
    Eval(train::EvalArgs),
    /// Time gconv's kernels: ms, GFLOP/s, % of machine peak and the ratio to
    /// the reference numbers measured on this machine kind.
    #[command(subcommand)]
    Bench(bench::Which),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    match cli.command {
        Command::Conv(a) => conv::run(a),
        Command::Filter(a) => filter::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Train(a) => train::run_train(a),
        Command::Eval(a) => train::run_eval(a),
        Command::Bench(w) => bench::run(w),
    }
}
