//! The gRPC controller service: create, delete, expand, validate, list, capacity. Handlers
//! check the request, take the lock and call the controller operations ([`crate::controller`]);
//! ListVolumes pages here.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::info;

use super::call;
use crate::capability::Access;
use crate::controller::{create, delete, size_for, to_proto};
use crate::driver::Driver;
use crate::error::{Error, Kind, Result};
use crate::params::VolumeParams;
use crate::proto;
use crate::proto::controller_server::Controller;
use crate::secrets::SecretMap;
use crate::volume_id::VolumeId;

/// The gRPC controller service.
#[derive(Debug, Clone)]
pub struct ControllerService {
    driver: Arc<Driver>,
}

impl ControllerService {
    /// A controller service over the driver's parts.
    pub fn new(driver: Arc<Driver>) -> Self {
        ControllerService { driver }
    }
}

/// The ListVolumes `next_token` after a page ending with volume `last`: `<last>.<check>`, the
/// check being 16 hex digits of SHA-256 over a fixed label and the ID. Only such a token is
/// accepted as `starting_token` ([`token_position`]); the check is no secret (a forged token is
/// only a position), it tells the driver's tokens from any other string, which the CSI spec
/// answers with ABORTED. A token stays valid when its volume is deleted: paging is by position.
fn page_token(last: &VolumeId) -> String {
    format!("{last}.{}", token_check(last))
}

