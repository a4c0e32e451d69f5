//! The rig of the privileged device-mapper tests (`dm/tests/privileged.rs`,
//! `luks2-cli/tests/privileged.rs`): loop devices, mappings, mounts, cryptsetup-formatted
//! devices, O_DIRECT reads and writes.
//!
//! These tests need root and a kernel with device-mapper, dm-crypt and loop devices: they run in
//! the VM (`scripts/vm-test`) or on a real Linux host as root, and start with
//! [`require_privileged!`](crate::require_privileged). Every loop device, mapping, mount and file
//! they create is removed again by a guard, also when the test fails. Mapping names end in
//! `_delme`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use dm::{
    ActivationPolicy, Bytes, CryptFlags, CryptSegment, CryptVolume, DeviceMapper, DmName,
    SectorSize, SegmentSize,
};

// One glob import (`use testkit::vm::*`) gives a privileged test its whole rig.
pub use crate::cmd::{run, run_with_stdin, try_run};
pub use crate::privileged::privileged;
pub use crate::require_privileged;

/// A unique mapping name for this test process.
pub fn unique_name(what: &str) -> DmName {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    DmName::new(&format!("{what}_{}_{n}_delme", std::process::id())).unwrap()
}

/// A sparse file attached to a loop device; detached and deleted on drop.
pub struct LoopDev {
    pub file: PathBuf,
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn new(mib: u64) -> LoopDev {
        let dir = std::env::temp_dir();
        static N: AtomicU32 = AtomicU32::new(0);
        let file = dir.join(format!(
            "dm-vm-test-{}-{}.img",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        File::create(&file).unwrap().set_len(mib << 20).unwrap();
        // util-linux losetup (busybox's has no --show).
        let dev = run("losetup", &["-f", "--show", file.to_str().unwrap()]);
        LoopDev {
            file,
            dev: PathBuf::from(dev.trim()),
        }
    }

    pub fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// A read-only handle on the loop device (what activation takes).
    pub fn handle(&self) -> File {
        File::open(&self.dev).unwrap()
    }

    /// Grows the backing file to `mib` and tells the loop driver.
    pub fn grow(&self, mib: u64) {
        self.set_size(mib);
    }

    /// Sets the backing file to `mib` (larger or smaller) and tells the loop driver.
    pub fn set_size(&self, mib: u64) {
        OpenOptions::new()
            .write(true)
            .open(&self.file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run("losetup", &["-c", self.path()]);
    }

    /// Bytes of the backing file actually allocated.
    pub fn allocated(&self) -> u64 {
        fs::metadata(&self.file).unwrap().blocks() * 512
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = try_run("losetup", &["-d", self.path()], None);
        let _ = fs::remove_file(&self.file);
    }
}

/// Removes a mapping (ours or cryptsetup's) on drop if it still exists.
pub struct MappingGuard(pub DmName);

impl Drop for MappingGuard {
    fn drop(&mut self) {
        if !mapping_exists(&self.0) {
            return;
        }
        let ok = DeviceMapper::new()
            .and_then(|dm| dm.deactivate(&self.0))
            .is_ok();
        if !ok {
            let _ = try_run("dmsetup", &["remove", "--retry", self.0.as_str()], None);
        }
    }
}

pub fn mapping_exists(name: &DmName) -> bool {
    try_run("dmsetup", &["info", name.as_str()], None)
        .status
        .success()
}

/// A mount point in the temporary directory; unmounted and removed on drop.
pub struct Mount {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mount {
    pub fn new(dev: &Path, fstype: &str) -> Mount {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dm-vm-mnt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        run(
            "mount",
            &["-t", fstype, dev.to_str().unwrap(), dir.to_str().unwrap()],
        );
        Mount { dir, mounted: true }
    }

    pub fn unmount(mut self) {
        run("umount", &[self.dir.to_str().unwrap()]);
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = try_run("umount", &["-l", self.dir.to_str().unwrap()], None);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Passphrase used for every cryptsetup-formatted test image.
pub const PASSPHRASE: &[u8] = b"vm-test passphrase";

/// Key-derivation choice for `cryptsetup luksFormat` (cheap settings: TCG is slow).
#[derive(Clone, Copy, Debug)]
pub enum Kdf {
    Pbkdf2,
    Argon2id,
}

/// `cryptsetup luksFormat` of `dev` as LUKS2 with aes-xts-plain64.
pub fn cryptsetup_format(dev: &str, key_bits: u32, sector_size: u32, kdf: Kdf) {
    let bits = key_bits.to_string();
    let sector = sector_size.to_string();
    let mut args = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        &bits,
        "--sector-size",
        &sector,
        "--key-file",
        "-",
    ];
    match kdf {
        Kdf::Pbkdf2 => args.extend([
            "--pbkdf",
            "pbkdf2",
            "--hash",
            "sha256",
            "--pbkdf-force-iterations",
            "1000",
        ]),
        Kdf::Argon2id => args.extend([
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "8192",
            "--pbkdf-parallel",
            "1",
            "--pbkdf-force-iterations",
            "4",
        ]),
    }
    args.push(dev);
    run_with_stdin("cryptsetup", &args, Some(PASSPHRASE));
}

/// The volume key of a cryptsetup-formatted device, from `luksDump --dump-volume-key` (the test
/// reference standing in for our own keyslot unlock). Stays in memory only.
pub fn cryptsetup_volume_key(dev: &str) -> Vec<u8> {
    let out = run_with_stdin(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            "-",
            dev,
        ],
        Some(PASSPHRASE),
    );
    let bits: usize = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("MK bits:"))
        .expect("MK bits in luksDump output")
        .trim()
        .parse()
        .unwrap();
    let start = out.find("MK dump:").expect("MK dump in luksDump output") + "MK dump:".len();
    let mut key = Vec::new();
    for tok in out[start..].split_ascii_whitespace() {
        if key.len() == bits / 8 {
            break;
        }
        key.push(u8::from_str_radix(tok, 16).expect("hex byte"));
    }
    assert_eq!(key.len(), bits / 8);
    key
}

/// The data segment, UUID and persistent flags of a LUKS2 device, from cryptsetup's JSON dump.
pub fn cryptsetup_volume(dev: &str) -> CryptVolume {
    let json = run("cryptsetup", &["luksDump", "--dump-json-metadata", dev]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let seg = &v["segments"]["0"];
    let num = |x: &serde_json::Value| -> u64 { x.as_str().unwrap().parse().unwrap() };
    let size = match seg["size"].as_str().unwrap() {
        "dynamic" => SegmentSize::Dynamic,
        n => SegmentSize::Fixed(Bytes(n.parse().unwrap())),
    };
    let flags = v["config"]["flags"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    let uuid = run("cryptsetup", &["luksUUID", dev]);
    CryptVolume::new(
        uuid.trim().parse().unwrap(),
        CryptSegment {
            offset: Bytes(num(&seg["offset"])),
            size,
            iv_tweak: num(&seg["iv_tweak"]),
            encryption: seg["encryption"].as_str().unwrap().to_owned(),
            sector_size: SectorSize::new(
                u32::try_from(seg["sector_size"].as_u64().unwrap()).unwrap(),
            )
            .unwrap(),
        },
        CryptFlags::from_luks2_names(flags),
        &ActivationPolicy::cryptsetup(),
    )
    .unwrap()
}

/// `cryptsetup open` of `dev` as `name` with the test passphrase.
pub fn cryptsetup_open(dev: &str, name: &DmName, extra: &[&str]) {
    let mut args = vec!["open", "--type", "luks2", "--key-file", "-"];
    args.extend_from_slice(extra);
    args.extend([dev, name.as_str()]);
    run_with_stdin("cryptsetup", &args, Some(PASSPHRASE));
}

/// A deterministic pseudo-random pattern (xorshift64*), different for each `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` at `offset` of a block device, bypassing the page cache, and flushes.
pub fn write_at(dev: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_direct())
        .open(dev)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", dev.display()));
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&aligned(data)).unwrap();
    f.sync_all().unwrap();
}

/// Reads `len` bytes at `offset` of a block device, bypassing the page cache.
pub fn read_at(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_direct())
        .open(dev)
        .unwrap_or_else(|e| panic!("open {}: {e}", dev.display()));
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = AlignedBuf::new(len);
    f.read_exact(buf.as_mut()).unwrap();
    buf.as_mut().to_vec()
}

fn libc_o_direct() -> i32 {
    libc::O_DIRECT
}

/// A 4096-aligned buffer (O_DIRECT needs aligned memory).
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let mem = vec![0u8; len + 4096];
        let start = mem.as_ptr().align_offset(4096);
        AlignedBuf { mem, start, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

fn aligned(data: &[u8]) -> AlignedCopy {
    let mut b = AlignedBuf::new(data.len());
    b.as_mut().copy_from_slice(data);
    AlignedCopy(b)
}

struct AlignedCopy(AlignedBuf);

impl std::ops::Deref for AlignedCopy {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.mem[self.0.start..self.0.start + self.0.len]
    }
}

/// Whether `path` is a block device node.
pub fn is_block_device(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// The table `dmsetup table --showkeys` prints for `name`.
pub fn dmsetup_table_showkeys(name: &DmName) -> String {
    run("dmsetup", &["table", "--showkeys", name.as_str()])
}

/// Size of a block device in bytes.
pub fn blockdev_size(dev: &Path) -> u64 {
    run("blockdev", &["--getsize64", dev.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap()
}

/// Whether the logon key `description` is in the user keyring.
pub fn key_in_user_keyring(description: &str) -> bool {
    try_run("keyctl", &["search", "@u", "logon", description], None)
        .status
        .success()
}

/// cryptsetup's lock file for the block device `dev` (`luks2::lock`: the same name
/// libcryptsetup takes, `/run/cryptsetup/L_<major>:<minor>`).
pub fn cryptsetup_lock_file(dev: &str) -> PathBuf {
    let rdev = fs::metadata(dev).unwrap().rdev();
    PathBuf::from(luks2::lock::CRYPTSETUP_LOCK_DIR).join(luks2::lock::resource_name(rdev))
}
