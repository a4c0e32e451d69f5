//! The `luks2` command's device-mapper verbs (`open`, `close`, `resize`, `status`) and its
//! writers on block devices, against cryptsetup, as root on a kernel with device-mapper: in the
//! VM rig (`scripts/vm-test`, one boot with dm's and the driver's privileged tests) or on a
//! Linux host as root. Without them each test skips, except under the VM rig.
#![allow(clippy::unwrap_used, missing_docs)]

mod privileged {
    mod latency;
    mod locking;
    mod verbs;
}
