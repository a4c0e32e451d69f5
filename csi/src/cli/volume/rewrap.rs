//! `volume rewrap`: KEK rotation across volumes.
//!
//! - Transit without `--to-key-id`: each matching record moves to the KEK's latest version with
//!   `transit/rewrap` (the KMS re-encrypts; the DEK is not needed for the move). A record
//!   already at the latest version is left alone.
//! - KMIP, or Transit with `--to-key-id NEW`: the DEK is unwrapped with the old KEK and wrapped
//!   with NEW in memory (the `Dek` type zeroizes it on drop). A record already under NEW is left
//!   alone.
//!
//! A new record replaces the old one only after it was verified: it is unwrapped and the DEK
//! compared (in constant time) with the old record's. The replacement carries the stored
//! revision as precondition, so a record changed meanwhile is reported, never overwritten. Each
//! volume is independent: the run prints one line per volume and the totals, returns the
//! totals (the command exits non-zero if any volume failed), and running it again resumes —
//! done volumes are reported as current. Records naming another KMS or KEK are skipped with
//! `--all` and an error with `--volume-id`; a record that cannot be read counts as failed, and
//! the others are processed.
//!
//! The LUKS2 token of a rewrapped volume still holds the old record until the volume's next
//! stage, which refreshes it from the store (`node::stage`).

use std::io::Write;

use async_trait::async_trait;
use clap::Args;
use kms::{Dek, Kms, KmsConfig, WrappedKey};

use crate::cli::args::{KmsArgs, StoreArgs};
use crate::error::{Error, Result};
use crate::keystore::{KeyEntry, KeyStore, StoreError, Stored};
use crate::volume_id::VolumeId;

/// Arguments of `volume rewrap`.
#[derive(Debug, Clone, Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    kms: KmsArgs,
    /// The one volume to rewrap.
    #[arg(
        long,
        value_name = "V",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    volume_id: Option<String>,
    /// Every record of the store made with --type, --endpoint and --key-id.
    #[arg(long)]
    all: bool,
    /// Move the records to this KEK (same KMS and credentials) instead of the latest version
    /// of --key-id (required for KMIP, which has no key versions).
    #[arg(long, value_name = "NEW")]
    to_key_id: Option<String>,
    /// Print what would be done; no KMS call, no write.
    #[arg(long)]
    dry_run: bool,
}

/// The KMS operations a rewrap needs ([`Kms`] in production; tests wrap it to inject faults).
#[async_trait]
pub trait KeyService: Send + Sync {
    /// [`Kms::wrap`].
    async fn wrap(&self, dek: &Dek, volume: &kms::VolumeId) -> kms::Result<WrappedKey>;
    /// [`Kms::unwrap`].
    async fn unwrap(&self, key: &WrappedKey, volume: &kms::VolumeId) -> kms::Result<Dek>;
    /// [`Kms::rewrap`].
    async fn rewrap(&self, key: &WrappedKey) -> kms::Result<WrappedKey>;
}

#[async_trait]
impl KeyService for Kms {
    async fn wrap(&self, dek: &Dek, volume: &kms::VolumeId) -> kms::Result<WrappedKey> {
        Kms::wrap(self, dek, volume).await
    }
    async fn unwrap(&self, key: &WrappedKey, volume: &kms::VolumeId) -> kms::Result<Dek> {
        Kms::unwrap(self, key, volume).await
    }
    async fn rewrap(&self, key: &WrappedKey) -> kms::Result<WrappedKey> {
        Kms::rewrap(self, key).await
    }
}

/// One KEK: its configuration (to match records) and a client.
pub struct Kek<'a> {
    /// Type, endpoint, key id and namespace that records must name.
    pub config: &'a KmsConfig,
    /// The client.
    pub service: &'a dyn KeyService,
}

/// Which records a run touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One volume (its record must name the source KEK, or already the target).
    One(VolumeId),
    /// Every record that names the source KEK.
    All,
}

/// What a run does.
pub struct Plan<'a> {
    /// The KEK the records are under now.
    pub source: Kek<'a>,
    /// `--to-key-id`: the KEK to move them to; `None`: the source's latest version (Transit).
    pub target: Option<Kek<'a>>,
    /// Report only.
    pub dry_run: bool,
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records replaced by a verified new form.
    pub rewrapped: usize,
    /// Records already at the target (nothing written).
    pub current: usize,
    /// Records that would be rewrapped (`--dry-run`).
    pub would_rewrap: usize,
    /// Records of another KMS or KEK (`--all`).
    pub skipped: usize,
    /// Volumes that failed (the record is unchanged).
    pub failed: usize,
}

enum Outcome {
    Rewrapped(String),
    Current(String),
    WouldRewrap(String),
    Skipped(String),
    Failed(String),
}

/// `volume rewrap`: builds the clients from the arguments and runs [`execute`].
pub async fn run(args: &RewrapArgs, out: &mut dyn Write) -> Result<Totals> {
    let (source_config, source_kms) = args.kms.client(&args.kms.key.key_id)?;
    if source_config.kind() == kms::KmsType::Kmip && args.to_key_id.is_none() {
        return Err(Error::invalid(
            "KMIP keys have no versions: name the new key encryption key with --to-key-id",
        ));
    }
    let target = match &args.to_key_id {
        Some(k) if k.trim() == args.kms.key.key_id.trim() => {
            return Err(Error::invalid(
                "--to-key-id names the key the records are under already",
            ));
        }
        Some(k) => Some(args.kms.client(k)?),
        None => None,
    };
    let selection = match &args.volume_id {
        Some(v) => Selection::One(VolumeId::parse(v).map_err(|e| Error::invalid(e.message()))?),
        None => Selection::All,
    };
    let store = args.store.open().await?;
    let plan = Plan {
        source: Kek {
            config: &source_config,
            service: &source_kms,
        },
        target: target.as_ref().map(|(config, kms)| Kek {
            config,
            service: kms,
        }),
        dry_run: args.dry_run,
    };
    execute(store.as_ref(), &selection, &plan, out).await
}

