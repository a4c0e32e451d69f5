//! [`Rig`]: the real `onmetal-csi-driver serve` process of the privileged `vm_*` driver tests and
//! the stage benchmark
//! (all services, `local:` backend and `dir:` key store in a temporary directory), talked to
//! over its Unix socket with the generated CSI client, on a kernel with device-mapper and loop
//! devices (`scripts/vm-test`; or a Linux host as root). Without device-mapper they skip — except
//! under the VM rig (`ONMETAL_VM_TEST=1`), where that is a failure. The rig's drop unmounts,
//! closes and detaches whatever the test left, also when it failed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi::proto;
use csi::proto::controller_client::ControllerClient;
use csi::proto::node_client::NodeClient;
use csi::proto::volume_capability::access_mode::Mode;
use tonic::transport::Channel;

pub use crate::peers;
pub use crate::require_privileged;

pub const KEK: &str = "pvc-kek";

/// The driver binary: `$ONMETAL_CSI_DRIVER` when set (the stage benchmark runs a release
/// build), else the one Cargo built next to the running test (`target/<profile>/`, the parent
/// of the test's `deps/`: Cargo builds a package's binaries for its integration tests).
pub fn driver_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ONMETAL_CSI_DRIVER") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("onmetal-csi-driver"))
        .filter(|p| p.is_file());
    match bin {
        Some(p) => p,
        None => panic!(
            "no onmetal-csi-driver next to {}: set ONMETAL_CSI_DRIVER to the driver binary",
            exe.display()
        ),
    }
}

/// The driver process and a client.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub driver: Option<Child>,
    pub rt: tokio::runtime::Runtime,
    pub ch: Option<Channel>,
    pub volumes: Vec<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub setup: Setup,
    starts: u32,
}

/// Who the driver is: node id, mode, backend and key store (the defaults: one `all` plugin
/// `vm-node` on a `local:` backend and a `dir:` key store in the rig's directory).
#[derive(Clone, Debug)]
pub struct Setup {
    pub node_id: String,
    pub mode: String,
    /// The `--backend` value and what follows it (`["rbd", "--ceph-conf", ...]`); `None`:
    /// `local:<rig>/volumes`.
    pub backend: Option<Vec<String>>,
    /// The `dir:` key store; `None`: `<rig>/keys`. Two plugins of one cluster share one.
    pub key_dir: Option<PathBuf>,
    /// A command the driver runs under (it `exec`s the driver with its arguments appended),
    /// such as `unshare` and a shell that hides `/dev` as a container would; empty: none.
    pub wrap: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            node_id: "vm-node".into(),
            mode: "all".into(),
            backend: None,
            key_dir: None,
            wrap: Vec::new(),
        }
    }
}

