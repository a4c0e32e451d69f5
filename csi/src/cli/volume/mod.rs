//! `onmetal-csi-driver volume ...`: operator commands on the driver's encrypted volumes (never
//! run by the driver itself).
//!
//! - `list --key-store kube|dir:DIR` ([`list`]): every wrapped-key record, without keys.
//! - `rewrap --key-store kube|dir:DIR --type T --endpoint E --key-id K --secret-dir D
//!   (--volume-id V | --all) [--to-key-id NEW] [--dry-run]` ([`rewrap`]): KEK rotation across
//!   volumes.
//! - `key` ([`key`]): unwraps a volume's DEK into a new 0600 file, so that stock
//!   `cryptsetup open --key-file FILE DEVICE NAME` opens the device by hand (the escape hatch).
//! - `inspect` ([`inspect`]): the LUKS2 header and the record in its token, never any key.
//! - `release --volume-id V` ([`release`]): an RBD volume held by a dead node: blocklist the
//!   holder, then break its lock.
//! - `restore-header` ([`restore_header`]): rebuilds a header whose two copies are destroyed, from the
//!   record, after checking that the data decrypts to a filesystem under the key.
//!
//! The KMS settings come from flags (`--type`, `--endpoint`, `--key-id`, `--kms-namespace`, as in
//! the volume's StorageClass) and the credentials from files in `--secret-dir` (`token`,
//! `ca.crt`, `tls.crt`, `tls.key`, as Kubernetes mounts a Secret). A record must name exactly
//! these settings: it never decides where the credentials are sent. Each verb is one variant of
//! [`VolumeCommand`] with its own argument struct and module. Errors: one line on stderr and an
//! exit status by class ([`super::exit_code`]).

pub mod inspect;
pub mod key;
pub mod list;
pub mod release;
pub mod restore_header;
pub mod rewrap;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kms::Dek;

use super::args::{KmsArgs, StoreArgs};
use super::{Runtime, exit_code, runtime};
use crate::error::{Error, Result};
use crate::keystore::Stored;
use crate::volume_id::VolumeId;

/// The `volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List every encrypted volume's wrapped-key record (volume id, KMS type, endpoint, key id
    /// and version, state, created), without keys.
    List(list::ListArgs),
    /// Move wrapped keys to a new KEK version (Transit) or a new KEK (--to-key-id), verifying
    /// each new record by an unwrap before it replaces the old one.
    Rewrap(rewrap::RewrapArgs),
    /// Unwrap a volume's data key into a new 0600 file (for `cryptsetup open --key-file`).
    Key(key::KeyArgs),
    /// Show a device's LUKS2 header and the wrapped-key record in its token (no key material).
    Inspect(inspect::InspectArgs),
    /// Rebuild the LUKS2 header of a device whose both header copies are destroyed.
    RestoreHeader(restore_header::RestoreArgs),
    /// Release an RBD volume a dead node still holds: blocklist the holder, then break its lock.
    Release(release::ReleaseArgs),
}

/// A volume, where its record is, and how to reach its KMS.
#[derive(Debug, Args)]
pub struct VolumeKms {
    /// The volume ID.
    #[arg(long, value_name = "V")]
    volume_id: String,
    /// Where the wrapped-key records live.
    #[command(flatten)]
    store: StoreArgs,
    /// How to reach the volume's KMS.
    #[command(flatten)]
    kms: KmsArgs,
}

impl VolumeKms {
    fn volume(&self) -> Result<VolumeId> {
        VolumeId::parse(&self.volume_id).map_err(|e| Error::invalid(format!("--volume-id: {e}")))
    }

    /// The volume's stored entry (a missing one is NOT_FOUND).
    async fn entry(&self, volume: &VolumeId) -> Result<Stored> {
        let store = self.store.open().await?;
        store
            .get(volume)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "the key store {} has no wrapped-key record {} for volume {volume}",
                    self.store.key_store,
                    volume.record_name()
                ))
            })
    }

    /// The record, checked against the flags, and the DEK it unwraps to.
    async fn unwrap(&self, volume: &VolumeId, stored: &Stored) -> Result<Dek> {
        let config = self.kms.config()?;
        crate::crypt::keys::unwrap(&config, &stored.entry.record, volume).await
    }
}

/// Runs a `volume` subcommand on its own runtime; the exit status of the process.
pub fn run(cmd: VolumeCommand) -> ExitCode {
    let name = match &cmd {
        VolumeCommand::List(_) => "list",
        VolumeCommand::Rewrap(_) => "rewrap",
        VolumeCommand::Key(_) => "key",
        VolumeCommand::Inspect(_) => "inspect",
        VolumeCommand::RestoreHeader(_) => "restore-header",
        VolumeCommand::Release(_) => "release",
    };
    let rt = match runtime(Runtime::Command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onmetal-csi-driver volume {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let res = rt.block_on(async {
        match cmd {
            VolumeCommand::List(args) => list::run(&args, &mut stdout).await.map(|()| true),
            VolumeCommand::Rewrap(args) => {
                rewrap::run(&args, &mut stdout).await.map(|t| t.failed == 0)
            }
            VolumeCommand::Key(a) => key::run(a).await.map(|()| true),
            VolumeCommand::Inspect(a) => inspect::run(a).map(|()| true),
            VolumeCommand::RestoreHeader(a) => restore_header::run(a).await.map(|()| true),
            VolumeCommand::Release(a) => release::run(&a, &mut stdout).await.map(|()| true),
        }
    });
    match res {
        Ok(true) => ExitCode::SUCCESS,
        // Some volumes failed (rewrap): each was reported with its cause.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!(
                "onmetal-csi-driver volume {name}: {}",
                e.display_chain().replace(['\n', '\r'], " ")
            );
            ExitCode::from(exit_code(e.kind()))
        }
    }
}
