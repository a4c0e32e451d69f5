//! `onmetal-csi-driver volume key|inspect|restore-header` end to end on image files (no
//! device-mapper needed), with a real OpenBao dev server and stock cryptsetup as the reference.
//!
//! The volumes are made as the driver makes them (`csi::crypt::format` with a DEK wrapped by
//! the KMS, the record in a `dir:` key store); the ext4 filesystem inside is made by `mkfs.ext4`
//! on a plain file and encrypted into the data area as dm-crypt would write it (the cipher is
//! checked against the kernel's in `luks2/tests/kat.rs`).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use csi::crypt::restore_header;
use csi::host::fs::FsType;
use csi::keystore::{DirStore, KeyEntry, KeyStore, VolumeState};
use csi::volume_id::VolumeId;
use kms::{Dek, KmsConfig, KmsType, WrappedKey};
use luks2::crypto::cipher::KeyslotCipher;
use sha2::{Digest, Sha256};
use testkit::peers::bao::Transit as Bao;
use testkit::peers::require;

const MIB: u64 = 1024 * 1024;
const DATA_OFFSET: u64 = 16 * MIB;
const DATA_SIZE: u64 = 32 * MIB;
const KEY: &str = "pvc-kek";

fn have(tool: &str) -> Option<()> {
    let found = Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    require(tool, found.then_some(()))
}

struct Fixture {
    bao: Bao,
    secret_dir: tempfile::TempDir,
    store_dir: tempfile::TempDir,
    work: tempfile::TempDir,
    volume: VolumeId,
    dek: Dek,
    record: WrappedKey,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// OpenBao with a key, a DEK wrapped for `volume` and its record in a `dir:` store.
fn fixture(volume: &str) -> Option<Fixture> {
    have("cryptsetup")?;
    have("mkfs.ext4")?;
    let bao = Bao::start(KEY)?;
    let secret_dir = tempfile::tempdir().unwrap();
    bao.write_secret_dir(secret_dir.path());
    let volume = VolumeId::parse(volume).unwrap();
    let config = KmsConfig::new(KmsType::Transit, &bao.url, KEY, None, &bao.secrets()).unwrap();
    let rt = rt();
    let (dek, record) = rt
        .block_on(csi::crypt::keys::new_key(&config, &volume))
        .unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(store_dir.path()).unwrap();
    let entry = KeyEntry {
        record: record.clone(),
        state: VolumeState::Formatted,
    };
    rt.block_on(store.create(&volume, &entry)).unwrap();
    Some(Fixture {
        bao,
        secret_dir,
        store_dir,
        work: tempfile::tempdir().unwrap(),
        volume,
        dek,
        record,
    })
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `volume VERB --volume-id ... --secret-dir ...` with this fixture's settings.
    fn args(&self, verb: &str, endpoint: &str) -> Vec<String> {
        [
            "volume",
            verb,
            "--volume-id",
            self.volume.as_str(),
            "--key-store",
            &format!("dir:{}", self.store_dir.path().display()),
            "--type",
            "transit",
            "--endpoint",
            endpoint,
            "--key-id",
            KEY,
            "--secret-dir",
            &self.secret_dir.path().display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn restore(&self, device: &Path) -> Output {
        let mut a = self.args("restore-header", &self.bao.url);
        a.extend(["--device".to_owned(), device.display().to_string()]);
        run(&a)
    }

    fn key(&self, output: &Path, endpoint: &str) -> Output {
        let mut a = self.args("key", endpoint);
        a.extend(["--output".to_owned(), output.display().to_string()]);
        run(&a)
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An ext4 filesystem of [`DATA_SIZE`] made by mkfs.ext4 on a plain file, holding `hello.txt`.
fn ext4_image(work: &Path) -> Vec<u8> {
    let src = work.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello.txt"), "the files survive a lost header\n").unwrap();
    let img = work.join("plain.ext4");
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(DATA_SIZE)
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-L", "restore-me", "-d"])
        .arg(&src)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(&img).unwrap()
}

/// A device file of DATA_OFFSET + DATA_SIZE with `data` at the data offset.
fn device_with_data(path: &Path, data: &[u8]) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(DATA_OFFSET + DATA_SIZE).unwrap();
    f.write_all_at(data, DATA_OFFSET).unwrap();
}

fn encrypt(key: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    KeyslotCipher::AES_XTS_PLAIN64
        .encrypt_sectors(key, &mut buf, 4096, 0)
        .unwrap();
    buf
}

/// Zeros both LUKS2 header copies (16 KiB each, at 0 and 16 KiB).
fn zero_headers(path: &Path) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0u8; 32 * 1024], 0).unwrap();
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

fn data_area(path: &Path) -> Vec<u8> {
    let all = fs::read(path).unwrap();
    all[DATA_OFFSET as usize..].to_vec()
}

#[test]
fn restore_header_rebuilds_a_zeroed_header_and_volume_key_opens_it() {
    let Some(fx) = fixture("pvc-restore") else {
        return;
    };
    let plain = ext4_image(fx.work.path());
    let dev = fx.path("device.img");
    device_with_data(&dev, &[]);
    let header = csi::crypt::format(&dev, &fx.dek, &fx.record).unwrap();
    assert_eq!(
        header.metadata.segments.values().next().unwrap().offset,
        DATA_OFFSET
    );
    let encrypted = encrypt(fx.dek.expose(), &plain);
    OpenOptions::new()
        .write(true)
        .open(&dev)
        .unwrap()
        .write_all_at(&encrypted, DATA_OFFSET)
        .unwrap();
    zero_headers(&dev);

    // inspect: no header any more.
    let o = run(&["volume", "inspect", dev.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(66), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("no LUKS2 header"));

    let o = fx.restore(&dev);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("ext4") && out.contains("pvc-restore"), "{out}");
    // Nothing at or beyond the data offset changed.
    assert!(data_area(&dev) == encrypted);

    // volume key: a new 0600 file with the DEK, a warning, no key on stdout/stderr.
    let keyfile = fx.path("volume.key");
    let o = fx.key(&keyfile, &fx.bao.url);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read(&keyfile).unwrap(), fx.dek.expose());
    assert_eq!(
        fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let warning = text(&o.stderr);
    assert!(
        warning
            .lines()
            .any(|l| l.starts_with("WARNING: ") && l.contains("cryptsetup open --key-file")),
        "{warning}"
    );
    let hex_key = hex::encode(fx.dek.expose());
    assert!(o.stdout.is_empty() && !warning.contains(&hex_key));

    // Stock cryptsetup accepts the key for the rebuilt header and reads its layout.
    let st = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file"])
        .arg(&keyfile)
        .arg(&dev)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "cryptsetup open --test-passphrase refused the key"
    );
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&dev)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let dump = text(&dump.stdout);
    for want in [
        "offset: 16777216 [bytes]",
        "sector: 4096 [bytes]",
        "cipher: aes-xts-plain64",
        "onmetal-csi-wrapped-key",
        "Iterations: 1000",
    ] {
        assert!(dump.contains(want), "luksDump lacks {want:?}:\n{dump}");
    }

