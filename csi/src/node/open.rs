//! Opening an encrypted volume in NodeStage: *decide*, then *do*.
//!
//! [`probe`] reads once what the device says (LUKS2 header, the record in its token, the
//! strict blank probe, a foreign signature); [`decide`] is a pure function of that and of what
//! the key store says; [`execute`] carries the decision out through the driver's parts (key
//! store, KMS, LUKS2 on the device, device-mapper). The decision table, each row with its
//! unit test in `tests` below:
//!
//! | record | device | decision | test |
//! |---|---|---|---|
//! | none | no header, blank | [`Decision::FormatNew`]: new DEK, wrap, store (pending), format, mark formatted, activate | `none_blank_formats_new` |
//! | none | no header, holds data | refuse [`Refusal::HoldsData`]: never formatted over | `none_with_data_is_refused` |
//! | none | header with our token | [`Decision::RestoreRecord`] from the token (warn), activate | `none_with_token_restores_the_record` |
//! | none | header without our token | refuse [`Refusal::HeaderWithoutToken`] | `none_header_without_token_is_refused` |
//! | pending | no header, no known signature | [`Decision::FormatAgain`]: our interrupted format | `pending_without_header_formats_again` |
//! | pending | no header, a known signature | refuse [`Refusal::ForeignSignature`] | `pending_with_a_signature_is_refused` |
//! | pending | header | [`Decision::Activate`], marking the record formatted | `pending_with_header_marks_formatted` |
//! | formatted | header | [`Decision::Activate`] (refresh the token if rewrapped) | `formatted_with_header_activates`, `a_rewrapped_record_refreshes_the_token` |
//! | formatted | no header | refuse [`Refusal::FormattedWithoutHeader`]: never formatted again | `formatted_without_header_is_refused` |
//!
//! "Blank" for a volume without a record is the strict probe ([`crate::crypt::holds_data`]:
//! any known signature or any non-zero byte in the first and last MiB); "no known signature"
//! for a pending record is the weaker one ([`crate::crypt::foreign_signature`]): our own
//! interrupted format may have left partial LUKS2 bytes that are data to the strict probe.
//!
//! A header whose DEK does not match its digest is DATA_LOSS at the unwrap step of
//! [`execute`]; a damaged header or token is FAILED_PRECONDITION while probing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kms::{Dek, KmsConfig, WrappedKey};
use luks2::header::Header;
use tracing::{info, warn};

use crate::crypt::{self, keys};
use crate::driver::{Driver, StagePoint};
use crate::error::{Error, Kind, Result};
use crate::host::exec::blocking;
use crate::host::step::{ms, step};
use crate::keystore::{KeyEntry, Revision, StoreError, Stored, VolumeState};
use crate::volume_id::VolumeId;

/// What the device says, read once.
#[derive(Debug, Default)]
pub struct DeviceProbe {
    /// The LUKS2 header (`None`: no LUKS2 magic in either copy).
    pub header: Option<Header>,
    /// The wrapped-key record in the header's token, if the header has one.
    pub token: Option<WrappedKey>,
    /// Without a header: what the strict probe found (`None`: blank).
    pub holds_data: Option<String>,
    /// Without a header: the known signature on the device, if any.
    pub signature: Option<&'static str>,
}

/// What to do with the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No record, blank device: a new DEK, wrapped and stored (pending), format, mark
    /// formatted.
    FormatNew,
    /// Pending record, no header and no signature: our own interrupted format; format again.
    FormatAgain,
    /// No record, a header with our token: store the token's record (formatted).
    RestoreRecord(WrappedKey),
    /// A record and a header: unwrap, check the DEK against the header, activate.
    Activate {
        /// The record says pending: mark it formatted.
        mark_formatted: bool,
        /// The token's record differs from the stored one (a rewrap): replace it.
        refresh_token: bool,
    },
    /// Refuse: the device is not ours to format or open.
    Refuse(Refusal),
}

/// Why a stage refuses (each FAILED_PRECONDITION, with its message in [`Refusal::error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No record, no header, and the device holds data.
    HoldsData(String),
    /// No record, and a header without our token.
    HeaderWithoutToken,
    /// The record says formatted, the device has no header.
    FormattedWithoutHeader,
    /// The record says pending, and the device holds a foreign signature.
    ForeignSignature(&'static str),
}

