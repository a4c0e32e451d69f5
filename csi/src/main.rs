//! `onmetal-csi-driver`: the CSI driver binary of `csi.onmetal.de`.
//!
//! Subcommands: `kms` (wrap, unwrap, check and rewrap data keys with the configured KMS, for
//! operators and tests). The CSI gRPC services will be further subcommands (e.g. `serve`).
#![forbid(unsafe_code)]

mod kms_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "onmetal-csi-driver",
    version,
    about = "CSI driver csi.onmetal.de with LUKS2 volume encryption"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wrap, unwrap or check data encryption keys with a KMS (Transit or KMIP).
    #[command(subcommand)]
    Kms(kms_cmd::KmsCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Kms(cmd) => kms_cmd::run(cmd),
    }
}