fn token_check(id: &VolumeId) -> String {
    let mut h = Sha256::new();
    h.update(b"onmetal-csi ListVolumes token\0");
    h.update(id.as_str().as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The volume ID a `starting_token` made by [`page_token`] names; ABORTED for any other string.
fn token_position(token: &str) -> Result<VolumeId> {
    let invalid = || {
        Error::new(
            Kind::Aborted,
            format!("starting_token {token:?} is not a token this driver handed out"),
        )
    };
    let (id, check) = token.rsplit_once('.').ok_or_else(invalid)?;
    let id = VolumeId::parse(id).map_err(|_| invalid())?;
    if check != token_check(&id) {
        return Err(invalid());
    }
    Ok(id)
}

fn known(id: &str) -> Result<VolumeId> {
    if id.is_empty() {
        return Err(Error::invalid("volume_id is required"));
    }
    VolumeId::parse(id)
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<proto::CreateVolumeRequest>,
    ) -> std::result::Result<Response<proto::CreateVolumeResponse>, Status> {
        let mut r = req.into_inner();
        // Secrets are not used by the controller: wiped at once.
        drop(SecretMap::take(&mut r.secrets));
        let d = Arc::clone(&self.driver);
        let lock_name = format!("create/{}", r.name);
        call("CreateVolume", &r.name.clone(), async move {
            let locks = d.locks.clone();
            let volume = locks
                .run(&lock_name, async move { create(&d, &r).await })
                .await?;
            Ok(proto::CreateVolumeResponse {
                volume: Some(volume),
            })
        })
        .await
    }

    async fn delete_volume(
        &self,
        req: Request<proto::DeleteVolumeRequest>,
    ) -> std::result::Result<Response<proto::DeleteVolumeResponse>, Status> {
        let mut r = req.into_inner();
        // Secrets are not used by the controller: wiped at once.
        drop(SecretMap::take(&mut r.secrets));
        let d = Arc::clone(&self.driver);
        call("DeleteVolume", &r.volume_id.clone(), async move {
            let (locks, id) = (d.locks.clone(), r.volume_id.clone());
            locks
                .run(&id, async move { delete(&d, &r.volume_id).await })
                .await?;
            Ok(proto::DeleteVolumeResponse {})
        })
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> std::result::Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call(
            "ValidateVolumeCapabilities",
            &r.volume_id.clone(),
            async move {
                let id = known(&r.volume_id)?;
                if r.volume_capabilities.is_empty() {
                    return Err(Error::invalid("volume_capabilities are required"));
                }
                if d.backend.get(&id).await?.is_none() {
                    return Err(Error::not_found(format!("volume {id} does not exist")));
                }
                for cap in &r.volume_capabilities {
                    if let Err(e) = Access::parse(cap) {
                        return Ok(proto::ValidateVolumeCapabilitiesResponse {
                            confirmed: None,
                            message: e.message().to_owned(),
                        });
                    }
                }
                Ok(proto::ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                        volume_context: r.volume_context.clone(),
                        volume_capabilities: r.volume_capabilities.clone(),
                        parameters: r.parameters.clone(),
                        mutable_parameters: Default::default(),
                    }),
                    message: String::new(),
                })
            },
        )
        .await
    }

    async fn list_volumes(
        &self,
        req: Request<proto::ListVolumesRequest>,
    ) -> std::result::Result<Response<proto::ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("ListVolumes", "", async move {
            // Volumes in ID order; a token names the last ID of the previous page (see
            // `page_token`), so deleting or adding volumes between pages neither repeats nor
            // breaks anything.
            let all = d.backend.list().await?;
            if r.max_entries < 0 {
                return Err(Error::invalid("max_entries must not be negative"));
            }
            let after = if r.starting_token.is_empty() {
                None
            } else {
                Some(token_position(&r.starting_token)?)
            };
            let max = if r.max_entries == 0 {
                usize::MAX
            } else {
                r.max_entries as usize
            };
            let rest: Vec<_> = all
                .iter()
                .filter(|v| after.as_ref().is_none_or(|a| &v.id > a))
                .collect();
            let more = rest.len() > max;
            let page: Vec<_> = rest.into_iter().take(max).collect();
            let next = if more {
                page.last().map(|v| page_token(&v.id)).unwrap_or_default()
            } else {
                String::new()
            };
            let entries = page
                .into_iter()
                .map(|v| {
                    let params = VolumeParams::parse(&v.parameters).unwrap_or(VolumeParams {
                        encryption: None,
                        provider: v.parameters.clone(),
                    });
                    proto::list_volumes_response::Entry {
                        volume: Some(proto::Volume {
                            accessible_topology: d.topology().into_iter().collect(),
                            ..to_proto(v, &params)
                        }),
                        status: None,
                    }
                })
                .collect();
            Ok(proto::ListVolumesResponse {
                entries,
                next_token: next,
            })
        })
        .await
    }

    async fn get_capacity(
        &self,
        req: Request<proto::GetCapacityRequest>,
    ) -> std::result::Result<Response<proto::GetCapacityResponse>, Status> {
        let r = req.into_inner();
        let d = Arc::clone(&self.driver);
        call("GetCapacity", "", async move {
            let params = VolumeParams::parse(&r.parameters)?;
            let avail = d.backend.available(&params.provider).await?;
            Ok(proto::GetCapacityResponse {
                available_capacity: i64::try_from(avail).unwrap_or(i64::MAX),
                maximum_volume_size: None,
                minimum_volume_size: None,
            })
        })
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _req: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        use proto::controller_service_capability::{Rpc, Type, rpc::Type as T};
        let caps = [
            T::CreateDeleteVolume,
            T::ExpandVolume,
            T::ListVolumes,
            T::GetCapacity,
        ]
        .into_iter()
        .map(|t| proto::ControllerServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        })
        .collect();
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn controller_expand_volume(
        &self,
        req: Request<proto::ControllerExpandVolumeRequest>,
    ) -> std::result::Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        let mut r = req.into_inner();
        // Secrets are not used by the controller: wiped at once.
        drop(SecretMap::take(&mut r.secrets));
        let d = Arc::clone(&self.driver);
        call("ControllerExpandVolume", &r.volume_id.clone(), async move {
            let id = known(&r.volume_id)?;
            let range = r
                .capacity_range
                .as_ref()
                .ok_or_else(|| Error::invalid("capacity_range is required"))?;
            let range = *range;
            let locks = d.locks.clone();
            let capacity = locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move {
                        let vol = d.backend.get(&id).await?.ok_or_else(|| {
                            Error::not_found(format!("volume {id} does not exist"))
                        })?;
                        let encrypted = VolumeParams::parse(&vol.parameters)
                            .map(|p| p.encryption.is_some())
                            .unwrap_or(false);
                        let size = size_for(Some(&range), encrypted)?;
                        d.backend.expand(&id, size).await
                    }
                })
                .await?;
            info!(volume_id = %id, bytes = capacity, "expanded backing volume");
            Ok(proto::ControllerExpandVolumeResponse {
                capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
                node_expansion_required: true,
            })
        })
        .await
    }
}
