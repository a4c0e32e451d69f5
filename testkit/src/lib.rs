//! Test support of the workspace, never part of a binary (a dev-dependency only).
//!
//! - [`driver`] (feature `driver`): in-memory fakes of the CSI driver's parts (backend,
//!   device-mapper, mounter, KMS, stage hooks), so that a whole NodeStage runs on any host,
//!   unprivileged, with a real LUKS2 format on a sparse file.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

#[cfg(feature = "driver")]
pub mod driver;
