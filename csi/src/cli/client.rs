//! `onmetal-csi-driver client`: a small CSI client over the Unix socket, for operators, the
//! quick start and the tests. Every verb prints what it did and its latency.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::capability::capability;
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::controller_client::ControllerClient;
use crate::proto::identity_client::IdentityClient;
use crate::proto::node_client::NodeClient;
use crate::proto::volume_capability::access_mode::Mode;
use crate::rpc::server::socket_path;

/// Connects to the driver's Unix socket.
pub async fn connect(endpoint: &str) -> Result<Channel> {
    let path = socket_path(endpoint)?;
    Endpoint::try_from("http://[::1]:50051")
        .map_err(|e| Error::internal(e.to_string()))?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| Error::unavailable(format!("connecting to {endpoint}: {e}")))
}

/// `--param k=v` / `--context k=v` values.
fn pairs(v: &[String]) -> Result<HashMap<String, String>> {
    v.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Error::invalid(format!("{kv:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// Parses sizes like `1073741824`, `1Gi`, `512Mi`.
pub fn parse_size(s: &str) -> Result<i64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("Gi") {
        (n, 1i64 << 30)
    } else if let Some(n) = s.strip_suffix("Mi") {
        (n, 1i64 << 20)
    } else if let Some(n) = s.strip_suffix("Ki") {
        (n, 1i64 << 10)
    } else {
        (s, 1)
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Error::invalid(format!("size {s:?}: expected bytes or NGi/NMi/NKi")))
}

/// How the volume is consumed (shared by the node verbs).
#[derive(Args, Clone, Debug)]
pub struct AccessArgs {
    /// Raw block volume (default: a filesystem).
    #[arg(long)]
    block: bool,
    /// Filesystem type (ext4 or xfs).
    #[arg(long, default_value = "ext4")]
    fs_type: String,
}

impl AccessArgs {
    fn capability(&self) -> proto::VolumeCapability {
        capability(self.block, &self.fs_type, Mode::SingleNodeWriter)
    }
}

/// The client verbs.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Plugin info, capabilities and readiness.
    Info,
    /// CreateVolume; prints the volume id and context.
    Create {
        /// Volume name (idempotency key).
        #[arg(long)]
        name: String,
        /// Requested size (bytes, or NGi / NMi).
        #[arg(long, default_value = "1Gi")]
        size: String,
        /// StorageClass parameter KEY=VALUE (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Block or filesystem.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// DeleteVolume.
    Delete {
        /// The volume.
        #[arg(long)]
        volume_id: String,
    },
    /// ControllerExpandVolume.
    Expand {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// New size (bytes, or NGi / NMi).
        #[arg(long)]
        size: String,
    },
    /// NodeStageVolume (the volume context is looked up with ListVolumes unless given).
    Stage {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// Staging path.
        #[arg(long)]
        staging_path: PathBuf,
        /// Volume context KEY=VALUE (repeatable); default: from ListVolumes.
        #[arg(long = "context")]
        context: Vec<String>,
        /// Directory with the node-stage Secret's keys as files (token, ca.crt, ...).
        #[arg(long)]
        secret_dir: Option<PathBuf>,
        /// Block or filesystem.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// NodeUnstageVolume.
    Unstage {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// Staging path.
        #[arg(long)]
        staging_path: PathBuf,
    },
    /// NodePublishVolume.
    Publish {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// Staging path.
        #[arg(long)]
        staging_path: PathBuf,
        /// Target path.
        #[arg(long)]
        target_path: PathBuf,
        /// Publish read-only.
        #[arg(long)]
        readonly: bool,
        /// Block or filesystem.
        #[command(flatten)]
        access: AccessArgs,
    },
    /// NodeUnpublishVolume.
    Unpublish {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// Target path.
        #[arg(long)]
        target_path: PathBuf,
    },
    /// NodeExpandVolume.
    NodeExpand {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// The published (or staging) path.
        #[arg(long)]
        volume_path: PathBuf,
        /// Directory with the node-expand Secret's keys as files.
        #[arg(long)]
        secret_dir: Option<PathBuf>,
    },
    /// NodeGetVolumeStats.
    Stats {
        /// The volume.
        #[arg(long)]
        volume_id: String,
        /// The published (or staging) path.
        #[arg(long)]
        volume_path: PathBuf,
    },
    /// ListVolumes.
    List,
}

/// The driver's answer as an error of the same kind (exit codes follow it).
fn status(e: tonic::Status) -> Error {
    Error::new(
        crate::Kind::from_code(e.code()),
        format!("{:?}: {}", e.code(), e.message()),
    )
}

/// The volume context of `volume_id` from ListVolumes.
async fn context_of(ch: &Channel, volume_id: &str) -> Result<HashMap<String, String>> {
    let list = ControllerClient::new(ch.clone())
        .list_volumes(proto::ListVolumesRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    list.entries
        .into_iter()
        .filter_map(|e| e.volume)
        .find(|v| v.volume_id == volume_id)
        .map(|v| v.volume_context)
        .ok_or_else(|| Error::not_found(format!("ListVolumes does not show {volume_id}")))
}

/// Runs one verb; prints the result and the latency.
pub async fn run(endpoint: &str, cmd: ClientCommand) -> Result<()> {
    let ch = connect(endpoint).await?;
    match cmd {
        ClientCommand::Info => info(ch).await,
        ClientCommand::Create {
            name,
            size,
            params,
            access,
        } => create(ch, name, &size, &params, &access).await,
        ClientCommand::Delete { volume_id } => delete(ch, volume_id).await,
        ClientCommand::Expand { volume_id, size } => expand(ch, volume_id, &size).await,
        ClientCommand::Stage {
            volume_id,
            staging_path,
            context,
            secret_dir,
            access,
        } => stage(ch, volume_id, &staging_path, &context, secret_dir, &access).await,
        ClientCommand::Unstage {
            volume_id,
            staging_path,
        } => unstage(ch, volume_id, &staging_path).await,
        ClientCommand::Publish {
            volume_id,
            staging_path,
            target_path,
            readonly,
            access,
        } => {
            publish(
                ch,
                volume_id,
                &staging_path,
                &target_path,
                readonly,
                &access,
            )
            .await
        }
        ClientCommand::Unpublish {
            volume_id,
            target_path,
        } => unpublish(ch, volume_id, &target_path).await,
        ClientCommand::NodeExpand {
            volume_id,
            volume_path,
            secret_dir,
        } => node_expand(ch, volume_id, &volume_path, secret_dir).await,
        ClientCommand::Stats {
            volume_id,
            volume_path,
        } => stats(ch, volume_id, &volume_path).await,
        ClientCommand::List => list(ch).await,
    }
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The Secret's keys from `--secret-dir` (none without it).
fn secrets_from(dir: Option<PathBuf>) -> Result<HashMap<String, String>> {
    match &dir {
        Some(d) => Ok((*crate::cli::args::read_secret_dir(d)?).clone()),
        None => Ok(HashMap::new()),
    }
}

async fn info(ch: Channel) -> Result<()> {
    let mut id = IdentityClient::new(ch);
    let info = id
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let caps = id
        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let probe = id
        .probe(proto::ProbeRequest {})
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "plugin {} {} ready={} capabilities={:?}",
        info.name,
        info.vendor_version,
        probe.ready.unwrap_or(false),
        caps.capabilities
    );
    Ok(())
}

async fn create(
    ch: Channel,
    name: String,
    size: &str,
    params: &[String],
    access: &AccessArgs,
) -> Result<()> {
    let t = Instant::now();
    let v = ControllerClient::new(ch)
        .create_volume(proto::CreateVolumeRequest {
            name,
            capacity_range: Some(proto::CapacityRange {
                required_bytes: parse_size(size)?,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![access.capability()],
            parameters: pairs(params)?,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner()
        .volume
        .ok_or_else(|| Error::internal("CreateVolume returned no volume"))?;
    let mut ctx: Vec<_> = v.volume_context.iter().collect();
    ctx.sort();
    println!(
        "created volume_id={} capacity_bytes={} context={:?} ({:.1} ms)",
        v.volume_id,
        v.capacity_bytes,
        ctx,
        ms(t)
    );
    Ok(())
}

async fn delete(ch: Channel, volume_id: String) -> Result<()> {
    let t = Instant::now();
    ControllerClient::new(ch)
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: volume_id.clone(),
            secrets: HashMap::new(),
        })
        .await
        .map_err(status)?;
    println!("deleted {volume_id} ({:.1} ms)", ms(t));
    Ok(())
}

async fn expand(ch: Channel, volume_id: String, size: &str) -> Result<()> {
    let t = Instant::now();
    let r = ControllerClient::new(ch)
        .controller_expand_volume(proto::ControllerExpandVolumeRequest {
            volume_id: volume_id.clone(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: parse_size(size)?,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "expanded {volume_id} capacity_bytes={} node_expansion_required={} ({:.1} ms)",
        r.capacity_bytes,
        r.node_expansion_required,
        ms(t)
    );
    Ok(())
}

async fn stage(
    ch: Channel,
    volume_id: String,
    staging_path: &Path,
    context: &[String],
    secret_dir: Option<PathBuf>,
    access: &AccessArgs,
) -> Result<()> {
    let volume_context = if context.is_empty() {
        context_of(&ch, &volume_id).await?
    } else {
        pairs(context)?
    };
    let secrets = secrets_from(secret_dir)?;
    // The latency of the stage alone, without the context lookup.
    let t = Instant::now();
    NodeClient::new(ch)
        .node_stage_volume(proto::NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging_path.display().to_string(),
            volume_capability: Some(access.capability()),
            secrets,
            volume_context,
            publish_context: HashMap::new(),
        })
        .await
        .map_err(status)?;
    println!(
        "staged {volume_id} at {} ({:.1} ms)",
        staging_path.display(),
        ms(t)
    );
    Ok(())
}

async fn unstage(ch: Channel, volume_id: String, staging_path: &Path) -> Result<()> {
    let t = Instant::now();
    NodeClient::new(ch)
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging_path.display().to_string(),
        })
        .await
        .map_err(status)?;
    println!("unstaged {volume_id} ({:.1} ms)", ms(t));
    Ok(())
}

async fn publish(
    ch: Channel,
    volume_id: String,
    staging_path: &Path,
    target_path: &Path,
    readonly: bool,
    access: &AccessArgs,
) -> Result<()> {
    let t = Instant::now();
    NodeClient::new(ch)
        .node_publish_volume(proto::NodePublishVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging_path.display().to_string(),
            target_path: target_path.display().to_string(),
            volume_capability: Some(access.capability()),
            readonly,
            ..Default::default()
        })
        .await
        .map_err(status)?;
    println!(
        "published {volume_id} at {} ({:.1} ms)",
        target_path.display(),
        ms(t)
    );
    Ok(())
}

async fn unpublish(ch: Channel, volume_id: String, target_path: &Path) -> Result<()> {
    let t = Instant::now();
    NodeClient::new(ch)
        .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: target_path.display().to_string(),
        })
        .await
        .map_err(status)?;
    println!("unpublished {volume_id} ({:.1} ms)", ms(t));
    Ok(())
}

async fn node_expand(
    ch: Channel,
    volume_id: String,
    volume_path: &Path,
    secret_dir: Option<PathBuf>,
) -> Result<()> {
    let secrets = secrets_from(secret_dir)?;
    let t = Instant::now();
    let r = NodeClient::new(ch)
        .node_expand_volume(proto::NodeExpandVolumeRequest {
            volume_id: volume_id.clone(),
            volume_path: volume_path.display().to_string(),
            secrets,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "node-expanded {volume_id} capacity_bytes={} ({:.1} ms)",
        r.capacity_bytes,
        ms(t)
    );
    Ok(())
}

async fn stats(ch: Channel, volume_id: String, volume_path: &Path) -> Result<()> {
    let r = NodeClient::new(ch)
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: volume_id.clone(),
            volume_path: volume_path.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    for u in &r.usage {
        println!(
            "stats {volume_id} {:?}: total={} used={} available={}",
            proto::volume_usage::Unit::try_from(u.unit)
                .unwrap_or(proto::volume_usage::Unit::Unknown),
            u.total,
            u.used,
            u.available
        );
    }
    if let Some(c) = r.volume_condition {
        println!("condition abnormal={} message={:?}", c.abnormal, c.message);
    }
    Ok(())
}

async fn list(ch: Channel) -> Result<()> {
    let list = ControllerClient::new(ch)
        .list_volumes(proto::ListVolumesRequest::default())
        .await
        .map_err(status)?
        .into_inner();
    for e in list.entries.into_iter().filter_map(|e| e.volume) {
        println!(
            "{} capacity_bytes={} encrypted={}",
            e.volume_id,
            e.capacity_bytes,
            e.volume_context
                .get("encryptionEnabled")
                .map_or("false", String::as_str)
        );
    }
    Ok(())
}
