//! `onmetal-csi-driver`: the CSI driver binary of `csi.onmetal.de` (the command line is
//! [`csi::cli`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    csi::cli::run(csi::cli::Cli::parse())
}
