//! The privileged tests of dm-crypt activation: root and a kernel with device-mapper, dm-crypt
//! and loop devices, in the VM rig (`scripts/vm-test`) or on a Linux host as root
//! (`ONMETAL_VM_TEST=1 cargo test -p dm --test privileged`). Without them each test skips,
//! except under the VM rig, where that is a failure (`testkit::privileged`). The rig
//! (`testkit::vm`) removes every loop device, mapping and mount again. One module per
//! behaviour, mapped in `dm/tests/README.md`.
#![allow(clippy::unwrap_used, missing_docs)]

mod privileged {
    mod compat;
    mod exclusive;
    mod fs;
    mod lifecycle;
    mod locking;
    mod loopdev;
    mod secure_status;
    mod throughput;
    mod udev;
}