    // Through the rebuilt header, the data area decrypts to the very filesystem image.
    let h = luks2::header::read(&fs::File::open(&dev).unwrap()).unwrap();
    let seg = h.metadata.segments.values().next().unwrap();
    let mut area = data_area(&dev);
    KeyslotCipher::AES_XTS_PLAIN64
        .decrypt_sectors(&fs::read(&keyfile).unwrap(), &mut area, 4096, 0)
        .unwrap();
    assert_eq!(seg.offset, DATA_OFFSET);
    assert!(
        area == plain,
        "the rebuilt header does not open the filesystem"
    );

    // inspect: header and record, no key material.
    let o = run(&["volume", "inspect", dev.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shown = text(&o.stdout);
    let ciphertext =
        serde_json::from_str::<serde_json::Value>(&fx.record.to_json()).unwrap()["ciphertext"]
            .as_str()
            .unwrap()
            .to_owned();
    let uuid = h.uuid();
    for want in [
        &*uuid,
        "aes-xts-plain64",
        "offset 16777216 bytes",
        "sector size 4096",
        "KDF pbkdf2 sha256 1000 iterations",
        "onmetal-csi-wrapped-key",
        &fx.bao.url,
        KEY,
        "Volume ID:   pvc-restore",
        "Key version: 1",
    ] {
        assert!(shown.contains(want), "inspect lacks {want:?}:\n{shown}");
    }
    assert!(!shown.contains(&ciphertext) && !shown.contains(&hex_key));
    let o = run(&["volume", "inspect", "--json", dev.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dataOffset"], DATA_OFFSET);
    assert_eq!(v["sectorSize"], 4096);
    assert_eq!(v["cipher"], "aes-xts-plain64");
    assert_eq!(v["keyslots"][0]["kdf"]["type"], "pbkdf2");
    assert_eq!(v["keyslots"][0]["kdf"]["iterations"], 1000);
    let rec = &v["tokens"][0]["record"];
    assert_eq!(rec["endpoint"], fx.bao.url.as_str());
    assert_eq!(rec["keyId"], KEY);
    assert_eq!(rec["kmsType"], "transit");
    assert_eq!(rec["volumeId"], "pvc-restore");
    let json = text(&o.stdout);
    assert!(!json.contains("ciphertext") && !json.contains(&ciphertext));
    assert!(!json.contains("salt") && !json.contains(&hex_key));

    // A device with a valid header is refused and left as it is.
    let before = sha(&dev);
    let o = fx.restore(&dev);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("still has a valid LUKS2 header"));
    assert_eq!(sha(&dev), before);

    // volume key never overwrites.
    let o = fx.key(&keyfile, &fx.bao.url);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("exists"));
    assert_eq!(fs::read(&keyfile).unwrap(), fx.dek.expose());
}

#[test]
fn restore_header_refuses_data_that_is_not_a_filesystem_under_the_key() {
    let Some(fx) = fixture("pvc-other") else {
        return;
    };
    let plain = ext4_image(fx.work.path());
    let other_key = Dek::generate(64).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        // The filesystem unencrypted behind a zeroed header area.
        ("plain", plain.clone()),
        // The filesystem encrypted with another key (another volume's device).
        ("other-key", encrypt(other_key.expose(), &plain)),
        // Nothing at all.
        ("blank", Vec::new()),
    ];
    for (name, data) in cases {
        let dev = fx.path(name);
        device_with_data(&dev, &data);
        let before = sha(&dev);
        let o = fx.restore(&dev);
        assert_eq!(o.status.code(), Some(65), "{name}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains("does not decrypt to an ext4 or xfs filesystem")
                && err.contains("nothing was written"),
            "{name}: {err}"
        );
        assert_eq!(sha(&dev), before, "{name}: the device changed");
    }

    // A record that names another endpoint than the flags: refused before any request, no file.
    let keyfile = fx.path("k");
    let o = fx.key(&keyfile, "http://127.0.0.1:1");
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("endpoint"), "{}", text(&o.stderr));
    assert!(!keyfile.exists());

