//! `onmetal-csi-driver kms wrap|unwrap|check|rewrap`.
//!
//! `--secret-dir` holds files named like the Secret's keys (`token`, `ca.crt`, `tls.crt`,
//! `tls.key`), as Kubernetes mounts a Secret. `wrap` reads the DEK bytes on stdin and prints the
//! wrapped-key record; `unwrap` reads the record on stdin and writes the DEK bytes to stdout
//! (never to a terminal); `check` prints the round-trip latency; `rewrap` (Transit) reads a
//! record and prints it re-wrapped under the latest key version. Errors: one line on stderr and
//! an exit status by class (see [`super::kms_exit_code`]).
//!
//! A record must name the `--type`, `--endpoint`, `--key-id` and `--kms-namespace` (alias
//! `--namespace`) given here (else exit 65, integrity): the record lives in an unauthenticated
//! Secret and never decides where the credentials go. For recovery only, `unwrap` and `rewrap` accept `--endpoint-from-record`
//! instead of `--endpoint`, with a warning on stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use kms::{Dek, Error, ErrorKind, Kms, KmsConfig, KmsType, VolumeId, WrappedKey};
use zeroize::Zeroizing;

use super::args::{self, KmsKey, SecretMap};
use super::{EXIT_LOCAL, Runtime, kms_exit_code, runtime};

/// Where the KMS is and how to authenticate: the shared [`KmsKey`] flags, and `--endpoint`
/// or (recovery) `--endpoint-from-record`.
#[derive(Debug, Args)]
pub struct Target {
    /// Endpoint: http(s)://host:port (transit) or host:port (kmip).
    #[arg(
        long,
        value_name = "E",
        required_unless_present = "endpoint_from_record",
        conflicts_with = "endpoint_from_record"
    )]
    endpoint: Option<String>,
    /// Recovery only (unwrap, rewrap): take the endpoint from the wrapped-key record instead of
    /// --endpoint. The record is an unauthenticated Secret: whoever can edit it chooses where
    /// the credentials are sent. Prints a warning.
    #[arg(long)]
    endpoint_from_record: bool,
    #[command(flatten)]
    key: KmsKey,
}

impl Target {
    /// The shared KMS flags.
    pub fn key(&self) -> &KmsKey {
        &self.key
    }
}

/// The `kms` subcommands.
#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Read DEK bytes on stdin, print the wrapped-key record (JSON) on stdout.
    Wrap {
        /// The KMS.
        #[command(flatten)]
        target: Target,
        /// The volume the key belongs to.
        #[arg(long, value_name = "V")]
        volume_id: String,
    },
    /// Read a wrapped-key record on stdin, write the DEK bytes on stdout (not to a terminal).
    Unwrap {
        /// The KMS.
        #[command(flatten)]
        target: Target,
        /// The volume the key must belong to.
        #[arg(long, value_name = "V")]
        volume_id: String,
    },
    /// Wrap and unwrap a random key; print the round-trip latency.
    Check {
        /// The KMS.
        #[command(flatten)]
        target: Target,
    },
    /// Transit only: read a record on stdin, print it re-wrapped under the latest key version.
    Rewrap {
        /// The KMS.
        #[command(flatten)]
        target: Target,
    },
}

enum Failure {
    Kms(Error),
    Local(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Kms(e)
    }
}