impl Rig {
    /// Starts a driver with the defaults (a process: no `Default`).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Rig {
        Rig::with(Vec::new(), Vec::new())
    }

    /// A rig whose driver gets the extra environment `env` and the extra `serve` arguments
    /// `args` (e.g. `--metrics-address`, `--log-format json`) on every start.
    pub fn with(env: Vec<(String, String)>, args: Vec<String>) -> Rig {
        Rig::set_up(Setup::default(), env, args)
    }

    /// A rig whose driver is `setup` (another node, backend or key store).
    pub fn set_up(setup: Setup, env: Vec<(String, String)>, args: Vec<String>) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("csi-vm-")
            .tempdir_in("/tmp")
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut rig = Rig {
            dir,
            driver: None,
            rt,
            ch: None,
            volumes: Vec::new(),
            env,
            args,
            setup,
            starts: 0,
        };
        rig.start();
        rig
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn sock(&self) -> PathBuf {
        self.path("csi.sock")
    }

    pub fn backend_dir(&self) -> PathBuf {
        self.path("volumes")
    }

    pub fn key_dir(&self) -> PathBuf {
        self.setup
            .key_dir
            .clone()
            .unwrap_or_else(|| self.path("keys"))
    }

    /// Starts the driver (again), waits for its socket, connects.
    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.path(&format!("driver-{}.log", self.starts));
        let mut cmd = match self.setup.wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(driver_bin());
                c
            }
            None => Command::new(driver_bin()),
        };
        cmd.arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", self.sock().display()))
            .args(["--node-id", &self.setup.node_id, "--mode", &self.setup.mode])
            .arg("--kubelet-dir")
            .arg(self.dir.path())
            .arg("--backend");
        match &self.setup.backend {
            Some(b) => cmd.args(b),
            None => cmd.arg(format!("local:{}", self.backend_dir().display())),
        };
        cmd.arg("--key-store")
            .arg(format!("dir:{}", self.key_dir().display()))
            .args(&self.args)
            .env("RUST_LOG", "info,csi=debug")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.driver = Some(cmd.spawn().expect("driver starts"));
        let sock = self.sock();
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Some(status) = self.driver.as_mut().unwrap().try_wait().unwrap() {
                panic!("driver exited with {status}: {}", self.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "driver socket did not appear: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let endpoint = format!("unix://{}", sock.display());
        self.ch = Some(
            self.rt
                .block_on(csi::cli::client::connect(&endpoint))
                .unwrap(),
        );
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ch = None;
    }

    /// Waits for the driver to exit by itself (a crash point), returns whether it aborted.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let status = self.driver.as_mut().unwrap().wait().unwrap();
        self.driver = None;
        self.ch = None;
        status
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.path(&format!("driver-{i}.log"));
            out.push_str(&format!("--- driver log {i} ---\n"));
            out.push_str(&fs::read_to_string(p).unwrap_or_default());
        }
        out
    }

    fn ctl(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.ch.clone().expect("driver running"))
    }

    fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.ch.clone().expect("driver running"))
    }

    pub fn create(
        &mut self,
        name: &str,
        size: i64,
        params: &HashMap<String, String>,
        block: bool,
    ) -> Result<proto::Volume, tonic::Status> {
        let req = proto::CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![cap(block, "ext4")],
            parameters: params.clone(),
            ..Default::default()
        };
        let mut c = self.ctl();
        let v = self
            .rt
            .block_on(c.create_volume(req))?
            .into_inner()
            .volume
            .unwrap();
        self.volumes.push(v.volume_id.clone());
        Ok(v)
    }

    pub fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.ctl();
        self.rt
            .block_on(c.delete_volume(proto::DeleteVolumeRequest {
                volume_id: id.to_owned(),
                secrets: HashMap::new(),
            }))
            .map(|_| ())
    }

    pub fn expand(&self, id: &str, size: i64) -> Result<i64, tonic::Status> {
        let mut c = self.ctl();
        self.rt
            .block_on(
                c.controller_expand_volume(proto::ControllerExpandVolumeRequest {
                    volume_id: id.to_owned(),
                    capacity_range: Some(proto::CapacityRange {
                        required_bytes: size,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                }),
            )
            .map(|r| r.into_inner().capacity_bytes)
    }

    pub fn stage(
        &self,
        v: &proto::Volume,
        staging: &Path,
        cap: proto::VolumeCapability,
        secrets: &HashMap<String, String>,
    ) -> Result<Duration, tonic::Status> {
        let mut c = self.node();
        let t = Instant::now();
        self.rt
            .block_on(c.node_stage_volume(proto::NodeStageVolumeRequest {
                volume_id: v.volume_id.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap),
                secrets: secrets.clone(),
                volume_context: v.volume_context.clone(),
                publish_context: HashMap::new(),
            }))
            .map(|_| t.elapsed())
    }

    pub fn unstage(&self, id: &str, staging: &Path) -> Result<(), tonic::Status> {
        let mut c = self.node();
        self.rt
            .block_on(c.node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: id.to_owned(),
                staging_target_path: staging.display().to_string(),
            }))
            .map(|_| ())
    }

    pub fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        cap: proto::VolumeCapability,
        readonly: bool,
    ) -> Result<(), tonic::Status> {
        let mut c = self.node();
        self.rt
            .block_on(c.node_publish_volume(proto::NodePublishVolumeRequest {
                volume_id: id.to_owned(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(cap),
                readonly,
                ..Default::default()
            }))
            .map(|_| ())
    }

    pub fn unpublish(&self, id: &str, target: &Path) -> Result<(), tonic::Status> {
        let mut c = self.node();
        self.rt
            .block_on(c.node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                volume_id: id.to_owned(),
                target_path: target.display().to_string(),
            }))
            .map(|_| ())
    }

    pub fn node_expand(&self, id: &str, path: &Path) -> Result<i64, tonic::Status> {
        let mut c = self.node();
        self.rt
            .block_on(c.node_expand_volume(proto::NodeExpandVolumeRequest {
                volume_id: id.to_owned(),
                volume_path: path.display().to_string(),
                ..Default::default()
            }))
            .map(|r| r.into_inner().capacity_bytes)
    }

    pub fn stats(
        &self,
        id: &str,
        path: &Path,
    ) -> Result<proto::NodeGetVolumeStatsResponse, tonic::Status> {
        let mut c = self.node();
        self.rt
            .block_on(c.node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                volume_id: id.to_owned(),
                volume_path: path.display().to_string(),
                staging_target_path: String::new(),
            }))
            .map(|r| r.into_inner())
    }

    /// `onmetal-csi-driver volume VERB --volume-id ID` against this rig's key store with the
    /// Transit KMS at `url` and `token` (in a secret directory), plus `extra`; asserts success
    /// and returns the command's stderr (warnings).
    pub fn volume_cmd(
        &self,
        verb: &str,
        id: &str,
        url: &str,
        token: &str,
        extra: &[&str],
    ) -> String {
        let secret_dir = self.path("kms-secret");
        fs::create_dir_all(&secret_dir).unwrap();
        fs::write(secret_dir.join("token"), token).unwrap();
        let out = Command::new(driver_bin())
            .args(["volume", verb, "--volume-id", id])
            .arg("--key-store")
            .arg(format!("dir:{}", self.key_dir().display()))
            .args(["--type", "transit", "--endpoint", url, "--key-id", KEK])
            .arg("--secret-dir")
            .arg(&secret_dir)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "volume {verb}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.backend_dir().join(format!("{id}.img"))
    }

    pub fn record_file(&self, id: &str) -> PathBuf {
        self.key_dir().join(format!("onmetal-csi-luks-{id}"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.kill();
        // Unmount everything under the rig's directory, deepest first.
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|t| t.starts_with(&self.dir.path().display().to_string()))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = Command::new("umount").arg("-l").arg(&t).status();
        }
        if let Ok(dm) = dm::DeviceMapper::new() {
            for id in &self.volumes {
                if let Ok(name) = dm::DmName::new(&format!("onmetal-csi-{id}")) {
                    let _ = dm.deactivate(&name);
                }
            }
        }
        for id in &self.volumes {
            let img = self.image(id);
            if let Ok(out) = Command::new("losetup")
                .args(["-n", "-O", "NAME", "-j"])
                .arg(&img)
                .output()
            {
                for dev in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = Command::new("losetup").args(["-d", dev.trim()]).status();
                }
            }
        }
    }
}

