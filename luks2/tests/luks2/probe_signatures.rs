//! Signature detection and the strict blank probe against images made by the real tools
//! (mkfs.*, mkswap, sgdisk, sfdisk, pvcreate on a loop device, make-bcache, mksquashfs,
//! genisoimage, cryptsetup, veritysetup) and against real mdadm superblocks (testdata/mdraid,
//! made by `mdadm --create` in the VM rig: testdata/make-mdraid.sh).
//!
//! A test whose tool is missing prints a skip note and returns, except under CI (`CI=true`),
//! where it fails: scripts/install-prereqs.sh installs every tool used here.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use luks2::format::{self, Blankness, DataFound, FormatOptions, MdVersion, Signature};

const MIB: u64 = 1024 * 1024;

/// The tool `name` (searched in the sbin directories and PATH), or `None` after a skip note;
/// panics under CI, naming the Debian package.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let dirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    let found = dirs
        .iter()
        .map(|d| Path::new(d).join(name))
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required in CI (install {package}) but was not found");
        }
        eprintln!("SKIP: {name} not found; install {package} to run this test");
    }
    found
}

fn run(prog: &Path, args: &[&str], stdin: Option<&[u8]>) {
    let mut child = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}",
        prog.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Img {
    fn sparse(size: u64) -> Img {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        File::create(&path).unwrap().set_len(size).unwrap();
        Img { _dir: dir, path }
    }
    fn p(&self) -> &str {
        self.path.to_str().unwrap()
    }
    fn dir(&self) -> &Path {
        self._dir.path()
    }
}

/// What the detector and the blank probe say about the image at `path`.
fn probe(path: &Path) -> (Option<Signature>, Blankness) {
    let f = File::open(path).unwrap();
    (
        format::detect_signature(&f).unwrap(),
        format::probe_blank(&f).unwrap(),
    )
}

fn assert_found(path: &Path, want: Signature) {
    let (sig, blank) = probe(path);
    assert_eq!(sig, Some(want), "detect_signature on {}", path.display());
    assert_eq!(
        blank,
        Blankness::HoldsData(DataFound::Signature(want)),
        "probe_blank on {}",
        path.display()
    );
}

/// Makes a `size`-byte image, runs `prog args... IMAGE`, and checks that `want` is found.
fn check_tool(name: &str, package: &str, size: u64, args: &[&str], want: Signature) {
    let Some(prog) = tool(name, package) else {
        return;
    };
    let img = Img::sparse(size);
    let mut a = args.to_vec();
    a.push(img.p());
    run(&prog, &a, None);
    assert_found(&img.path, want);
}

#[test]
fn sparse_image_is_blank() {
    let img = Img::sparse(64 * MIB);
    assert_eq!(probe(&img.path), (None, Blankness::Blank));
}

#[test]
fn ext4() {
    check_tool(
        "mkfs.ext4",
        "e2fsprogs",
        32 * MIB,
        &["-q", "-F"],
        Signature::Ext,
    );
}

#[test]
fn xfs() {
    check_tool(
        "mkfs.xfs",
        "xfsprogs",
        320 * MIB,
        &["-q", "-f"],
        Signature::Xfs,
    );
}

#[test]
fn btrfs() {
    check_tool(
        "mkfs.btrfs",
        "btrfs-progs",
        256 * MIB,
        &["-q", "-f"],
        Signature::Btrfs,
    );
}

#[test]
fn swap() {
    check_tool("mkswap", "util-linux", 32 * MIB, &[], Signature::Swap);
}

#[test]
fn vfat_fat16_and_fat32() {
    check_tool("mkfs.vfat", "dosfstools", 32 * MIB, &[], Signature::Vfat);
    check_tool(
        "mkfs.vfat",
        "dosfstools",
        64 * MIB,
        &["-F", "32"],
        Signature::Vfat,
    );
}

#[test]
fn ntfs() {
    check_tool(
        "mkntfs",
        "ntfs-3g",
        32 * MIB,
        &["-F", "-Q", "-q"],
        Signature::Ntfs,
    );
}

#[test]
fn f2fs() {
    check_tool(
        "mkfs.f2fs",
        "f2fs-tools",
        128 * MIB,
        &["-q", "-f"],
        Signature::F2fs,
    );
}

#[test]
fn bcache() {
    check_tool(
        "make-bcache",
        "bcache-tools",
        32 * MIB,
        &["-B"],
        Signature::Bcache,
    );
}

#[test]
fn gpt_partition_table() {
    check_tool(
        "sgdisk",
        "gdisk",
        32 * MIB,
        &["-o", "-n", "1:0:0"],
        Signature::Gpt,
    );
}

#[test]
fn gpt_backup_header_alone_still_counts() {
    let Some(sgdisk) = tool("sgdisk", "gdisk") else {
        return;
    };
    let img = Img::sparse(32 * MIB);
    run(&sgdisk, &["-o", img.p()], None);
    // Destroy the protective MBR and the primary header: the backup at the end remains.
    let f = File::options().write(true).open(&img.path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 1024], 0).unwrap();
    assert_found(&img.path, Signature::Gpt);
}

