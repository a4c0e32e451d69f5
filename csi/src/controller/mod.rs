//! The controller operations: create (idempotent by name, sizes in whole MiB), delete (the
//! backing volume, then the wrapped-key record; never the KEK). The gRPC handlers are in
//! [`crate::rpc::controller`].

use tracing::info;

use crate::backend::BackendVolume;
use crate::capability::Access;
use crate::driver::Driver;
use crate::error::{Error, Kind, Result};
use crate::params::{MIN_ENCRYPTED_SIZE, VolumeParams};
use crate::proto;
use crate::volume_id::VolumeId;

/// Size of a volume when the request names none.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Sizes are whole MiB.
const ALIGN: u64 = 1 << 20;

/// The size to create for `range`: at least the request (and 1 GiB for encrypted volumes),
/// whole MiB, within the limit; OUT_OF_RANGE when the limit does not allow it.
pub fn size_for(range: Option<&proto::CapacityRange>, encrypted: bool) -> Result<u64> {
    let (req, lim) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if req < 0 || lim < 0 {
        return Err(Error::invalid("capacity_range must not be negative"));
    }
    let (req, lim) = (req as u64, lim as u64);
    if lim != 0 && lim < req {
        return Err(Error::invalid(format!(
            "capacity_range: limit_bytes {lim} is below required_bytes {req}"
        )));
    }
    let min = if encrypted { MIN_ENCRYPTED_SIZE } else { ALIGN };
    let mut size = if req == 0 && lim == 0 {
        DEFAULT_SIZE
    } else if req == 0 {
        lim.min(DEFAULT_SIZE)
    } else {
        req
    };
    size = size.max(min).div_ceil(ALIGN) * ALIGN;
    if lim != 0 && size > lim {
        return Err(Error::new(
            Kind::OutOfRange,
            if encrypted && lim < MIN_ENCRYPTED_SIZE {
                format!(
                    "encrypted volumes are at least {MIN_ENCRYPTED_SIZE} bytes (1 GiB); \
                     limit_bytes is {lim}"
                )
            } else {
                format!("no whole-MiB size of at least {req} bytes fits limit_bytes {lim}")
            },
        ));
    }
    Ok(size)
}

fn fits(range: Option<&proto::CapacityRange>, capacity: u64) -> bool {
    let Some(r) = range else { return true };
    let req = u64::try_from(r.required_bytes).unwrap_or(0);
    let lim = u64::try_from(r.limit_bytes).unwrap_or(0);
    capacity >= req && (lim == 0 || capacity <= lim)
}

/// The CSI volume of a backend volume (the caller adds where it is accessible:
/// [`Driver::topology`]).
pub fn to_proto(v: &BackendVolume, params: &VolumeParams) -> proto::Volume {
    proto::Volume {
        capacity_bytes: i64::try_from(v.capacity).unwrap_or(i64::MAX),
        volume_id: v.id.to_string(),
        volume_context: params.volume_context(),
        content_source: None,
        accessible_topology: vec![],
    }
}

/// A node-local backend makes volumes only where this controller runs: a request whose
/// requisite topology excludes that place cannot be served (RESOURCE_EXHAUSTED, so that the
/// CO tries elsewhere). Preferred topology needs no answer: there is one place.
fn check_requisite(d: &Driver, r: &proto::CreateVolumeRequest) -> Result<()> {
    let (Some(here), Some(req)) = (d.topology(), r.accessibility_requirements.as_ref()) else {
        return Ok(());
    };
    if req.requisite.is_empty() || req.requisite.iter().any(|t| t.segments == here.segments) {
        return Ok(());
    }
    Err(Error::new(
        Kind::ResourceExhausted,
        format!(
            "volumes of this node-local backend live on node {:?}, which the requisite \
             topology does not include",
            d.node_id
        ),
    ))
}

/// CreateVolume: idempotent by name.
pub async fn create(d: &Driver, r: &proto::CreateVolumeRequest) -> Result<proto::Volume> {
    if r.name.is_empty() {
        return Err(Error::invalid("name is required"));
    }
    if r.volume_capabilities.is_empty() {
        return Err(Error::invalid("volume_capabilities are required"));
    }
    for cap in &r.volume_capabilities {
        Access::parse(cap)?;
    }
    if r.volume_content_source.is_some() {
        return Err(Error::invalid(
            "volume_content_source: cloning and snapshots are not supported",
        ));
    }
    let params = VolumeParams::parse(&r.parameters)?;
    check_requisite(d, r)?;
    let id = d.backend.volume_id(&r.name, &params.provider)?;
    let range = r.capacity_range.as_ref();
    let stored = params.stored();
    if let Some(existing) = d.backend.get(&id).await? {
        return same_or_conflict(d, &existing, range, &stored, &params, &r.name);
    }
    let size = size_for(range, params.encryption.is_some())?;
    let created = d.backend.create(&id, size, &stored).await?;
    let vol = same_or_conflict(d, &created, range, &stored, &params, &r.name)?;
    info!(volume_id = %id, bytes = created.capacity, encrypted = params.encryption.is_some(), "created");
    Ok(vol)
}

fn same_or_conflict(
    d: &Driver,
    existing: &BackendVolume,
    range: Option<&proto::CapacityRange>,
    stored: &std::collections::BTreeMap<String, String>,
    params: &VolumeParams,
    name: &str,
) -> Result<proto::Volume> {
    if &existing.parameters != stored {
        return Err(Error::new(
            Kind::AlreadyExists,
            format!("volume {name:?} exists with other parameters"),
        ));
    }
    if !fits(range, existing.capacity) {
        return Err(Error::new(
            Kind::AlreadyExists,
            format!(
                "volume {name:?} exists with {} bytes, outside the requested range",
                existing.capacity
            ),
        ));
    }
    Ok(proto::Volume {
        accessible_topology: d.topology().into_iter().collect(),
        ..to_proto(existing, params)
    })
}

/// DeleteVolume: the backing volume first, then the wrapped-key record (in that order: a
/// record is never gone while its data still exists). Unknown volumes are OK.
pub async fn delete(d: &Driver, volume_id: &str) -> Result<()> {
    if volume_id.is_empty() {
        return Err(Error::invalid("volume_id is required"));
    }
    let Ok(id) = VolumeId::parse(volume_id) else {
        return Ok(());
    };
    d.backend.delete(&id).await?;
    d.store.delete(&id).await.map_err(Error::from)?;
    info!(volume_id = %id, "deleted (backing volume and wrapped-key record; the KEK is untouched)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(req: i64, lim: i64) -> proto::CapacityRange {
        proto::CapacityRange {
            required_bytes: req,
            limit_bytes: lim,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size_for(None, false).unwrap(), DEFAULT_SIZE);
        assert_eq!(size_for(Some(&range(1, 0)), false).unwrap(), 1 << 20);
        assert_eq!(size_for(Some(&range(10 << 20, 0)), true).unwrap(), 1 << 30);
        assert_eq!(
            size_for(Some(&range((1 << 30) + 1, 0)), true).unwrap(),
            (1 << 30) + (1 << 20)
        );
        let e = size_for(Some(&range(10 << 20, 100 << 20)), true).unwrap_err();
        assert_eq!(e.kind(), Kind::OutOfRange);
        assert!(e.message().contains("1 GiB"));
        assert_eq!(
            size_for(Some(&range(0, 512 << 20)), false).unwrap(),
            512 << 20
        );
        assert_eq!(
            size_for(Some(&range(5, 3)), false).unwrap_err().kind(),
            Kind::InvalidArgument
        );
    }
}
