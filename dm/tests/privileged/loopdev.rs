//! Privileged (VM) tests of `dm::loopdev`, loop devices without `losetup`: attach, find through
//! sysfs, set capacity after growing the file, detach; direct I/O on and off (on ext4, which has
//! O_DIRECT, and on the temporary directory, which may not); concurrent attaches get different
//! devices; a missing `/dev/loopN` node is made; a deleted file still finds its device. Run by
//! `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use dm::loopdev::{self, LoopControl, LoopDevice};
use testkit::vm::*;

/// A sparse file of `mib` MiB in `dir`; removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(dir: &Path, mib: u64) -> Image {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = dir.join(format!(
            "loopdev-{}-{}_delme.img",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        File::create(&p).unwrap().set_len(mib << 20).unwrap();
        Image(p)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// An attached loop device; detached on drop.
struct Attached(LoopDevice);

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = loopdev::detach(&self.0);
    }
}

fn attach(file: &Path, direct_io: bool) -> Attached {
    Attached(
        LoopControl::open()
            .unwrap()
            .attach(file, direct_io)
            .unwrap(),
    )
}

fn o_direct(path: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

/// `len` bytes at `offset` of a regular file, through the page cache.
fn file_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

#[test]
fn attach_find_grow_detach() {
    require_privileged!();
    let img = Image::new(&std::env::temp_dir(), 8);
    let dev = attach(&img.0, false);
    assert!(is_block_device(&dev.0.path), "{:?}", dev.0.path);
    assert_eq!(
        dev.0.path,
        PathBuf::from(format!("/dev/loop{}", dev.0.number))
    );
    assert_eq!(loopdev::find(&img.0).unwrap(), vec![dev.0.clone()]);
    assert!(!dev.0.direct_io().unwrap());
    assert_eq!(dev.0.size().unwrap(), 8 << 20);
    assert_eq!(blockdev_size(&dev.0.path), 8 << 20);
    // The kernel's view of the backing file is the canonical path.
    let shown =
        fs::read_to_string(format!("/sys/block/loop{}/loop/backing_file", dev.0.number)).unwrap();
    assert_eq!(
        shown.trim_end(),
        fs::canonicalize(&img.0).unwrap().to_str().unwrap()
    );

    // Data goes through to the file.
    let data = pattern(1, 4096);
    write_at(&dev.0.path, 4096, &data);
    assert_eq!(file_at(&img.0, 4096, 4096), data);

    OpenOptions::new()
        .write(true)
        .open(&img.0)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    assert_eq!(dev.0.size().unwrap(), 8 << 20, "not before set_capacity");
    loopdev::set_capacity(&dev.0).unwrap();
    assert_eq!(dev.0.size().unwrap(), 24 << 20);
    assert_eq!(blockdev_size(&dev.0.path), 24 << 20);

    loopdev::detach(&dev.0).unwrap();
    assert!(loopdev::find(&img.0).unwrap().is_empty());
    // Detaching what is no longer attached is success (a retried unstage).
    loopdev::detach(&dev.0).unwrap();
    assert!(loopdev::set_capacity(&dev.0).is_err(), "not attached");
}

/// On ext4 (O_DIRECT) the loop driver does direct I/O when asked and buffered I/O when not; on
/// the temporary directory (tmpfs in the VM: no O_DIRECT before Linux 6.6) asking for direct I/O
/// still attaches, buffered.
#[test]
fn direct_io_on_and_off() {
    require_privileged!();
    let outer = Image::new(&std::env::temp_dir(), 64);
    let outer_dev = attach(&outer.0, false);
    run(
        "mkfs.ext4",
        &["-q", "-F", "-b", "4096", outer_dev.0.path.to_str().unwrap()],
    );
    let mnt = Mount::new(&outer_dev.0.path, "ext4");
    {
        let on = Image::new(&mnt.dir, 8);
        let off = Image::new(&mnt.dir, 8);
        assert!(o_direct(&on.0));
        let dio = attach(&on.0, true);
        let buffered = attach(&off.0, false);
        assert!(dio.0.direct_io().unwrap(), "direct I/O asked on ext4");
        assert!(!buffered.0.direct_io().unwrap(), "buffered asked");
        let data = pattern(2, 4096);
        write_at(&dio.0.path, 0, &data);
        assert_eq!(read_at(&dio.0.path, 0, 4096), data);
        assert_eq!(file_at(&on.0, 0, 4096), data);
        assert_eq!(loopdev::find(&on.0).unwrap(), vec![dio.0.clone()]);
        assert_eq!(loopdev::find(&off.0).unwrap(), vec![buffered.0.clone()]);
    }
    mnt.unmount();

    let tmp = Image::new(&std::env::temp_dir(), 8);
    let dev = attach(&tmp.0, true);
    if !o_direct(&tmp.0) {
        assert!(!dev.0.direct_io().unwrap());
    }
    let data = pattern(3, 4096);
    write_at(&dev.0.path, 0, &data);
    assert_eq!(file_at(&tmp.0, 0, 4096), data);
}

/// Concurrent attaches race for the same free device; each gets its own.
#[test]
fn concurrent_attaches_get_different_devices() {
    require_privileged!();
    let images: Vec<Image> = (0..8)
        .map(|_| Image::new(&std::env::temp_dir(), 4))
        .collect();
    let control = LoopControl::open().unwrap();
    let devs: Vec<Attached> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|img| {
                let control = &control;
                s.spawn(move || Attached(control.attach(&img.0, false).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut numbers: Vec<u32> = devs.iter().map(|d| d.0.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), images.len(), "{numbers:?}");
    for (img, dev) in images.iter().zip(&devs) {
        assert_eq!(loopdev::find(&img.0).unwrap(), vec![dev.0.clone()]);
    }
}

/// Without udev nothing makes `/dev/loopN`: the API makes the node itself.
#[test]
fn a_missing_device_node_is_made() {
    require_privileged!();
    let img = Image::new(&std::env::temp_dir(), 4);
    let dev = attach(&img.0, false);
    fs::remove_file(&dev.0.path).unwrap();
    loopdev::set_capacity(&dev.0).unwrap();
    let md = fs::metadata(&dev.0.path).unwrap();
    assert!(md.file_type().is_block_device());
    loopdev::detach(&dev.0).unwrap();
    assert!(loopdev::find(&img.0).unwrap().is_empty());
}

/// The kernel shows a deleted backing file as `<path> (deleted)`; its path still finds the
/// device, so it can be detached.
#[test]
fn a_deleted_backing_file_still_finds_its_device() {
    require_privileged!();
    let img = Image::new(&std::env::temp_dir(), 4);
    let dev = attach(&img.0, false);
    fs::remove_file(&img.0).unwrap();
    let shown =
        fs::read_to_string(format!("/sys/block/loop{}/loop/backing_file", dev.0.number)).unwrap();
    assert!(shown.trim_end().ends_with(" (deleted)"), "{shown:?}");
    assert_eq!(loopdev::find(&img.0).unwrap(), vec![dev.0.clone()]);
    loopdev::detach(&dev.0).unwrap();
    assert!(loopdev::find(&img.0).unwrap().is_empty());
}
