//! `tracker-core`: the core node and its operator CLI.

use clap::Parser as _;
use tracker_core::cli::Cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracker_consumers::small_pages();
    let cli = Cli::parse();
    tracker_core::init_tracing();
    match tracker_core::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
