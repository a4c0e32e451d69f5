//! The CSI driver `onmetal-csi-driver` (`csi.onmetal.de`): gRPC services on top of `luks2`
//! (LUKS2 headers), `dm` (dm-crypt activation) and `kms` (wrapping data keys).
//!
//! Where things live, by role (dependencies point down this list; `tests/module_graph.rs`
//! fails on any import circle):
//! - [`cli`]: the binary's subcommands (`serve`, `client`, `kms`, `volume`), their shared flags,
//!   the one runtime builder and the one exit-status table.
//! - [`rpc`]: the gRPC services ([`rpc::identity`], [`rpc::controller`], [`rpc::node`]: thin
//!   handlers) and the server; [`rpc::call`] applies the one error → code mapping.
//! - [`node`]: the node operations ([`node::stage`] is NodeStage top-down, [`node::open`] opens
//!   an encrypted volume: decide, then do; publish, expand, stats).
//! - [`controller`]: the controller operations (create, delete, sizes).
//! - [`driver`]: the driver's parts, each behind a trait, and the stage's test seam.
//! - [`crypt`]: the encrypted volume's steps (LUKS2 header, token, format), device-mapper
//!   behind [`crypt::mapper::Mapper`], the KMS behind [`crypt::keys::KeyWrapper`], and
//!   [`crypt::restore_header`] (rebuilding a destroyed header for `volume restore-header`).
//! - [`backend`]: where volumes come from (trait; the `local` backend of sparse files and loop
//!   devices, the `rbd` backend of Ceph RBD images; how a provider backend plugs in).
//! - [`keystore`]: where wrapped-key records live (trait; the `dir` store; the `kube` store of
//!   Secrets).
//! - [`params`]: StorageClass parameters and the volume context; [`capability`]: access modes;
//!   [`locks`] (one operation per volume; the work owns the lock past the CO's deadline),
//!   [`metrics`], [`volume_id`].
//! - [`host`]: the leaf under everything: commands (bounded) and the blocking pool, filesystem
//!   types, mounts (and whether one shows a volume), the paths node requests may name, step
//!   timing.
//! - [`error`]: the one error type and its one mapping to gRPC codes.
//! - [`proto`]: the CSI protocol, generated from `proto/csi.proto` (written from the spec).
//!
//! Never depends on: cryptsetup or libcryptsetup (none of them exist here), a system `protoc`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod capability;
pub mod cli;
pub mod controller;
pub mod crypt;
pub mod driver;
pub mod error;
pub mod host;
pub mod keystore;
pub mod locks;
pub mod metrics;
pub mod node;
pub mod params;
pub mod rpc;
pub mod secrets;
pub mod volume_id;

/// The CSI protocol (package `csi.v1`), generated at build time from `proto/csi.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use error::{Error, Kind, Result};
