//! Privileged (VM) test: activation and removal with a udev daemon running (a host, or a CSI
//! node plugin with /run/udev mounted). The devicemapper crate then waits for udev's dm rules
//! (cookie semaphores), udev makes `/dev/mapper/<name>` a symlink to `../dm-N`, and removes it
//! again. The other tests cover the udev-less case (we create the node ourselves).
//!
//! In the VM there is no udev daemon: the rig passes `VM_UDEVD`, the path of Debian's
//! `systemd-udevd` (from the udev package, unpacked in the rig's cache), and this test runs it
//! for its duration. On a host where udev already runs, that daemon is used.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dm::{ActivateOptions, DeviceMapper, DmName};
use testkit::vm::*;

const CONTROL: &str = "/run/udev/control";

/// A udev daemon we started; stopped (SIGTERM, by pid) on drop, and its control socket removed so
/// that later activations in this VM do not wait for a udev that is gone.
struct Udevd(Child);

impl Drop for Udevd {
    fn drop(&mut self) {
        let _ = try_run("kill", &["-TERM", &self.0.id().to_string()], None);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        let _ = std::fs::remove_file(CONTROL);
    }
}

fn start_udevd() -> Option<Option<Udevd>> {
    if Path::new(CONTROL).exists() {
        return Some(None); // already running (real host)
    }
    let Ok(udevd) = std::env::var("VM_UDEVD") else {
        if std::env::var("ONMETAL_VM_TEST").as_deref() == Ok("1") {
            panic!("VM_UDEVD is not set: the VM rig must provide systemd-udevd");
        }
        eprintln!("SKIPPED: no udev daemon running and VM_UDEVD not set");
        return None;
    };
    let child = Command::new(&udevd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {udevd}: {e}"));
    let guard = Udevd(child);
    let t = Instant::now();
    while !Path::new(CONTROL).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "udevd did not create its control socket"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Some(guard))
}

/// Runs `f` on another thread; fails the test if it takes longer than `limit` (a udev sync that
/// never completes would otherwise hang the VM run).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?} (udev sync hung?)"))
}

#[test]
fn vm_udev_makes_and_removes_the_node() {
    require_privileged!();
    let Some(_udevd) = start_udevd() else {
        return;
    };
    let lo = LoopDev::new(48);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let name = unique_name("udev");
    let _g = MappingGuard(name.clone());

    let dev = lo.dev.clone();
    let n = name.clone();
    let st = within(Duration::from_secs(120), "activation", move || {
        DeviceMapper::new().unwrap().activate(
            &n,
            &std::fs::File::open(&dev).unwrap(),
            &volume,
            &key,
            &ActivateOptions::default(),
        )
    })
    .unwrap();
    let link = std::fs::symlink_metadata(&st.path).unwrap();
    assert!(
        link.file_type().is_symlink(),
        "with udev, /dev/mapper/{name} is udev's symlink"
    );
    let target = std::fs::canonicalize(&st.path).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/sys/dev/block/{}/uevent", st.device))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(|d| Path::new("/dev").join(d)),
        Some(target)
    );
    write_at(&st.path, 0, &pattern(60, 65536));
    assert_eq!(read_at(&st.path, 0, 65536), pattern(60, 65536));

    let n: DmName = name.clone();
    within(Duration::from_secs(120), "deactivation", move || {
        DeviceMapper::new().unwrap().deactivate(&n)
    })
    .unwrap();
    assert!(!mapping_exists(&name));
    let t = Instant::now();
    while std::fs::symlink_metadata(&st.path).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "udev did not remove {}",
            st.path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