impl Refusal {
    /// The error for volume `id` (FAILED_PRECONDITION).
    pub fn error(&self, id: &VolumeId) -> Error {
        Error::precondition(match self {
            Refusal::HoldsData(why) => format!(
                "volume {id} has no wrapped-key record and its device holds data ({why}): \
                 refusing to format it"
            ),
            Refusal::HeaderWithoutToken => format!(
                "volume {id} has a LUKS2 header but no wrapped-key record and no {} token: not \
                 a volume this driver can open",
                crypt::TOKEN_TYPE
            ),
            Refusal::FormattedWithoutHeader => format!(
                "the wrapped-key record of volume {id} says it was formatted, but its device \
                 has no LUKS2 header (blank or both header copies destroyed): refusing to \
                 format it again; see `onmetal-csi-driver volume restore-header`"
            ),
            Refusal::ForeignSignature(sig) => format!(
                "volume {id}: a format was started but the device now holds a {sig} signature: \
                 refusing to format it"
            ),
        })
    }
}

/// Decides from the record (and its state) and the device (the table in the module docs).
pub fn decide(record: Option<(&WrappedKey, VolumeState)>, device: &DeviceProbe) -> Decision {
    match (record, &device.header) {
        (None, None) => match &device.holds_data {
            None => Decision::FormatNew,
            Some(why) => Decision::Refuse(Refusal::HoldsData(why.clone())),
        },
        (None, Some(_)) => match &device.token {
            Some(token) => Decision::RestoreRecord(token.clone()),
            None => Decision::Refuse(Refusal::HeaderWithoutToken),
        },
        (Some((_, VolumeState::Formatted)), None) => {
            Decision::Refuse(Refusal::FormattedWithoutHeader)
        }
        (Some((_, VolumeState::Pending)), None) => match device.signature {
            None => Decision::FormatAgain,
            Some(sig) => Decision::Refuse(Refusal::ForeignSignature(sig)),
        },
        (Some((stored, state)), Some(_)) => Decision::Activate {
            mark_formatted: state == VolumeState::Pending,
            refresh_token: device.token.as_ref() != Some(stored),
        },
    }
}

/// Reads what the device says (blocking: run it on the blocking pool).
pub fn probe(device: &Path) -> Result<DeviceProbe> {
    let t = Instant::now();
    let header = crypt::read_header(device)?;
    step("header_read", t);
    Ok(match header {
        Some(header) => DeviceProbe {
            token: crypt::token_record(&header)?.map(|(_, r)| r),
            header: Some(header),
            ..DeviceProbe::default()
        },
        None => DeviceProbe {
            holds_data: crypt::holds_data(device)?,
            signature: crypt::foreign_signature(device)?,
            ..DeviceProbe::default()
        },
    })
}

/// Carries out `decision` for volume `id` on `backing`; returns the DEK that opens the device
/// (the caller activates it). A refusal is its error.
pub async fn execute(
    d: &Driver,
    id: &VolumeId,
    backing: &Path,
    config: &KmsConfig,
    stored: Option<Stored>,
    device: DeviceProbe,
    decision: Decision,
) -> Result<Dek> {
    match (decision, stored) {
        (Decision::Refuse(why), _) => Err(why.error(id)),
        (Decision::FormatNew, _) => {
            let (dek, record) = keys::new_key_with(&*d.keys, config, id).await?;
            let entry = KeyEntry {
                record,
                state: VolumeState::Pending,
            };
            let revision = create_record(d, id, &entry).await?;
            d.hooks.at(StagePoint::AfterRecord)?;
            format_device(backing, &dek, &entry.record).await?;
            d.hooks.at(StagePoint::AfterFormat)?;
            mark_formatted(d, id, entry, &revision).await?;
            Ok(dek)
        }
        (Decision::FormatAgain, Some(stored)) => {
            let dek = keys::unwrap_with(&*d.keys, config, &stored.entry.record, id).await?;
            format_device(backing, &dek, &stored.entry.record).await?;
            mark_formatted(d, id, stored.entry, &stored.revision).await?;
            Ok(dek)
        }
        (Decision::RestoreRecord(record), _) => {
            let header = device.header.as_ref().ok_or_else(no_header)?;
            let dek = keys::unwrap_with(&*d.keys, config, &record, id).await?;
            crypt::verify_dek(header, &dek)?;
            let entry = KeyEntry {
                record,
                state: VolumeState::Formatted,
            };
            create_record(d, id, &entry).await?;
            warn!(
                record = %id.record_name(),
                "the wrapped-key record was missing: restored it from the LUKS2 token"
            );
            Ok(dek)
        }
        (
            Decision::Activate {
                mark_formatted: mark,
                refresh_token,
            },
            Some(stored),
        ) => {
            let header = device.header.ok_or_else(no_header)?;
            let dek = keys::unwrap_with(&*d.keys, config, &stored.entry.record, id).await?;
            let t = Instant::now();
            crypt::verify_dek(&header, &dek)?;
            step("digest", t);
            if mark {
                mark_formatted(d, id, stored.entry.clone(), &stored.revision).await?;
            }
            if refresh_token {
                let b = backing.to_path_buf();
                let rec = stored.entry.record;
                let mut header = header;
                blocking(move || crypt::refresh_token(&b, &mut header, &rec)).await?;
                info!("refreshed the wrapped-key copy in the LUKS2 token");
            }
            Ok(dek)
        }
        (Decision::FormatAgain | Decision::Activate { .. }, None) => Err(Error::internal(
            "stage decision needs a wrapped-key record, and there is none",
        )),
    }
}

