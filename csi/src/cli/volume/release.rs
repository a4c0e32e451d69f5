//! `volume release --volume-id V`: releases an RBD volume that a dead node still holds (see
//! [`crate::backend::RbdBackend::release`]): every holder is blocklisted on the OSDs, then its
//! lock is broken, so the volume stages on another node. Refused while a holder is alive (still
//! watching the image) unless `--live` says to fence it anyway. Prints what it did. Never run by
//! the driver itself: NodeStage never takes a volume from another node.

use std::io::Write;

use clap::Args;

use super::super::args::CephArgs;
use crate::backend::RbdBackend;
use crate::error::{Error, Result};
use crate::volume_id::VolumeId;

/// `volume release` flags.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The volume ID (`<pool>.<image>`).
    #[arg(long, value_name = "V")]
    volume_id: String,
    /// Fence holders that still watch the image (a node that is alive but must lose the volume:
    /// its mapping stops working).
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    ceph: CephArgs,
}

/// Runs `volume release`, printing one line per fenced client and broken lock.
pub async fn run(a: &ReleaseArgs, out: &mut impl Write) -> Result<()> {
    let id =
        VolumeId::parse(&a.volume_id).map_err(|e| Error::invalid(format!("--volume-id: {e}")))?;
    let backend = RbdBackend::open(a.ceph.config())?;
    let done = backend.release(&id, a.live).await?;
    let w = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|e| Error::io("writing to stdout", e))
    };
    for addr in &done.blocklisted {
        w(out, format!("blocklisted {addr}"))?;
    }
    for lock in &done.broken {
        w(out, format!("broke the lock of {lock}"))?;
    }
    if done.blocklisted.is_empty() && done.broken.is_empty() {
        w(out, format!("volume {id}: nobody holds it, nothing to do"))?;
    } else {
        w(
            out,
            format!("volume {id} released: it can be staged on another node"),
        )?;
    }
    Ok(())
}
