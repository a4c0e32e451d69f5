//! Test support shared by the workspace's tests and benches, in one crate (`publish = false`, a
//! dev-dependency; benches: a dependency), after rustls' `rustls-test` and cloud-hypervisor's
//! `test_infra`: nothing here is compiled into a shipped binary, and no crate shares test code
//! by file path.
//!
//! | module | what | feature |
//! |---|---|---|
//! | [`peers`] | real KMS servers on 127.0.0.1: OpenBao, PyKMIP, Cosmian KMS, a throwaway PKI | |
//! | [`cryptsetup`] | the reference: finding and running cryptsetup, images made with it | |
//! | [`cmd`] | running a program with or without stdin; a required tool | |
//! | [`fixtures`] | awkward passphrases, a worker pool over test cases | |
//! | `privileged` | `privileged()` and `require_privileged!`: root and device-mapper, or skip | `dm` |
//! | `vm` | the device-mapper rig: loop devices, mappings, mounts, cryptsetup devices | `dm` |
//! | `kube_apiserver` | an in-process Kubernetes API server for Secrets (TLS, faults) | `kube` |
//! | `keystore` | the contract every key store keeps, run against each | `driver` |
//! | `ceph` | a real single-node Ceph cluster (monitor, manager, OSD on memstore) per test binary | `ceph` |
//! | `driver` | in-memory fakes of the driver's parts (backend, device-mapper, mounter, KMS, stage hooks), so a whole NodeStage runs on any host, unprivileged, with a real LUKS2 format on a sparse file | `driver` |
//! | `plugin` | the real `onmetal-csi-driver serve` process over its socket, with its cleanup (VM tests, stage benchmark) | `plugin` |
//!
//! Without features this crate depends on no workspace crate, so luks2's and kms's tests build
//! it without device-mapper or the driver.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_docs)]

pub mod cmd;
pub mod cryptsetup;
pub mod fixtures;
pub mod peers;

#[cfg(feature = "dm")]
pub mod privileged;
#[cfg(feature = "dm")]
pub mod vm;

#[cfg(feature = "kube")]
pub mod kube_apiserver;

#[cfg(feature = "ceph")]
pub mod ceph;

#[cfg(feature = "driver")]
pub mod driver;
#[cfg(feature = "driver")]
pub mod keystore;
#[cfg(feature = "plugin")]
pub mod plugin;