/// A capability: block, or a filesystem of `fs`.
pub fn cap(block: bool, fs: &str) -> proto::VolumeCapability {
    csi::capability::capability(block, fs, Mode::SingleNodeWriter)
}

/// StorageClass parameters of an encrypted Transit class (as in the user guide).
pub fn transit_params(url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("type".into(), "fast".into()),
        ("encryptionEnabled".into(), "true".into()),
        ("encryptionKMSType".into(), "transit".into()),
        ("encryptionKMSEndpoint".into(), url.into()),
        ("encryptionKMSKeyID".into(), KEK.into()),
        (
            "csi.storage.k8s.io/node-stage-secret-name".into(),
            "kms-token".into(),
        ),
    ])
}

pub fn plain_params() -> HashMap<String, String> {
    HashMap::from([("type".into(), "fast".into())])
}

/// An OpenBao dev server with the user guide's transit setup; returns it and a policy token.
pub fn bao() -> (peers::bao::Bao, String) {
    let bao =
        peers::bao::Bao::start(false).expect("OpenBao is installed (kms/tests/install-peers.sh)");
    bao.setup_transit(KEK);
    let token = bao.policy_token(KEK, "");
    (bao, token)
}

pub fn token_secrets(token: &str) -> HashMap<String, String> {
    HashMap::from([("token".to_owned(), token.to_owned())])
}

pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Size of a block device or file.
pub fn size_of(path: &Path) -> u64 {
    fs::File::open(path)
        .unwrap()
        .seek(SeekFrom::End(0))
        .unwrap()
}

/// The `major:minor` of the filesystem mounted at `path`.
pub fn mount_dev(path: &Path) -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&path.display().to_string()))
        .and_then(|l| l.split(' ').nth(2).map(str::to_owned))
}

pub fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

pub fn rdev(path: &Path) -> u64 {
    fs::metadata(path).unwrap().rdev()
}

/// What a test compares to prove a device was left alone: its first 32 MiB (header area and the
/// start of the data) and its last MiB, hashed (a whole 1 GiB image would not fit the VM's memory).
pub fn fingerprint(path: &Path) -> (u64, [u8; 32]) {
    use sha2::Digest;
    let mut f = fs::File::open(path).unwrap();
    let size = f.seek(SeekFrom::End(0)).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in [
        (0, (32u64 << 20).min(size)),
        (size.saturating_sub(1 << 20), (1u64 << 20).min(size)),
    ] {
        f.seek(SeekFrom::Start(start)).unwrap();
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(1 << 20)).unwrap();
            f.read_exact(&mut buf[..n]).unwrap();
            h.update(&buf[..n]);
            left -= n as u64;
        }
    }
    (size, h.finalize().into())
}

pub const GIB: i64 = 1 << 30;

/// Where a backend keeps a volume, for [`life`]'s checks.
pub trait Backing {
    /// The raw (ciphertext) device or file, while the volume is staged.
    fn raw(&self, rig: &Rig, id: &str) -> PathBuf;
    /// Whether the backing volume exists.
    fn exists(&self, rig: &Rig, id: &str) -> bool;
    /// Whether it is attached to this node (a loop device, a kernel RBD mapping).
    fn attached(&self, rig: &Rig, id: &str) -> bool;
}

/// The `local:` backend: `<rig>/volumes/<id>.img`, attached as a loop device.
pub struct LocalFiles;

impl Backing for LocalFiles {
    fn raw(&self, rig: &Rig, id: &str) -> PathBuf {
        rig.image(id)
    }

    fn exists(&self, rig: &Rig, id: &str) -> bool {
        rig.image(id).exists()
    }