    // An unknown volume: not found.
    let mut a = fx.args("key", &fx.bao.url);
    a[3] = "pvc-none".to_owned();
    a.extend(["--output".to_owned(), keyfile.display().to_string()]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(66), "{}", text(&o.stderr));
    assert!(!keyfile.exists());
}

/// The superblock checks accept what mkfs.ext4 and mkfs.xfs write, decrypted from a device as
/// the restore reads it, and refuse a filesystem larger than the data area.
#[test]
fn real_ext4_and_xfs_superblocks_are_recognised() {
    let Some(()) = have("mkfs.ext4") else { return };
    let Some(()) = have("mkfs.xfs") else { return };
    let work = tempfile::tempdir().unwrap();
    let dek = Dek::generate(64).unwrap();
    for (kind, size, mkfs) in [
        (
            FsType::Ext4,
            64 * MIB,
            &["mkfs.ext4", "-q", "-F", "-b", "4096"][..],
        ),
        (FsType::Xfs, 320 * MIB, &["mkfs.xfs", "-q", "-f"][..]),
    ] {
        let img = work.path().join(kind.as_str());
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let st = Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "{mkfs:?}");
        let head = &fs::read(&img).unwrap()[..restore_header::PROBE_LEN as usize];
        let dev = work.path().join(format!("{}.dev", kind.as_str()));
        device_with_data(&dev, &encrypt(dek.expose(), head));
        let found = restore_header::decrypted_filesystem(&dev, &dek, DATA_OFFSET, 4096, 0, size)
            .unwrap()
            .unwrap_or_else(|| panic!("{} not recognised", kind.as_str()));
        assert_eq!(found.kind, kind);
        assert_eq!(found.blocks * u64::from(found.block_size), size);
        // Another key finds nothing.
        let wrong = Dek::generate(64).unwrap();
        assert!(
            restore_header::decrypted_filesystem(&dev, &wrong, DATA_OFFSET, 4096, 0, size)
                .unwrap()
                .is_none()
        );
        // Larger than the data area: refused.
        assert!(
            restore_header::decrypted_filesystem(&dev, &dek, DATA_OFFSET, 4096, 0, size - 4096)
                .unwrap()
                .is_none()
        );
    }
}
