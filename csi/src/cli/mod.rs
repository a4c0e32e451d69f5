//! The driver binary's command line: `serve` ([`serve`]), `client` ([`client`]), `kms`
//! ([`kms`]) and `volume` ([`volume`]), with the flags they share ([`args`]), one runtime
//! builder ([`runtime`]) and one table of exit statuses ([`exit_code`]). `main.rs` only parses
//! and calls [`run`].

pub mod args;
pub mod client;
pub mod kms;
pub mod serve;
pub mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, Kind, Result};

/// `onmetal-csi-driver`.
#[derive(Debug, Parser)]
#[command(
    name = "onmetal-csi-driver",
    version,
    about = "CSI driver csi.onmetal.de with LUKS2 volume encryption"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: Command,
}

/// Log format on stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (with the call's span: operation and volume id).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI identity, controller and/or node services on a Unix socket.
    Serve(serve::ServeArgs),
    /// A CSI client over the driver's socket (prints each call's result and latency).
    Client {
        /// The socket: unix:///csi/csi.sock.
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        #[command(subcommand)]
        #[allow(missing_docs)]
        command: client::ClientCommand,
    },
    /// Wrap, unwrap or check data encryption keys with a KMS (Transit or KMIP).
    #[command(subcommand)]
    Kms(kms::KmsCommand),
    /// Operator commands on encrypted volumes: list, rewrap, key, inspect, restore-header.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
}

/// Runs the parsed command line; the exit status of the process.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format, "info");
            match serve::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e.display_chain(), "serve failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client { endpoint, command } => {
            init_logging(cli.log_format, "warn");
            let res = runtime(Runtime::Server)
                .and_then(|rt| rt.block_on(client::run(&endpoint, command)));
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("onmetal-csi-driver client: {}", e.display_chain());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Kms(cmd) => {
            init_logging(cli.log_format, "warn");
            kms::run(cmd)
        }
        Command::Volume(cmd) => {
            init_logging(cli.log_format, "warn");
            volume::run(cmd)
        }
    }
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Which runtime a subcommand gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `serve` and `client`: two workers, up to 64 blocking threads (device I/O, KDFs, ioctls).
    Server,
    /// The `kms` and `volume` verbs: one thread.
    Command,
}

/// The async runtime of a subcommand.
pub fn runtime(kind: Runtime) -> Result<tokio::runtime::Runtime> {
    let mut builder = match kind {
        Runtime::Server => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2).max_blocking_threads(64);
            b
        }
        Runtime::Command => tokio::runtime::Builder::new_current_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

/// Local I/O and usage problems of the `kms` verbs (stdin, stdout, flags clap cannot check).
pub const EXIT_LOCAL: u8 = 64;

/// Exit status of an operator command by error class (sysexits values): unavailable 69,
/// permission denied 77, not found 66, refused because of what is on the device or in the
/// record (failed precondition, data loss, already exists) 65, invalid flags or configuration
/// 78, anything else 1; [`EXIT_LOCAL`] 64; clap usage errors 2.
pub fn exit_code(kind: Kind) -> u8 {
    match kind {
        Kind::Unavailable => 69,
        Kind::PermissionDenied => 77,
        Kind::NotFound => 66,
        Kind::FailedPrecondition | Kind::DataLoss | Kind::AlreadyExists => 65,
        Kind::InvalidArgument => 78,
        _ => 1,
    }
}

/// Exit status of a `kms` verb, by the class of the KMS's own answer (through [`exit_code`]):
/// unavailable 69, denied 77, an unknown key 66 (where a stage reports FAILED_PRECONDITION),
/// integrity 65, invalid configuration 78.
pub fn kms_exit_code(kind: ::kms::ErrorKind) -> u8 {
    use ::kms::ErrorKind as K;
    exit_code(match kind {
        K::Unavailable => Kind::Unavailable,
        K::Denied => Kind::PermissionDenied,
        K::NotFound => Kind::NotFound,
        K::Integrity => Kind::FailedPrecondition,
        _ => Kind::InvalidArgument,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers are a contract (README "Operator commands", kms/README.md).
    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(exit_code(Kind::FailedPrecondition), 65);
        assert_eq!(exit_code(Kind::DataLoss), 65);
        assert_eq!(exit_code(Kind::NotFound), 66);
        assert_eq!(exit_code(Kind::Unavailable), 69);
        assert_eq!(exit_code(Kind::PermissionDenied), 77);
        assert_eq!(exit_code(Kind::InvalidArgument), 78);
        assert_eq!(exit_code(Kind::Internal), 1);
        use ::kms::ErrorKind as K;
        assert_eq!(kms_exit_code(K::Unavailable), 69);
        assert_eq!(kms_exit_code(K::Denied), 77);
        assert_eq!(kms_exit_code(K::NotFound), 66);
        assert_eq!(kms_exit_code(K::Integrity), 65);
        assert_eq!(kms_exit_code(K::InvalidConfig), 78);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn kms_namespace_is_one_flag_with_the_old_alias() {
        for flag in ["--kms-namespace", "--namespace"] {
            let cli = Cli::try_parse_from([
                "onmetal-csi-driver",
                "kms",
                "check",
                "--type",
                "transit",
                "--endpoint",
                "https://127.0.0.1:8200",
                "--key-id",
                "k",
                "--secret-dir",
                "/tmp",
                flag,
                "ns1",
            ])
            .unwrap();
            let Command::Kms(kms::KmsCommand::Check { target }) = cli.command else {
                panic!("parsed as another command");
            };
            assert_eq!(target.key().kms_namespace.as_deref(), Some("ns1"), "{flag}");
        }
    }
}
