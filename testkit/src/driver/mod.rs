//! Fakes of the CSI driver's parts, and a [`StageRig`] that puts them together: the whole
//! NodeStage (first stage, later stage, crash points, rollback) runs on the host as an
//! unprivileged test. The LUKS2 side is real (the device is a sparse file that the `luks2`
//! crate formats and reads, the DEK is checked against its header); what is faked is only what
//! needs root or a server: loop devices ([`FileBackend`]), device-mapper and the keyring
//! ([`FakeMapper`]), mkfs and mount ([`RecordingMounter`]), the KMS ([`FakeKms`]). The VM
//! tests (`csi/tests/vm_*.rs`) stay the proof against the real kernel.

mod backend;
mod hooks;
mod kms;
mod mapper;
mod mounter;
mod rig;

pub use backend::FileBackend;
pub use hooks::{FailAt, Failure, Gate};
pub use kms::FakeKms;
pub use mapper::FakeMapper;
pub use mounter::RecordingMounter;
pub use rig::StageRig;
