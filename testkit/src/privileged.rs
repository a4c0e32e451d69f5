//! The gate of every privileged test (dm's, the `luks2` command's, the driver's): root and a
//! kernel with device-mapper. Without them a test skips with a message — except when
//! `ONMETAL_VM_TEST=1` (set by the VM rig, `scripts/vm-test`), where that is a failure.

use std::os::unix::fs::MetadataExt;

/// True when privileged tests can run here. Panics when they cannot but must (in the VM rig).
pub fn privileged() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    // The node may exist while the kernel has no device-mapper (ENODEV): ask the kernel.
    let dm = match dm::DeviceMapper::new() {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{e}: {:?}", std::error::Error::source(&e)),
    };
    if root && dm == "ok" {
        return true;
    }
    let why = format!("root: {root}, device-mapper: {dm}");
    if std::env::var("ONMETAL_VM_TEST").as_deref() == Ok("1") {
        panic!("privileged test cannot run inside the VM rig ({why})");
    }
    eprintln!("SKIPPED: privileged test needs root and device-mapper ({why}); run scripts/vm-test");
    false
}

/// Skips the calling test unless it can run privileged ([`privileged`]).
#[macro_export]
macro_rules! require_privileged {
    () => {
        if !$crate::privileged::privileged() {
            return;
        }
    };
}
