//! The gRPC node service: thin handlers that check the request, take the volume's lock and
//! call one node operation ([`crate::node`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{call, required};
use crate::capability::Access;
use crate::driver::Driver;
use crate::error::Error;
use crate::node::{expand, publish, stage, stats, unpublish, unstage};
use crate::params::VolumeParams;
use crate::proto;
use crate::proto::node_server::Node;
use crate::secrets::SecretMap;
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

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<proto::NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let mut r = req.into_inner();
        // The KMS credentials: held where they are wiped after the call.
        let secrets = SecretMap::take(&mut r.secrets);
        let d = Arc::clone(&self.driver);
        call("NodeStageVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let staging = d.paths.check(
                "staging_target_path",
                required(&r.staging_target_path, "staging_target_path")?,
            )?;
            let cap = r
                .volume_capability
                .as_ref()
                .ok_or_else(|| Error::invalid("volume_capability is required"))?;
            let access = Access::parse(cap)?;
            let params = VolumeParams::parse(&r.volume_context)?;
            let locks = d.locks.clone();
            locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move {
                        stage(
                            &d,
                            &id,
                            &staging,
                            &access,
                            params.encryption.as_ref(),
                            &secrets,
                        )
                        .await
                    }
                })
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
            let staging = d.paths.check(
                "staging_target_path",
                required(&r.staging_target_path, "staging_target_path")?,
            )?;
            let locks = d.locks.clone();
            locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move { unstage(&d, &id, &staging).await }
                })
                .await?;
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
            let staging = d.paths.check(
                "staging_target_path",
                required(&r.staging_target_path, "staging_target_path")?,
            )?;
            let target = d
                .paths
                .check("target_path", required(&r.target_path, "target_path")?)?;
            let cap = r
                .volume_capability
                .as_ref()
                .ok_or_else(|| Error::invalid("volume_capability is required"))?;
            let access = Access::parse(cap)?;
            let read_only = r.readonly || Access::read_only_mode(cap);
            let locks = d.locks.clone();
            locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move { publish(&d, &id, &staging, &target, &access, read_only).await }
                })
                .await?;
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
            let target = d
                .paths
                .check("target_path", required(&r.target_path, "target_path")?)?;
            let locks = d.locks.clone();
            locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move { unpublish(&d, &id, &target).await }
                })
                .await?;
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
            let path = d
                .paths
                .locate("volume_path", required(&r.volume_path, "volume_path")?)?;
            stats(&d, &id, &path).await
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        req: Request<proto::NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        let mut r = req.into_inner();
        // Not used (expansion needs no KMS): wiped at once.
        drop(SecretMap::take(&mut r.secrets));
        let d = Arc::clone(&self.driver);
        call("NodeExpandVolume", &r.volume_id.clone(), async move {
            let id = VolumeId::parse(required(&r.volume_id, "volume_id")?)?;
            let path = d
                .paths
                .locate("volume_path", required(&r.volume_path, "volume_path")?)?;
            let locks = d.locks.clone();
            let capacity_bytes = locks
                .run(id.as_str(), {
                    let id = id.clone();
                    async move { expand(&d, &id, &path).await }
                })
                .await?;
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
            accessible_topology: self.driver.topology(),
        }))
    }
}