/// Runs `plan` over the selected records; one line per volume and the totals on `out`.
/// `Err` only when the records cannot be read at all (store unreachable) or `out` fails.
pub async fn execute(
    store: &dyn KeyStore,
    selection: &Selection,
    plan: &Plan<'_>,
    out: &mut dyn Write,
) -> Result<Totals> {
    let entries: Vec<(VolumeId, Result<Stored>)> = match selection {
        Selection::One(v) => {
            let stored = store.get(v).await.map_err(Error::from)?;
            vec![(
                v.clone(),
                stored.ok_or_else(|| Error::not_found("no wrapped-key record")),
            )]
        }
        Selection::All => store.list().await.map_err(Error::from)?,
    };
    let mut totals = Totals::default();
    let write = |out: &mut dyn Write, line: String| {
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing to stdout", e))
    };
    for (volume, stored) in entries {
        let outcome = match stored {
            Err(e) => Outcome::Failed(e.display_chain()),
            Ok(stored) => one(store, &volume, stored, selection, plan).await,
        };
        let line = match outcome {
            Outcome::Rewrapped(m) => {
                totals.rewrapped += 1;
                format!("{volume}: rewrapped ({m})\n")
            }
            Outcome::Current(m) => {
                totals.current += 1;
                format!("{volume}: current ({m})\n")
            }
            Outcome::WouldRewrap(m) => {
                totals.would_rewrap += 1;
                format!("{volume}: would rewrap ({m})\n")
            }
            Outcome::Skipped(m) => {
                totals.skipped += 1;
                format!("{volume}: skipped ({m})\n")
            }
            Outcome::Failed(m) => {
                totals.failed += 1;
                format!("{volume}: FAILED: {}\n", m.replace(['\n', '\r'], " "))
            }
        };
        write(out, line)?;
    }
    let t = totals;
    let dry = if plan.dry_run {
        format!(", {} would be rewrapped (dry run)", t.would_rewrap)
    } else {
        String::new()
    };
    write(
        out,
        format!(
            "{} volume(s): {} rewrapped, {} current, {} skipped, {} failed{dry}\n",
            t.rewrapped + t.current + t.would_rewrap + t.skipped + t.failed,
            t.rewrapped,
            t.current,
            t.skipped,
            t.failed
        ),
    )?;
    Ok(totals)
}

/// `pvc-kek v3` / `<uid>`.
fn describe(r: &WrappedKey) -> String {
    match r.key_version() {
        Some(v) => format!("{} v{v}", r.key_id()),
        None => r.key_id().to_owned(),
    }
}

async fn one(
    store: &dyn KeyStore,
    volume: &VolumeId,
    stored: Stored,
    selection: &Selection,
    plan: &Plan<'_>,
) -> Outcome {
    let record = &stored.entry.record;
    if let Some(target) = &plan.target
        && target.config.check_record(record).is_ok()
    {
        return Outcome::Current(describe(record));
    }
    if let Err(e) = plan.source.config.check_record(record) {
        return match selection {
            Selection::All => Outcome::Skipped(e.message().to_owned()),
            Selection::One(_) => Outcome::Failed(Error::from(e).display_chain()),
        };
    }
    if plan.dry_run {
        return Outcome::WouldRewrap(describe(record));
    }
    let new = match new_record(volume, record, plan).await {
        Ok(Some(new)) => new,
        Ok(None) => return Outcome::Current(describe(record)),
        Err(e) => return Outcome::Failed(e.display_chain()),
    };
    let entry = KeyEntry {
        record: new,
        state: stored.entry.state,
    };
    match store.update(volume, &entry, &stored.revision).await {
        Ok(_) => Outcome::Rewrapped(format!(
            "{} -> {}",
            describe(record),
            describe(&entry.record)
        )),
        Err(StoreError::Conflict(m)) => Outcome::Failed(format!(
            "the record changed while it was rewrapped ({m}); nothing written, run again"
        )),
        Err(e) => Outcome::Failed(format!(
            "the verified new record was not stored: {}",
            Error::from(e).display_chain()
        )),
    }
}

/// The verified new form of `record`, or `None` when it is at the target already.
async fn new_record(
    volume: &VolumeId,
    record: &WrappedKey,
    plan: &Plan<'_>,
) -> Result<Option<WrappedKey>> {
    let kv = volume.kms();
    let (old, new, verifier) = match &plan.target {
        None => {
            let new = plan.source.service.rewrap(record).await?;
            if new.key_version() == record.key_version() {
                return Ok(None);
            }
            let old = plan.source.service.unwrap(record, &kv).await?;
            (old, new, &plan.source)
        }
        Some(target) => {
            let old = plan.source.service.unwrap(record, &kv).await?;
            let new = target.service.wrap(&old, &kv).await?;
            (old, new, target)
        }
    };
    // The verification: the new record (checked against its KEK's configuration and bound
    // to this volume by `unwrap`) gives back the same DEK.
    let back = verifier.service.unwrap(&new, &kv).await?;
    if !back.ct_eq(&old) {
        return Err(Error::internal(
            "the new record unwraps to a different key: not stored",
        ));
    }
    Ok(Some(new))
}
