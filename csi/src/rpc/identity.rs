//! The identity service: plugin name and version, capabilities, readiness.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::driver::Driver;
use crate::proto;
use crate::proto::identity_server::Identity;

/// The gRPC identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    driver: Arc<Driver>,
}

impl IdentityService {
    /// An identity service for the driver.
    pub fn new(driver: Arc<Driver>) -> Self {
        IdentityService { driver }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _req: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: self.driver.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        use proto::plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        let mut caps = vec![proto::PluginCapability {
            r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        }];
        if self.driver.mode.controller() {
            caps.push(proto::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            });
        }
        if self.driver.topology().is_some() {
            caps.push(proto::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::VolumeAccessibilityConstraints as i32,
                })),
            });
        }
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    /// Ready when what this process needs answers: device-mapper on a node.
    async fn probe(
        &self,
        _req: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        let ready = !self.driver.mode.node() || self.driver.mapper.ready();
        Ok(Response::new(proto::ProbeResponse { ready: Some(ready) }))
    }
}