    fn attached(&self, rig: &Rig, id: &str) -> bool {
        let out = Command::new("losetup")
            .args(["-n", "-O", "NAME", "-j"])
            .arg(rig.image(id))
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

/// The whole life of one volume through the socket: create (idempotent), stage, publish
/// (repeats idempotent), the encryption checks (record, dm-crypt with the key in the keyring,
/// LUKS2 on the backing volume, ciphertext on disk), write, unpublish, unstage (detached), stage
/// again and read back, expand online (controller and node), stats, delete (backing volume and
/// record gone, repeatable).
/// Writes a marker to the published volume (a file, or the first 4 KiB of a block device).
pub fn write_marker(target: &Path, block: bool, marker: &[u8]) {
    if block {
        let mut f = fs::OpenOptions::new().write(true).open(target).unwrap();
        f.write_all(marker).unwrap();
        f.sync_all().unwrap();
    } else {
        fs::write(target.join("marker"), marker).unwrap();
        sh("sync");
    }
}

pub fn read_marker(target: &Path, block: bool, len: usize) -> Vec<u8> {
    if block {
        let mut f = fs::File::open(target).unwrap();
        let mut buf = vec![0; len];
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_exact(&mut buf).unwrap();
        buf
    } else {
        fs::read(target.join("marker")).unwrap()
    }
}

pub fn life(
    rig: &mut Rig,
    backing: &dyn Backing,
    name: &str,
    params: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
    block: bool,
    fs_type: &str,
) {
    let encrypted = params.get("encryptionEnabled").map(String::as_str) == Some("true");
    let v = rig.create(name, GIB, params, block).unwrap();
    let id = v.volume_id.clone();
    assert_eq!(v.capacity_bytes, GIB);
    assert!(backing.exists(rig, &id));
    // CreateVolume is idempotent.
    assert_eq!(rig.create(name, GIB, params, block).unwrap(), v);
    let staging = rig.path(&format!("staging-{id}"));
    let target = rig.path(&format!("pods/{id}/target"));
    let c = cap(block, fs_type);

    let first = rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    // Repeats are idempotent.
    rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    if encrypted {
        assert!(rig.record_file(&id).exists(), "wrapped-key record stored");
        let mapper = Path::new("/dev/mapper").join(format!("onmetal-csi-{id}"));
        assert!(is_block_device(&mapper));
        // The key is in the keyring, never in the table.
        let table = sh(&format!("dmsetup table --showkeys onmetal-csi-{id}"));
        assert!(table.contains(":64:logon:"), "{table}");
        // The on-disk data is ciphertext: cryptsetup sees a LUKS2 device.
        let dump = sh(&format!(
            "cryptsetup luksDump {}",
            backing.raw(rig, &id).display()
        ));
        assert!(
            dump.contains("aes-xts-plain64") && dump.contains("onmetal-csi-wrapped-key"),
            "{dump}"
        );
    } else {
        assert!(!rig.record_file(&id).exists());
        assert!(
            !Path::new("/dev/mapper")
                .join(format!("onmetal-csi-{id}"))
                .exists()
        );
    }
    if !block {
        assert_eq!(
            mount_dev(&staging),
            mount_dev(&target),
            "target is a bind of the staging mount"
        );
    }
    let marker = format!("data of {name}").into_bytes();
    write_marker(&target, block, &marker);
    if encrypted && block {
        // The plaintext never reaches the backing file: what the volume's first bytes are on
        // disk (behind the 16 MiB LUKS2 header area) is ciphertext.
        let mut raw = vec![0u8; marker.len()];
        let mut f = fs::File::open(backing.raw(rig, &id)).unwrap();
        f.seek(SeekFrom::Start(16 << 20)).unwrap();
        f.read_exact(&mut raw).unwrap();
        assert_ne!(raw, marker);
    }

    rig.unpublish(&id, &target).unwrap();
    rig.unpublish(&id, &target).unwrap();
    assert!(!target.exists());
    rig.unstage(&id, &staging).unwrap();
    rig.unstage(&id, &staging).unwrap();
    assert!(mount_dev(&staging).is_none());
    assert!(
        !backing.attached(rig, &id),
        "NodeUnstage detaches the backing volume"
    );

    let later = rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    eprintln!(
        "LATENCY stage {name}: first {:.1} ms, later {:.1} ms",
        first.as_secs_f64() * 1e3,
        later.as_secs_f64() * 1e3
    );
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    assert_eq!(read_marker(&target, block, marker.len()), marker);

    // Online expansion: controller grows the backing volume, node grows device, mapping, fs.
    let grown = rig.expand(&id, 2 * GIB).unwrap();
    assert_eq!(grown, 2 * GIB);
    let node_size = rig.node_expand(&id, &target).unwrap();
    let overhead = if encrypted { 16 << 20 } else { 0 };
    assert_eq!(node_size, 2 * GIB - overhead, "usable size after expansion");
    let stats = rig.stats(&id, &target).unwrap();
    let bytes = &stats.usage[0];
    if block {
        assert_eq!(bytes.total, 2 * GIB - overhead);
    } else {
        assert!(bytes.total > GIB + GIB / 2, "filesystem grew: {bytes:?}");
        assert_eq!(stats.usage.len(), 2, "bytes and inodes");
    }
    assert!(!stats.volume_condition.unwrap().abnormal);
    assert_eq!(read_marker(&target, block, marker.len()), marker);

    rig.unpublish(&id, &target).unwrap();
    rig.unstage(&id, &staging).unwrap();
    rig.delete(&id).unwrap();
    rig.delete(&id).unwrap();
    assert!(
        !backing.exists(rig, &id),
        "DeleteVolume removes the backing volume"
    );
    assert!(
        !rig.record_file(&id).exists(),
        "DeleteVolume removes the wrapped-key record"
    );
}