#[test]
fn dos_partition_table() {
    let Some(sfdisk) = tool("sfdisk", "fdisk") else {
        return;
    };
    let img = Img::sparse(32 * MIB);
    run(&sfdisk, &["-q", img.p()], Some(b"label: dos\n,,L\n"));
    assert_found(&img.path, Signature::Dos);
}

#[test]
fn squashfs_and_iso9660() {
    let (Some(mksquashfs), Some(genisoimage)) = (
        tool("mksquashfs", "squashfs-tools"),
        tool("genisoimage", "genisoimage"),
    ) else {
        return;
    };
    let img = Img::sparse(0);
    let src = img.dir().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), b"content\n").unwrap();
    let (src_s, sq, iso) = (
        src.to_str().unwrap(),
        img.dir().join("sq.img"),
        img.dir().join("cd.iso"),
    );
    run(
        &mksquashfs,
        &[src_s, sq.to_str().unwrap(), "-quiet", "-noappend"],
        None,
    );
    assert_found(&sq, Signature::Squashfs);
    run(
        &genisoimage,
        &["-quiet", "-o", iso.to_str().unwrap(), src_s],
        None,
    );
    assert_found(&iso, Signature::Iso9660);
}

#[test]
fn luks2_and_verity_from_cryptsetup() {
    let (Some(cs), Some(vs)) = (
        tool("cryptsetup", "cryptsetup-bin"),
        tool("veritysetup", "cryptsetup-bin"),
    ) else {
        return;
    };
    let img = Img::sparse(32 * MIB);
    let key = img.dir().join("key");
    std::fs::write(&key, b"passphrase").unwrap();
    run(
        &cs,
        &[
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            key.to_str().unwrap(),
            img.p(),
        ],
        None,
    );
    assert_found(&img.path, Signature::Luks);

    let data = img.dir().join("data");
    let hash = img.dir().join("hash");
    File::create(&data).unwrap().set_len(MIB).unwrap();
    File::create(&hash).unwrap().set_len(MIB).unwrap();
    run(
        &vs,
        &["format", data.to_str().unwrap(), hash.to_str().unwrap()],
        None,
    );
    assert_found(&hash, Signature::Verity);
}

/// A loop device attached to an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(losetup: &Path, img: &Path) -> Loop {
        let out = Command::new(losetup)
            .args(["-f", "--show", img.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn lvm2_physical_volume_on_a_loop_device() {
    let (Some(losetup), Some(pvcreate)) = (tool("losetup", "util-linux"), tool("pvcreate", "lvm2"))
    else {
        return;
    };
    if !Path::new("/dev/loop-control").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("loop devices are required in CI (/dev/loop-control is missing)");
        }
        eprintln!("SKIP: no loop devices");
        return;
    }
    let img = Img::sparse(32 * MIB);
    {
        let dev = Loop::attach(&losetup, &img.path);
        run(&pvcreate, &["-q", "-y", "-ff", &dev.0], None);
        // The label as the block device shows it...
        assert_found(Path::new(&dev.0), Signature::Lvm2);
    }
    // ...and, with the loop device detached, in the image file.
    assert_found(&img.path, Signature::Lvm2);
}

/// The mdraid superblocks in testdata/mdraid, each placed where `mdadm --create` wrote it in its
/// 4 MiB member image (see testdata/README.md); the rest of that image was zeros.
#[test]
fn mdraid_superblocks_from_mdadm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/mdraid");
    for (file, block, version) in [
        ("0.90.bin", 1008u64, MdVersion::V0_90),
        ("1.0.bin", 1022, MdVersion::V1_0),
        ("1.1.bin", 0, MdVersion::V1_1),
        ("1.2.bin", 1, MdVersion::V1_2),
    ] {
        let sb = std::fs::read(root.join(file)).unwrap();
        assert_eq!(sb.len(), 4096, "{file}");
        let img = Img::sparse(4 * MIB);
        let f = File::options().write(true).open(&img.path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &sb, block * 4096).unwrap();
        assert_found(&img.path, Signature::MdRaid(version));
    }
}

/// `format` without `force` refuses a device holding any of the newly known signatures (it
/// formatted over them before); with `force` it proceeds.
#[test]
fn format_refuses_a_partitioned_device() {
    let Some(sgdisk) = tool("sgdisk", "gdisk") else {
        return;
    };
    let img = Img::sparse(32 * MIB);
    run(&sgdisk, &["-o", "-n", "1:0:0", img.p()], None);
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let err = format::format(&mut f, b"pw", &FormatOptions::default()).unwrap_err();
    assert_eq!(err.kind(), luks2::ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains("gpt"), "{err}");
}

/// A filesystem whose magic was wiped (`wipefs -a`) is no longer recognised, but the probe still
/// says "holds data": the rest of its metadata is in the first MiB.
#[test]
fn wiped_filesystem_still_holds_data() {
    let (Some(mkfs), Some(wipefs)) = (tool("mkfs.ext4", "e2fsprogs"), tool("wipefs", "util-linux"))
    else {
        return;
    };
    let img = Img::sparse(32 * MIB);
    run(&mkfs, &["-q", "-F", img.p()], None);
    run(&wipefs, &["-q", "-a", img.p()], None);
    assert_eq!(
        probe(&img.path),
        (None, Blankness::HoldsData(DataFound::NonZeroFirstMib))
    );
}