/// Runs a `kms` subcommand on its own runtime; the exit status of the process.
pub fn run(cmd: KmsCommand) -> ExitCode {
    let name = match &cmd {
        KmsCommand::Wrap { .. } => "wrap",
        KmsCommand::Unwrap { .. } => "unwrap",
        KmsCommand::Check { .. } => "check",
        KmsCommand::Rewrap { .. } => "rewrap",
    };
    let rt = match runtime(Runtime::Command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onmetal-csi-driver kms {name}: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(execute(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Kms(e)) => {
            eprintln!("onmetal-csi-driver kms {name}: {}", e.display_chain());
            ExitCode::from(kms_exit_code(e.kind()))
        }
        Err(Failure::Local(msg)) => {
            eprintln!(
                "onmetal-csi-driver kms {name}: {}",
                msg.replace(['\n', '\r'], " ")
            );
            ExitCode::from(EXIT_LOCAL)
        }
    }
}

/// The credential files of `--secret-dir` (the one reader shared with the `volume` verbs; the
/// values are wiped when the map is dropped). A missing directory or non-text file is an invalid
/// configuration; other read failures are local.
fn read_secret_dir(dir: &Path) -> Result<SecretMap, Failure> {
    args::read_secret_dir(dir).map_err(|e| match e.kind() {
        crate::Kind::InvalidArgument => {
            Failure::Kms(Error::new(ErrorKind::InvalidConfig, e.message().to_owned()))
        }
        _ => Failure::Local(e.display_chain()),
    })
}

/// `--endpoint`; for commands without a record `--endpoint-from-record` is a usage error.
fn endpoint(t: &Target, command: &str) -> Result<String, Failure> {
    match (&t.endpoint, t.endpoint_from_record) {
        (Some(e), false) => Ok(e.clone()),
        _ => Err(Failure::Local(format!(
            "--endpoint-from-record applies to unwrap and rewrap only; {command} needs --endpoint"
        ))),
    }
}

/// The endpoint for a command that reads `record`: `--endpoint`, or the record's own with
/// `--endpoint-from-record`.
fn endpoint_for_record(t: &Target, record: &WrappedKey) -> String {
    match &t.endpoint {
        Some(e) if !t.endpoint_from_record => e.clone(),
        _ => record.endpoint().to_owned(),
    }
}

fn client(t: &Target, endpoint: &str) -> Result<Kms, Failure> {
    let (kms, _, config) = client_and_cert(t, endpoint)?;
    if t.endpoint_from_record {
        eprintln!(
            "WARNING: --endpoint-from-record: the credentials in {} are sent to {}, the endpoint \
             named by the wrapped-key record. The record is an unauthenticated Secret: use this \
             only for recovery, with a record you trust.",
            t.key.secret_dir.display(),
            config.endpoint()
        );
    }
    Ok(kms)
}

/// The client, for KMIP the client certificate's subject and validity, and the configuration.
fn client_and_cert(
    t: &Target,
    endpoint: &str,
) -> Result<(Kms, Option<kms::CertInfo>, KmsConfig), Failure> {
    let kind: KmsType = t.key.kind.parse()?;
    let secrets = read_secret_dir(&t.key.secret_dir)?;
    let config = t.key.config_with(kind, endpoint, &t.key.key_id, &secrets);
    // The map held the token or private key: wiped here, before anything else can fail.
    drop(secrets);
    let config = config?;
    Ok((
        Kms::new(&config)?,
        config.client_certificate().cloned(),
        config,
    ))
}

fn read_stdin(limit: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::with_capacity(limit + 1));
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    std::io::stdin()
        .lock()
        .take(limit64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure::Local(format!("cannot read {what} from stdin: {e}")))?;
    if buf.len() > limit {
        return Err(Failure::Local(format!(
            "{what} on stdin is longer than {limit} bytes"
        )));
    }
    Ok(buf)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Local(format!("cannot write to stdout: {e}")))
}

async fn execute(cmd: KmsCommand) -> Result<(), Failure> {
    match cmd {
        KmsCommand::Wrap { target, volume_id } => {
            let volume = VolumeId::new(volume_id)?;
            let kms = client(&target, &endpoint(&target, "wrap")?)?;
            let bytes = read_stdin(Dek::MAX_LEN, "the DEK")?;
            let dek = Dek::from_slice(&bytes)?;
            let record = kms.wrap(&dek, &volume).await?;
            write_stdout(format!("{}\n", record.to_json()).as_bytes())
        }
        KmsCommand::Unwrap { target, volume_id } => {
            let volume = VolumeId::new(volume_id)?;
            if std::io::stdout().is_terminal() {
                return Err(Failure::Local(
                    "refusing to write key bytes to a terminal: redirect stdout".to_owned(),
                ));
            }
            let text = read_stdin(kms::MAX_RECORD_LEN, "the wrapped-key record")?;
            let record = WrappedKey::from_json(text.trim_ascii())?;
            let kms = client(&target, &endpoint_for_record(&target, &record))?;
            let dek = kms.unwrap(&record, &volume).await?;
            write_stdout(dek.expose())
        }
        KmsCommand::Check { target } => {
            let (kms, cert, _) = client_and_cert(&target, &endpoint(&target, "check")?)?;
            let rtt = kms.check().await?;
            let mut out = format!(
                "ok: wrap+unwrap round trip {:.1} ms\n",
                rtt.as_secs_f64() * 1000.0
            );
            if let Kms::Transit(t) = &kms {
                // Informational: a token may lack lookup-self without being unusable.
                match t.token_info().await {
                    Ok(info) => out.push_str(&format!(
                        "token: policies {:?}, expires {}, renewable {}{}\n",
                        info.policies,
                        info.expire_time.as_deref().unwrap_or("never"),
                        info.renewable,
                        info.period
                            .map_or_else(String::new, |p| format!(", period {} s", p.as_secs()))
                    )),
                    Err(e) => {
                        out.push_str(&format!("token: lookup-self failed: {}\n", e.message()))
                    }
                }
            }
            if let Some(cert) = cert {
                out.push_str(&format!("client certificate: {cert}\n"));
            }
            write_stdout(out.as_bytes())
        }
        KmsCommand::Rewrap { target } => {
            let text = read_stdin(kms::MAX_RECORD_LEN, "the wrapped-key record")?;
            let record = WrappedKey::from_json(text.trim_ascii())?;
            let kms = client(&target, &endpoint_for_record(&target, &record))?;
            let new = kms.rewrap(&record).await?;
            write_stdout(format!("{}\n", new.to_json()).as_bytes())
        }
    }
}
