//! `onmetal-csi-driver`: the CSI driver binary of `csi.onmetal.de`.
//!
//! Subcommands: `serve` (the CSI gRPC services), `client` (a small CSI client over the socket),
//! `volume` (operator commands on encrypted volumes: `list`, `rewrap`, `key`, `inspect`,
//! `restore-header`) and `kms` (wrap,
//! unwrap, check and rewrap data keys with the configured KMS).
#![forbid(unsafe_code)]

mod kms_cmd;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use csi::driver::{Driver, Mode};

#[derive(Parser)]
#[command(
    name = "onmetal-csi-driver",
    version,
    about = "CSI driver csi.onmetal.de with LUKS2 volume encryption"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CSI identity, controller and/or node services on a Unix socket.
    Serve {
        /// The socket: unix:///csi/csi.sock.
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        /// This node's ID (NodeGetInfo).
        #[arg(long)]
        node_id: String,
        /// Which services to serve.
        #[arg(long, value_enum, default_value_t = Mode::All)]
        mode: Mode,
        /// The CSI driver name.
        #[arg(long, default_value = "csi.onmetal.de")]
        driver_name: String,
        /// Where volumes come from: local:DIR (sparse files attached as loop devices).
        #[arg(long, default_value = "local:/var/lib/onmetal-csi/volumes")]
        backend: String,
        /// Where wrapped keys live: kube (one Secret per volume in --key-namespace) or dir:DIR
        /// (one 0600 file per volume).
        #[arg(
            long,
            value_name = "kube|dir:DIR",
            default_value = "dir:/var/lib/onmetal-csi/keys"
        )]
        key_store: String,
        /// Namespace of the wrapped-key Secrets (--key-store kube).
        #[arg(long, value_name = "NS", default_value = csi::keystore::kube::DEFAULT_NAMESPACE)]
        key_namespace: String,
        /// Serve Prometheus metrics on HOST:PORT (/metrics).
        #[arg(long)]
        metrics_address: Option<SocketAddr>,
    },
    /// A CSI client over the driver's socket (prints each call's result and latency).
    Client {
        /// The socket: unix:///csi/csi.sock.
        #[arg(long, default_value = "unix:///csi/csi.sock")]
        endpoint: String,
        #[command(subcommand)]
        command: csi::client::ClientCommand,
    },
    /// Wrap, unwrap or check data encryption keys with a KMS (Transit or KMIP).
    #[command(subcommand)]
    Kms(kms_cmd::KmsCommand),
    /// Operator commands on encrypted volumes: list, rewrap, key, inspect, restore-header.
    #[command(subcommand)]
    Volume(csi::volume_cmd::VolumeCommand),
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            endpoint,
            node_id,
            mode,
            driver_name,
            backend,
            key_store,
            key_namespace,
            metrics_address,
        } => {
            init_logging(cli.log_format, "info");
            let res = (|| -> Result<(), csi::Error> {
                let backend: Arc<dyn csi::backend::Backend> =
                    Arc::from(csi::backend::open(&backend)?);
                let rt = runtime().map_err(|e| csi::Error::internal(e.to_string()))?;
                let store = rt.block_on(csi::keystore::open(
                    &key_store,
                    &key_namespace,
                    &driver_name,
                ))?;
                let driver = Driver::new(
                    driver_name,
                    node_id,
                    mode,
                    backend,
                    store,
                    Arc::new(csi::mount::SystemMounter),
                );
                rt.block_on(csi::server::serve(driver, &endpoint, metrics_address))
            })();
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e.display_chain(), "serve failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client { endpoint, command } => {
            init_logging(cli.log_format, "warn");
            let res = runtime()
                .map_err(|e| csi::Error::internal(e.to_string()))
                .and_then(|rt| rt.block_on(csi::client::run(&endpoint, command)));
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
            kms_cmd::run(cmd)
        }
        Command::Volume(cmd) => {
            init_logging(cli.log_format, "warn");
            csi::volume_cmd::run(cmd)
        }
    }
}
