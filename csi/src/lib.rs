//! The CSI driver `onmetal-csi-driver` (`csi.onmetal.de`): gRPC services on top of `luks2`
//! (LUKS2 headers), `dm` (dm-crypt activation) and `kms` (wrapping data keys).
//!
//! Where things live (the driver reads as the steps it takes):
//! - [`identity`], [`controller`], [`node`]: the three gRPC services; handlers are thin and
//!   call one function each ([`node::stage`] is NodeStage top-down).
//! - [`encrypted`]: the encrypted volume's steps (record, KMS, LUKS2 header and token, dm).
//! - [`recovery`]: rebuilding a destroyed LUKS2 header from the record (`volume
//!   restore-header`, after checking that the data decrypts to a filesystem under the key).
//! - [`backend`]: where volumes come from (trait; the `local` backend of sparse files and loop
//!   devices; how a provider backend plugs in).
//! - [`keystore`]: where wrapped-key records live (trait; the `dir` store; the `kube` store of
//!   Secrets).
//! - [`volume_cmd`]: the operator's `volume` subcommands (`list`, `rewrap`, `key`, `inspect`,
//!   `restore-header`); [`recovery`]: the header rebuild behind `restore-header`.
//! - [`mount`]: mkfs, mounts, resize, usage (trait; the system implementation).
//! - [`params`]: StorageClass parameters and the volume context; [`capability`]: access modes.
//! - [`error`]: the one error type and its one mapping to gRPC codes.
//! - [`server`] (`serve`), [`client`] (`client`), [`metrics`], [`locks`], [`volume_id`].
//! - [`proto`]: the CSI protocol, generated from `proto/csi.proto` (written from the spec).
//!
//! Never depends on: cryptsetup or libcryptsetup (none of them exist here), a system `protoc`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod capability;
pub mod client;
pub mod controller;
pub mod driver;
pub mod encrypted;
pub mod error;
pub mod identity;
pub mod keystore;
pub mod locks;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod params;
pub mod recovery;
pub mod server;
pub mod volume_cmd;
pub mod volume_id;

/// The CSI protocol (package `csi.v1`), generated at build time from `proto/csi.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use error::{Error, Kind, Result};