fn no_header() -> Error {
    Error::internal("stage decision needs a LUKS2 header, and the probe found none")
}

/// Opens an encrypted volume: returns `/dev/mapper/onmetal-csi-<id>` and whether this call
/// activated it (false: it was open already, a repeated stage or a restarted plugin).
pub async fn open(
    d: &Driver,
    id: &VolumeId,
    backing: &Path,
    config: &KmsConfig,
) -> Result<(PathBuf, bool)> {
    let name = id.dm_name();
    // A repeated stage, or a restart: the mapping is there, the key is in the keyring.
    let t = Instant::now();
    {
        let (m, name) = (Arc::clone(&d.mapper), name.clone());
        if let Some(dev) = blocking(move || m.active(&name)).await? {
            return Ok((dev, false));
        }
    }
    step("mapping_check", t);
    let t = Instant::now();
    let stored = d.store.get(id).await.map_err(Error::from)?;
    step("record", t);
    let device = {
        let b = backing.to_path_buf();
        blocking(move || probe(&b)).await?
    };
    let decision = decide(
        stored.as_ref().map(|s| (&s.entry.record, s.entry.state)),
        &device,
    );
    let dek = execute(d, id, backing, config, stored, device, decision).await?;
    d.hooks.at(StagePoint::BeforeActivate)?;
    let (m, b) = (Arc::clone(&d.mapper), backing.to_path_buf());
    let t = Instant::now();
    let dev = blocking(move || m.activate(&name, &b, &dek)).await?;
    step("activate", t);
    Ok((dev, true))
}

