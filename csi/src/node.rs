//! The node service: stage (attach, open, mkfs, mount), publish (bind mount), unstage,
//! unpublish, expand and stats. Handlers are thin: check the request, take the volume's lock,
//! call the one function that does the work. [`stage`] reads top-down as the steps it takes.
//!
//! State comes from the kernel (loop devices, device-mapper mappings, mounts), so a restarted
//! plugin neither disturbs nor forgets staged volumes, and every call is idempotent.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, warn};

use crate::capability::Access;
use crate::driver::Driver;
use crate::encrypted::{self, blocking};
use crate::error::{Error, Kind, Result};
use crate::keystore::{KeyEntry, StoreError, VolumeState};
use crate::mount::{FsType, probe_fs};
use crate::params::{Encryption, VolumeParams};
use crate::proto;
use crate::proto::node_server::Node;
use crate::volume_id::VolumeId;

/// The gRPC node service.
#[derive(Debug, Clone)]
pub struct NodeService {
    driver: Arc<Driver>,
}

impl NodeService {
    /// A node service over the driver's parts.
    pub fn new(driver: Arc<Driver>) -> Self {
        NodeService { driver }
    }
}

/// Milliseconds since `t`, for log fields.
pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Logs how long one step of a stage took (debug level: `step`, `elapsed_ms`), so that a
/// stage's time can be split into its steps (`benches/src/bin/stage_compare.rs` reads them).
pub(crate) fn step(name: &'static str, t: Instant) {
    debug!(step = name, elapsed_ms = ms(t), "step");
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// Runs one call: a span with the operation and volume id on every log line, the metric, and
/// the one error mapping.
pub(crate) async fn call<T>(
    op: &'static str,
    volume: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<Response<T>, Status> {
    let span = tracing::info_span!("csi", op, volume_id = %volume);
    let start = Instant::now();
    let res = fut.instrument(span.clone()).await;
    let code = match &res {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.kind().code(),
    };
    crate::metrics::operation(op, start.elapsed(), code);
    span.in_scope(|| match &res {
        Ok(_) => tracing::debug!(elapsed_ms = ms(start), "ok"),
        Err(e) => tracing::warn!(code = ?code, error = %e.display_chain(), "failed"),
    });
    res.map(Response::new).map_err(|e| e.to_status())
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<proto::NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodeStageVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
            let cap = r
                .volume_capability
                .as_ref()
                .ok_or_else(|| Error::invalid("volume_capability is required"))?;
            let access = Access::parse(cap)?;
            let params = VolumeParams::parse(&r.volume_context)?;
            let _guard = d.locks.try_lock(id.as_str())?;
            stage(
                &d,
                &id,
                &staging,
                &access,
                params.encryption.as_ref(),
                &r.secrets,
            )
            .await?;
            Ok(proto::NodeStageVolumeResponse {})
        })
        .await
    }

    async fn node_unstage_volume(
        &self,
        req: Request<proto::NodeUnstageVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodeUnstageVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
            let _guard = d.locks.try_lock(id.as_str())?;
            unstage(&d, &id, &staging).await?;
            Ok(proto::NodeUnstageVolumeResponse {})
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        req: Request<proto::NodePublishVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodePublishVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let staging = PathBuf::from(required(&r.staging_target_path, "staging_target_path")?);
            let target = PathBuf::from(required(&r.target_path, "target_path")?);
            let cap = r
                .volume_capability
                .as_ref()
                .ok_or_else(|| Error::invalid("volume_capability is required"))?;
            let access = Access::parse(cap)?;
            let read_only = r.readonly || Access::read_only_mode(cap);
            let _guard = d.locks.try_lock(id.as_str())?;
            publish(&d, &id, &staging, &target, &access, read_only).await?;
            Ok(proto::NodePublishVolumeResponse {})
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodeUnpublishVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let target = PathBuf::from(required(&r.target_path, "target_path")?);
            let _guard = d.locks.try_lock(id.as_str())?;
            unpublish(&d, &id, &target).await?;
            Ok(proto::NodeUnpublishVolumeResponse {})
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> std::result::Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodeGetVolumeStats", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
            stats(&d, &id, &path).await
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        req: Request<proto::NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("NodeExpandVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let path = PathBuf::from(required(&r.volume_path, "volume_path")?);
            let _guard = d.locks.try_lock(id.as_str())?;
            let capacity_bytes = expand(&d, &id, &path).await?;
            Ok(proto::NodeExpandVolumeResponse {
                capacity_bytes: i64::try_from(capacity_bytes).unwrap_or(i64::MAX),
            })
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        use proto::node_service_capability::{Rpc, Type, rpc::Type as T};
        let caps = [
            T::StageUnstageVolume,
            T::GetVolumeStats,
            T::ExpandVolume,
            T::VolumeCondition,
        ]
        .into_iter()
        .map(|t| proto::NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        })
        .collect();
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn node_get_info(
        &self,
        _req: Request<proto::NodeGetInfoRequest>,
    ) -> std::result::Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.driver.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

/// NodeStageVolume: attach → (encrypted: record → KMS unwrap → LUKS2 check → dm activate) →
/// (filesystem: mkfs if blank → mount on the staging path).
pub async fn stage(
    d: &Driver,
    id: &VolumeId,
    staging: &Path,
    access: &Access,
    encryption: Option<&Encryption>,
    secrets: &HashMap<String, String>,
) -> Result<()> {
    let t0 = Instant::now();
    if d.backend.get(id).await?.is_none() {
        return Err(Error::not_found(format!("volume {id} does not exist")));
    }
    let backing = d.backend.attach(id).await?;
    step("attach", t0);
    let device = match encryption {
        Some(enc) => open_encrypted(d, id, &backing, enc, secrets).await?,
        None => {
            if encrypted::active_mapping(&id.dm_name())
                .unwrap_or(None)
                .is_some()
            {
                return Err(Error::precondition(format!(
                    "volume {id} is open as an encrypted volume; its volume context says it is \
                     not encrypted"
                )));
            }
            backing
        }
    };
    if let Access::Mount { fs, flags } = access {
        mount_staging(d, id, &device, staging, *fs, flags, encryption.is_some()).await?;
    }
    let t = Instant::now();
    crate::metrics::staged_encrypted(count_open()?);
    step("count_open", t);
    info!(elapsed_ms = ms(t0), device = %device.display(), "staged");
    Ok(())
}

/// Opens an encrypted volume: returns `/dev/mapper/onmetal-csi-<id>`.
///
/// Decisions, from what the key store and the device say:
///
/// | record | device | action |
/// |---|---|---|
/// | none | blank | new DEK, wrap, store (pending), format, mark formatted, activate |
/// | none | header with our token | restore the record from the token (warn), activate |
/// | none | anything else | FAILED_PRECONDITION: never formatted over |
/// | pending | no header, no known signature | our interrupted format: format again |
/// | pending | header the DEK opens | mark formatted, activate |
/// | formatted | header the DEK opens | activate (refresh the token if rewrapped) |
/// | formatted | no header | FAILED_PRECONDITION: never formatted again |
async fn open_encrypted(
    d: &Driver,
    id: &VolumeId,
    backing: &Path,
    enc: &Encryption,
    secrets: &HashMap<String, String>,
) -> Result<PathBuf> {
    let name = id.dm_name();
    // A repeated stage, or a restart: the mapping is there, the key is in the keyring.
    let t = Instant::now();
    {
        let name = name.clone();
        if let Some(dev) = blocking(move || encrypted::active_mapping(&name)).await? {
            return Ok(dev);
        }
    }
    step("mapping_check", t);
    let t = Instant::now();
    let config = enc.kms_config(secrets)?;
    let stored = d.store.get(id).await.map_err(Error::from)?;
    step("record", t);
    let t = Instant::now();
    let header = {
        let b = backing.to_path_buf();
        blocking(move || encrypted::read_header(&b)).await?
    };
    step("header_read", t);

    let dek = match (stored, header) {
        (None, None) => {
            let b = backing.to_path_buf();
            if let Some(why) = blocking(move || encrypted::holds_data(&b)).await? {
                return Err(Error::precondition(format!(
                    "volume {id} has no wrapped-key record and its device holds data ({why}): \
                     refusing to format it"
                )));
            }
            let (dek, record) = encrypted::new_key(&config, id).await?;
            let entry = KeyEntry {
                record,
                state: VolumeState::Pending,
            };
            let revision = match d.store.create(id, &entry).await {
                Ok(r) => r,
                Err(StoreError::Exists(_)) => {
                    return Err(Error::new(
                        Kind::Aborted,
                        format!("the wrapped-key record of {id} appeared meanwhile; retry"),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            crash_point("after-record");
            format_device(backing, &dek, &entry.record).await?;
            crash_point("after-format");
            mark_formatted(d, id, entry, &revision).await?;
            dek
        }
        (None, Some(header)) => {
            let Some((_, record)) = encrypted::token_record(&header)? else {
                return Err(Error::precondition(format!(
                    "volume {id} has a LUKS2 header but no wrapped-key record and no \
                     {} token: not a volume this driver can open",
                    encrypted::TOKEN_TYPE
                )));
            };
            let dek = encrypted::unwrap(&config, &record, id).await?;
            encrypted::verify_dek(&header, &dek)?;
            let entry = KeyEntry {
                record,
                state: VolumeState::Formatted,
            };
            match d.store.create(id, &entry).await {
                Ok(_) => warn!(
                    record = %id.record_name(),
                    "the wrapped-key record was missing: restored it from the LUKS2 token"
                ),
                Err(StoreError::Exists(_)) => {
                    return Err(Error::new(
                        Kind::Aborted,
                        format!("the wrapped-key record of {id} appeared meanwhile; retry"),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
            dek
        }
        (Some(stored), None) => match stored.entry.state {
            VolumeState::Formatted => {
                return Err(Error::precondition(format!(
                    "the wrapped-key record of volume {id} says it was formatted, but its \
                     device has no LUKS2 header (blank or both header copies destroyed): \
                     refusing to format it again; see `onmetal-csi-driver volume \
                     restore-header`"
                )));
            }
            VolumeState::Pending => {
                let b = backing.to_path_buf();
                if let Some(sig) = blocking(move || encrypted::foreign_signature(&b)).await? {
                    return Err(Error::precondition(format!(
                        "volume {id}: a format was started but the device now holds a {sig} \
                         signature: refusing to format it"
                    )));
                }
                let dek = encrypted::unwrap(&config, &stored.entry.record, id).await?;
                format_device(backing, &dek, &stored.entry.record).await?;
                mark_formatted(d, id, stored.entry, &stored.revision).await?;
                dek
            }
        },
        (Some(stored), Some(header)) => {
            let dek = encrypted::unwrap(&config, &stored.entry.record, id).await?;
            let t = Instant::now();
            encrypted::verify_dek(&header, &dek)?;
            step("digest", t);
            if stored.entry.state == VolumeState::Pending {
                mark_formatted(d, id, stored.entry.clone(), &stored.revision).await?;
            }
            let token = encrypted::token_record(&header)?.map(|(_, r)| r);
            if token.as_ref() != Some(&stored.entry.record) {
                let b = backing.to_path_buf();
                let rec = stored.entry.record.clone();
                let mut header = header;
                blocking(move || encrypted::refresh_token(&b, &mut header, &rec)).await?;
                info!("refreshed the wrapped-key copy in the LUKS2 token");
            }
            dek
        }
    };
    crash_point("before-activate");
    let b = backing.to_path_buf();
    let t = Instant::now();
    let dev = blocking(move || encrypted::activate(&name, &b, &dek)).await?;
    step("activate", t);
    Ok(dev)
}

async fn format_device(backing: &Path, dek: &kms::Dek, record: &kms::WrappedKey) -> Result<()> {
    // `Dek` is not `Clone` by design; the blocking task gets its own zeroizing copy.
    let dek = kms::Dek::from_slice(dek.expose())?;
    let b = backing.to_path_buf();
    let rec = record.clone();
    let t = Instant::now();
    blocking(move || encrypted::format(&b, &dek, &rec)).await?;
    info!(elapsed_ms = ms(t), "formatted LUKS2");
    step("luks2_format", t);
    Ok(())
}

async fn mark_formatted(
    d: &Driver,
    id: &VolumeId,
    mut entry: KeyEntry,
    revision: &crate::keystore::Revision,
) -> Result<()> {
    entry.state = VolumeState::Formatted;
    d.store
        .update(id, &entry, revision)
        .await
        .map_err(Error::from)?;
    Ok(())
}

/// Test hook: `ONMETAL_CSI_CRASH_AT=<point>` kills the process at that point of a first stage
/// (the crash-convergence tests use it; unset in production, it costs one env lookup).
fn crash_point(point: &str) {
    if std::env::var("ONMETAL_CSI_CRASH_AT").is_ok_and(|p| p == point) {
        warn!(point, "ONMETAL_CSI_CRASH_AT: aborting");
        std::process::abort();
    }
}

async fn mount_staging(
    d: &Driver,
    id: &VolumeId,
    device: &Path,
    staging: &Path,
    fs: FsType,
    flags: &[String],
    encrypted: bool,
) -> Result<()> {
    if let Some(m) = d.mounter.mounted(staging)? {
        let expect = device_number(device)?;
        if m.dev == expect {
            return Ok(());
        }
        return Err(Error::new(
            Kind::AlreadyExists,
            format!(
                "{} is already mounted from {} (device {}), not from volume {id}",
                staging.display(),
                m.source,
                m.dev
            ),
        ));
    }
    fs::create_dir_all(staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let t = Instant::now();
    let dev = device.to_path_buf();
    let found = blocking(move || probe_fs(&dev)).await?;
    step("fs_probe", t);
    match found {
        Some(f) if f == fs => {}
        Some(f) => {
            return Err(Error::precondition(format!(
                "volume {id} holds a {} filesystem, not the requested {}",
                f.as_str(),
                fs.as_str()
            )));
        }
        None => {
            // An unencrypted device must be really blank; an encrypted one reads as random data
            // until it has a filesystem (its LUKS2 header was checked above).
            if !encrypted {
                let dev = device.to_path_buf();
                if let Some(why) = blocking(move || encrypted::holds_data(&dev)).await? {
                    return Err(Error::precondition(format!(
                        "volume {id} holds data ({why}) but no ext4/xfs filesystem: refusing \
                         to make one over it"
                    )));
                }
            }
            let t = Instant::now();
            let (m, dev) = (Arc::clone(&d.mounter), device.to_path_buf());
            blocking(move || m.mkfs(&dev, fs)).await?;
            info!(fs = fs.as_str(), elapsed_ms = ms(t), "made filesystem");
            step("mkfs", t);
        }
    }
    let (m, dev, st, fl) = (
        Arc::clone(&d.mounter),
        device.to_path_buf(),
        staging.to_path_buf(),
        flags.to_vec(),
    );
    let t = Instant::now();
    blocking(move || m.mount(&dev, &st, fs, &fl)).await?;
    step("mount", t);
    Ok(())
}

/// `major:minor` of a block device node, as mountinfo shows it.
fn device_number(device: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(device)
        .map_err(|e| Error::io(format!("stat {}", device.display()), e))?
        .rdev();
    Ok(format!(
        "{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

/// Encrypted volumes open on this node.
fn count_open() -> Result<usize> {
    match dm::DeviceMapper::new() {
        Ok(m) => Ok(m
            .list()?
            .iter()
            .filter(|n| n.as_str().starts_with(crate::volume_id::DM_PREFIX))
            .count()),
        Err(_) => Ok(0),
    }
}

/// NodeUnstageVolume: unmount the staging path, close the mapping (which drops the key from the
/// keyring), detach.
pub async fn unstage(d: &Driver, id: &VolumeId, staging: &Path) -> Result<()> {
    let (m, st) = (Arc::clone(&d.mounter), staging.to_path_buf());
    blocking(move || m.unmount(&st)).await?;
    let name = id.dm_name();
    blocking(move || encrypted::deactivate(&name)).await?;
    d.backend.detach(id).await?;
    crate::metrics::staged_encrypted(count_open()?);
    info!("unstaged");
    Ok(())
}

/// The device a staged volume is used through: the mapping (encrypted) or the attached device.
async fn staged_device(d: &Driver, id: &VolumeId) -> Result<Option<PathBuf>> {
    let name = id.dm_name();
    if let Some(dev) = blocking(move || encrypted::active_mapping(&name)).await? {
        return Ok(Some(dev));
    }
    d.backend.device(id).await
}

/// NodePublishVolume: bind the staging mount (filesystem) or the device node (block) onto the
/// target path.
pub async fn publish(
    d: &Driver,
    id: &VolumeId,
    staging: &Path,
    target: &Path,
    access: &Access,
    read_only: bool,
) -> Result<()> {
    if d.backend.get(id).await?.is_none() {
        return Err(Error::not_found(format!("volume {id} does not exist")));
    }
    let source = match access {
        Access::Mount { .. } => {
            if d.mounter.mounted(staging)?.is_none() {
                return Err(Error::precondition(format!(
                    "volume {id} is not staged at {}",
                    staging.display()
                )));
            }
            fs::create_dir_all(target)
                .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            staging.to_path_buf()
        }
        Access::Block => {
            let dev = staged_device(d, id).await?.ok_or_else(|| {
                Error::precondition(format!("volume {id} is not staged on this node"))
            })?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            if !target.exists() {
                fs::File::create(target)
                    .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            }
            dev
        }
    };
    if d.mounter.mounted(target)?.is_some() {
        return Ok(());
    }
    let (m, src, tgt) = (Arc::clone(&d.mounter), source.clone(), target.to_path_buf());
    let flags = match access {
        Access::Mount { flags, .. } => flags.clone(),
        Access::Block => Vec::new(),
    };
    blocking(move || m.bind(&src, &tgt, read_only, &flags)).await?;
    info!(target = %target.display(), read_only, "published");
    Ok(())
}

/// NodeUnpublishVolume: unmount and remove the target path.
pub async fn unpublish(d: &Driver, id: &VolumeId, target: &Path) -> Result<()> {
    let (m, tgt) = (Arc::clone(&d.mounter), target.to_path_buf());
    blocking(move || m.unmount(&tgt)).await?;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(target),
        Ok(_) => fs::remove_file(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::io(format!("removing {}", target.display()), e))?;
    info!(volume = %id, target = %target.display(), "unpublished");
    Ok(())
}

/// NodeExpandVolume: the device shows its new size, the mapping grows (key from the keyring: no
/// KMS), the filesystem grows. Returns the usable size.
pub async fn expand(d: &Driver, id: &VolumeId, path: &Path) -> Result<u64> {
    if !path.exists() {
        return Err(Error::not_found(format!(
            "volume path {} does not exist",
            path.display()
        )));
    }
    d.backend.refresh_size(id).await?;
    let device = staged_device(d, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("volume {id} is not staged on this node")))?;
    let name = id.dm_name();
    let active = {
        let name = name.clone();
        blocking(move || encrypted::active_mapping(&name)).await?
    };
    if active.is_some() {
        blocking(move || encrypted::resize(&name)).await?;
    }
    // A filesystem volume is published as a directory; a block volume as a device node file.
    if path.is_dir()
        && let Some(m) = d.mounter.mounted(path)?
    {
        let fs = FsType::parse(&m.fstype)?;
        let (mounter, dev, p) = (Arc::clone(&d.mounter), device.clone(), path.to_path_buf());
        blocking(move || mounter.grow(&dev, &p, fs)).await?;
    }
    let size = device_size(&device)?;
    info!(bytes = size, "expanded");
    Ok(size)
}

fn device_size(device: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(device)
        .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of {}", device.display()), e))
}

/// NodeGetVolumeStats: usage of the mounted filesystem (bytes and inodes) or size of the block
/// device, with a condition that reports a missing mapping or an unreadable device.
pub async fn stats(
    d: &Driver,
    id: &VolumeId,
    path: &Path,
) -> Result<proto::NodeGetVolumeStatsResponse> {
    use proto::volume_usage::Unit;
    let meta = fs::metadata(path)
        .map_err(|e| Error::not_found(format!("volume path {}: {e}", path.display())))?;
    let device = staged_device(d, id).await?;
    let condition = match &device {
        None => proto::VolumeCondition {
            abnormal: true,
            message: format!(
                "volume {id} has no device on this node (mapping or attachment missing)"
            ),
        },
        Some(dev) => match read_probe(dev) {
            Ok(()) => proto::VolumeCondition {
                abnormal: false,
                message: "ok".into(),
            },
            Err(e) => proto::VolumeCondition {
                abnormal: true,
                message: format!("reading {} failed: {e}", dev.display()),
            },
        },
    };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let usage = if meta.is_dir() {
        let u = d.mounter.usage(path)?;
        vec![
            proto::VolumeUsage {
                total: as_i64(u.bytes.0),
                available: as_i64(u.bytes.1),
                used: as_i64(u.bytes.2),
                unit: Unit::Bytes as i32,
            },
            proto::VolumeUsage {
                total: as_i64(u.inodes.0),
                available: as_i64(u.inodes.1),
                used: as_i64(u.inodes.2),
                unit: Unit::Inodes as i32,
            },
        ]
    } else {
        let size = match &device {
            Some(dev) => device_size(dev)?,
            None => device_size(path)?,
        };
        vec![proto::VolumeUsage {
            total: as_i64(size),
            available: 0,
            used: 0,
            unit: Unit::Bytes as i32,
        }]
    };
    Ok(proto::NodeGetVolumeStatsResponse {
        usage,
        volume_condition: Some(condition),
    })
}

/// Reads the first 4 KiB of the device, bypassing nothing but proving it answers.
fn read_probe(device: &Path) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = fs::File::open(device)?;
    let mut buf = [0u8; 4096];
    f.read(&mut buf).map(|_| ())
}
