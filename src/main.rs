//! The `gconv` command-line tool: a thin layer over the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// Networks allocate and free activations of tens of megabytes per layer;
/// mimalloc keeps freed pages for reuse where the system allocator returns
/// them to the kernel and faults them in again on the next layer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and those of its causes that it does not
            // already spell out.
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.contains(&cause) {
                    if !msg.is_empty() {
                        msg += ": ";
                    }
                    msg += &cause;
                }
            }
            eprintln!("gconv: error: {msg}");
            ExitCode::from(2)
        }
    }
}