/// Stores a new record; one that appeared meanwhile is ABORTED (the CO retries and the next
/// stage decides again).
async fn create_record(d: &Driver, id: &VolumeId, entry: &KeyEntry) -> Result<Revision> {
    match d.store.create(id, entry).await {
        Ok(r) => Ok(r),
        Err(StoreError::Exists(_)) => Err(Error::new(
            Kind::Aborted,
            format!("the wrapped-key record of {id} appeared meanwhile; retry"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// LUKS2 formats that run at once. Each holds its keyslot's anti-forensic material and write
/// buffers (about 0.6 MiB) while it writes the 16 MiB header area; 50 first stages at once
/// held 50 of them (the node plugin's peak RSS). Formats wait on the device's writes, so a few
/// at a time keep the disks busy.
const CONCURRENT_FORMATS: usize = 8;
static FORMATS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_FORMATS);

async fn format_device(backing: &Path, dek: &Dek, record: &WrappedKey) -> Result<()> {
    // `Dek` is not `Clone` by design; the blocking task gets its own zeroizing copy.
    let dek = Dek::from_slice(dek.expose())?;
    let b = backing.to_path_buf();
    let rec = record.clone();
    let t = Instant::now();
    let _turn = FORMATS
        .acquire()
        .await
        .map_err(|_| Error::internal("the format queue is closed"))?;
    blocking(move || crypt::format(&b, &dek, &rec)).await?;
    info!(elapsed_ms = ms(t), "formatted LUKS2");
    step("luks2_format", t);
    Ok(())
}

async fn mark_formatted(
    d: &Driver,
    id: &VolumeId,
    mut entry: KeyEntry,
    revision: &Revision,
) -> Result<()> {
    entry.state = VolumeState::Formatted;
    d.store
        .update(id, &entry, revision)
        .await
        .map_err(Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The decision table of the module docs, one test per row (and every refusal).

    use super::*;

    fn record(version: u64) -> WrappedKey {
        crate::keystore::tests::sample_record(&VolumeId::parse("pvc-1").unwrap(), version)
    }

    /// A real LUKS2 header (of an in-memory device formatted as the driver formats).
    fn header() -> Header {
        let mut dev = luks2::io::MemDevice::new(32 << 20);
        let dek = Dek::generate(crypt::DEK_LEN).unwrap();
        let vk = luks2::VolumeKey::from_bytes(dek.expose());
        luks2::format::format_with_volume_key(&mut dev, &vk, dek.expose(), &crypt::format_options())
            .unwrap()
            .0
    }

    fn blank() -> DeviceProbe {
        DeviceProbe::default()
    }

    fn with_header(token: Option<WrappedKey>) -> DeviceProbe {
        DeviceProbe {
            header: Some(header()),
            token,
            ..DeviceProbe::default()
        }
    }

    #[test]
    fn none_blank_formats_new() {
        assert_eq!(decide(None, &blank()), Decision::FormatNew);
    }

    #[test]
    fn none_with_data_is_refused() {
        let dev = DeviceProbe {
            holds_data: Some("non-zero bytes in the first MiB".into()),
            ..DeviceProbe::default()
        };
        let d = decide(None, &dev);
        assert_eq!(
            d,
            Decision::Refuse(Refusal::HoldsData("non-zero bytes in the first MiB".into()))
        );
        // A signature alone is data to the strict probe too; only the strict probe decides here.
        let sig_only = DeviceProbe {
            signature: Some("ext4"),
            ..DeviceProbe::default()
        };
        assert_eq!(decide(None, &sig_only), Decision::FormatNew);
    }

    #[test]
    fn none_with_token_restores_the_record() {
        let r = record(1);
        assert_eq!(
            decide(None, &with_header(Some(r.clone()))),
            Decision::RestoreRecord(r)
        );
    }

    #[test]
    fn none_header_without_token_is_refused() {
        assert_eq!(
            decide(None, &with_header(None)),
            Decision::Refuse(Refusal::HeaderWithoutToken)
        );
    }

    #[test]
    fn pending_without_header_formats_again() {
        let r = record(1);
        // Partial LUKS2 bytes of our own interrupted format are data to the strict probe; the
        // pending row looks at known signatures only.
        let dev = DeviceProbe {
            holds_data: Some("non-zero bytes".into()),
            ..DeviceProbe::default()
        };
        assert_eq!(
            decide(Some((&r, VolumeState::Pending)), &dev),
            Decision::FormatAgain
        );
    }

    #[test]
    fn pending_with_a_signature_is_refused() {
        let r = record(1);
        let dev = DeviceProbe {
            signature: Some("xfs"),
            holds_data: Some("xfs".into()),
            ..DeviceProbe::default()
        };
        assert_eq!(
            decide(Some((&r, VolumeState::Pending)), &dev),
            Decision::Refuse(Refusal::ForeignSignature("xfs"))
        );
    }

    #[test]
    fn pending_with_header_marks_formatted() {
        let r = record(1);
        assert_eq!(
            decide(
                Some((&r, VolumeState::Pending)),
                &with_header(Some(r.clone()))
            ),
            Decision::Activate {
                mark_formatted: true,
                refresh_token: false
            }
        );
    }

    #[test]
    fn formatted_with_header_activates() {
        let r = record(1);
        assert_eq!(
            decide(
                Some((&r, VolumeState::Formatted)),
                &with_header(Some(r.clone()))
            ),
            Decision::Activate {
                mark_formatted: false,
                refresh_token: false
            }
        );
    }

    #[test]
    fn a_rewrapped_record_refreshes_the_token() {
        let (old, new) = (record(1), record(2));
        assert_eq!(
            decide(
                Some((&new, VolumeState::Formatted)),
                &with_header(Some(old))
            ),
            Decision::Activate {
                mark_formatted: false,
                refresh_token: true
            }
        );
        // A header that lost its token gets it back.
        assert_eq!(
            decide(Some((&new, VolumeState::Formatted)), &with_header(None)),
            Decision::Activate {
                mark_formatted: false,
                refresh_token: true
            }
        );
    }

    #[test]
    fn formatted_without_header_is_refused() {
        let r = record(1);
        for dev in [
            blank(),
            DeviceProbe {
                signature: Some("ext4"),
                holds_data: Some("ext4".into()),
                ..DeviceProbe::default()
            },
        ] {
            assert_eq!(
                decide(Some((&r, VolumeState::Formatted)), &dev),
                Decision::Refuse(Refusal::FormattedWithoutHeader)
            );
        }
    }

    #[test]
    fn every_refusal_is_failed_precondition_naming_the_volume() {
        let id = VolumeId::parse("pvc-1").unwrap();
        for r in [
            Refusal::HoldsData("x".into()),
            Refusal::HeaderWithoutToken,
            Refusal::FormattedWithoutHeader,
            Refusal::ForeignSignature("ext4"),
        ] {
            let e = r.error(&id);
            assert_eq!(e.kind(), Kind::FailedPrecondition, "{r:?}");
            assert!(e.message().contains("pvc-1"), "{r:?}: {}", e.message());
        }
        assert!(
            Refusal::FormattedWithoutHeader
                .error(&id)
                .message()
                .contains("restore-header")
        );
    }
}
