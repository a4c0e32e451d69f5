//! A real single-node Ceph cluster for tests: one monitor, one manager (pool statistics: `ceph
//! df`) and one OSD on memstore, all on 127.0.0.1, from Debian's packages (`ceph-mon`, `ceph-mgr`,
//! `ceph-osd`, `ceph-common`). The monitor listens on two free ports (msgr2 and msgr1, not the
//! fixed 3300/6789), so parallel runs do not collide; the manager and OSD pick free ports in
//! Ceph's own range.
//!
//! The cluster has pool `rbd` and a user `client.csi` with what a CSI driver needs: `mon 'profile
//! rbd'` (which includes `osd blocklist add`), `osd 'profile rbd pool=rbd'`, `mgr 'profile rbd
//! pool=rbd'`. [`CephCluster::conf`] and [`CephCluster::keyring`] are that user's `ceph.conf` and
//! keyring, as the driver would get them; [`CephCluster::admin_conf`] is for the harness itself.
//!
//! The bootstrap runs no `ceph` CLI (Python: tens of seconds a call under the VM rig's
//! emulation): every key is made here and handed to `ceph-mon --mkfs` in its initial keyring
//! (the monitor imports them with their caps), and the rest are monitor commands through
//! librados as `client.admin` ([`CephCluster::mon_command`]). Dependencies: std, `tempfile` and
//! the `rbd` crate (for librados).
//!
//! Teardown: [`Drop`] kills the daemons and removes the
//! directory; and because a cluster kept in a `static` is never dropped, every cluster also has a
//! reaper process that does the same as soon as the test process is gone (it waits for the end
//! of a pipe only this process holds), whether the tests passed, panicked or were killed.
//!
//! [`CephCluster::shared`] starts one cluster per test binary. Without the Ceph binaries it
//! returns `None` after printing why (the test then skips), or panics when `CI=true`.

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binaries the cluster needs.
const BINARIES: &[&str] = &["ceph-mon", "ceph-mgr", "ceph-osd", "monmaptool", "rbd"];

/// The cephx user made for the driver.
pub const CLIENT_ID: &str = "csi";
/// The pool made for images.
pub const POOL: &str = "rbd";
/// The OSD's memstore size (of [`CephCluster::start`] and `shared`; [`CephCluster::start_sized`]
/// takes another).
pub const OSD_BYTES: u64 = 1 << 30;

/// A running cluster (see the module docs).
pub struct CephCluster {
    dir: tempfile::TempDir,
    mon_v1: u16,
    mon_v2: u16,
    daemons: Mutex<Daemons>,
    reaper: Mutex<Option<(Child, ChildStdin)>>,
    admin: OnceLock<rbd::Cluster>,
    started_in: Duration,
    osd_bytes: u64,
}

#[derive(Default)]
struct Daemons {
    mon: Option<Child>,
    mgr: Option<Child>,
    osd: Option<Child>,
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Standard base64 with padding (keys only; std has none).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A new cephx secret as a keyring holds it (what `ceph-authtool --gen-key` writes): the
/// encoded `CryptoKey`: type 1 (AES), creation time (seconds, nanoseconds), length 16, then 16
/// random bytes; base64.
fn new_cephx_key() -> Result<String, String> {
    let mut secret = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::with_capacity(28);
    raw.extend_from_slice(&1u16.to_le_bytes());
    raw.extend_from_slice(
        &u32::try_from(now.as_secs())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    raw.extend_from_slice(&now.subsec_nanos().to_le_bytes());
    raw.extend_from_slice(&16u16.to_le_bytes());
    raw.extend_from_slice(&secret);
    Ok(base64(&raw))
}

/// One keyring section: `[entity]`, its key and its caps (`(service, cap)`).
fn keyring_entry(entity: &str, key: &str, caps: &[(&str, &str)]) -> String {
    let mut s = format!("[{entity}]\n\tkey = {key}\n");
    for (service, cap) in caps {
        s.push_str(&format!("\tcaps {service} = \"{cap}\"\n"));
    }
    s
}

/// Writes a file only its owner can read (keyrings).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl CephCluster {
    /// The cluster shared by every test of this binary, started on first use. `None`: the Ceph
    /// binaries are missing and `CI` is not `true` (a message says so); with `CI=true` that is a
    /// panic, and so is a cluster that fails to start.
    pub fn shared() -> Option<&'static CephCluster> {
        Self::shared_with(true)
    }

    /// Like [`CephCluster::shared`], with or without the manager (`mgr: false`: no `ceph df`, so
    /// no pool statistics, but a much quicker start under the VM rig's emulation). The first call
    /// in a test binary decides. Under the VM rig (`ONMETAL_VM_TEST=1`) missing binaries are a
    /// panic too.
    pub fn shared_with(mgr: bool) -> Option<&'static CephCluster> {
        // A start that failed is kept as its message: every later test fails at once with it,
        // instead of each trying (and waiting) again.
        static CLUSTER: OnceLock<Option<Result<CephCluster, String>>> = OnceLock::new();
        let slot = CLUSTER.get_or_init(|| {
            let ci = std::env::var("CI").as_deref() == Ok("true")
                || std::env::var("ONMETAL_VM_TEST").as_deref() == Ok("1");
            let missing: Vec<&str> = BINARIES
                .iter()
                .copied()
                .filter(|b| find_binary(b).is_none())
                .collect();
            if !missing.is_empty() {
                let msg = format!(
                    "Ceph binaries missing ({}): apt-get install ceph-mon ceph-osd ceph-mgr \
                     ceph-common (scripts/install-prereqs.sh)",
                    missing.join(", ")
                );
                if ci {
                    return Some(Err(format!("CI=true or in the VM rig: {msg}")));
                }
                eprintln!("SKIP: {msg}");
                return None;
            }
            Some(CephCluster::start_with(mgr))
        });
        match slot {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => panic!("starting the test Ceph cluster: {e}"),
        }
    }

    /// Starts a new cluster (about 1.5 s to a ready pool on the host and 15-20 s in the VM rig;
    /// the manager's first `ceph df` takes 5-7 s more). Blocks until pool `rbd` exists and the
    /// manager reports its free space.
    pub fn start() -> Result<Self, String> {
        Self::start_with(true)
    }

    /// Starts a new cluster, with the manager or without it (then without waiting for `ceph df`).
    pub fn start_with(mgr: bool) -> Result<Self, String> {
        Self::start_sized(mgr, OSD_BYTES)
    }

    /// Like [`CephCluster::start_with`], with an OSD of `osd_bytes` (memstore: the data lives in
    /// the OSD's memory, and a full OSD holds every write until there is room, so size it for
    /// what the run writes).
    pub fn start_sized(mgr: bool, osd_bytes: u64) -> Result<Self, String> {
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ceph-test-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let d = dir.path().to_path_buf();
        for sub in ["mon", "run", "log", "osd0", "mgr"] {
            fs::create_dir_all(d.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let (mon_v2, mon_v1) = (free_port()?, free_port()?);
        let mut c = Self {
            dir,
            mon_v1,
            mon_v2,
            daemons: Mutex::new(Daemons::default()),
            reaper: Mutex::new(None),
            admin: OnceLock::new(),
            started_in: Duration::ZERO,
            osd_bytes,
        };
        c.start_reaper()?;
        let phases = c.bootstrap(t0, mgr)?;
        c.started_in = t0.elapsed();
        eprintln!(
            "ceph test cluster up in {:.1} s ({phases}; {}; mon v1 127.0.0.1:{})",
            c.started_in.as_secs_f64(),
            d.display(),
            c.mon_v1
        );
        Ok(c)
    }

    /// How long [`CephCluster::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `ceph.conf` of `client.csi` (monitor addresses, its keyring).
    pub fn conf(&self) -> PathBuf {
        self.dir().join("csi.conf")
    }

    /// The keyring of `client.csi`.
    pub fn keyring(&self) -> PathBuf {
        self.dir().join("csi.keyring")
    }

    /// The daemons' and admin's `ceph.conf`.
    pub fn admin_conf(&self) -> PathBuf {
        self.dir().join("ceph.conf")
    }

    /// The monitor's `mon_host` value.
    pub fn mon_host(&self) -> String {
        format!(
            "[v2:127.0.0.1:{},v1:127.0.0.1:{}]",
            self.mon_v2, self.mon_v1
        )
    }

    /// The monitor's msgr1 port.
    pub fn mon_v1_port(&self) -> u16 {
        self.mon_v1
    }

    fn pid_file(&self) -> PathBuf {
        self.dir().join("daemon-pids")
    }

    /// The reaper: `sh` waits for EOF on its stdin (our pipe; closed when this process ends or
    /// the cluster is dropped), then kills every daemon pid we recorded and removes the dir.
    fn start_reaper(&self) -> Result<(), String> {
        let script = r#"cat >/dev/null; p=$(cat "$1" 2>/dev/null); [ -n "$p" ] && kill $p 2>/dev/null; sleep 1; [ -n "$p" ] && kill -9 $p 2>/dev/null; rm -rf "$2""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("reaper")
            .arg(self.pid_file())
            .arg(self.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn reaper: {e}"))?;
        let stdin = child.stdin.take().ok_or("reaper stdin")?;
        *self.reaper.lock().map_err(|_| "reaper lock")? = Some((child, stdin));
        Ok(())
    }

    fn record_pid(&self, pid: u32) -> Result<(), String> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.pid_file())
            .map_err(|e| format!("pid file: {e}"))?;
        writeln!(f, "{pid}").map_err(|e| format!("pid file: {e}"))
    }

    /// Runs a command to completion (stdout on success, the whole story on failure).
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `client.admin` connection (made when the monitor first answers).
    pub fn admin(&self) -> Result<&rbd::Cluster, String> {
        if let Some(c) = self.admin.get() {
            return Ok(c);
        }
        let opts = rbd::ConnectOptions {
            conf: self.admin_conf(),
            client: rbd::ClientId::new("admin").map_err(|e| e.to_string())?,
            keyring: None,
            timeout: Duration::from_secs(60),
        };
        let c = rbd::Cluster::connect(&opts).map_err(|e| {
            format!(
                "connect as client.admin: {e}\nmon log:\n{}",
                tail(&self.dir().join("log/mon.a.log"), 20)
            )
        })?;
        Ok(self.admin.get_or_init(|| c))
    }

    /// One monitor command as `client.admin`, in its JSON form (`{"prefix":"osd pool create",
    /// "pool":"rbd","pg_num":8}`); its output buffer as text (with `"format":"json"`, JSON).
    pub fn mon_command(&self, cmd: &str) -> Result<String, String> {
        let (out, _) = self
            .admin()?
            .mon_command(cmd)
            .map_err(|e| format!("{cmd}: {e}"))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Another cephx user with `client.csi`'s caps (a second node plugin of the two-node tests
    /// maps as its own user, so that two plugins on one kernel each see only their own
    /// mappings). Returns its `ceph.conf` and keyring, made like [`CephCluster::conf`]'s.
    pub fn add_client(&self, id: &str) -> Result<(PathBuf, PathBuf), String> {
        let pool_cap = format!("profile rbd pool={POOL}");
        let cmd = format!(
            r#"{{"prefix":"auth get-or-create","entity":"client.{id}","caps":["mon","profile rbd","osd","{pool_cap}","mgr","{pool_cap}"],"format":"plain"}}"#
        );
        let keyring = self.dir().join(format!("{id}.keyring"));
        let conf = self.dir().join(format!("{id}.conf"));
        if keyring.exists() && conf.exists() {
            return Ok((conf, keyring));
        }
        let keyring_text = self.mon_command(&cmd)?;
        if !keyring_text.contains("key") {
            return Err(format!("auth get-or-create client.{id}: {keyring_text:?}"));
        }
        write_private(&keyring, &keyring_text)?;
        let mut text = fs::read_to_string(self.conf()).map_err(|e| e.to_string())?;
        text.push_str(&format!("[client.{id}]\nkeyring = {}\n", keyring.display()));
        fs::write(&conf, text).map_err(|e| e.to_string())?;
        Ok((conf, keyring))
    }

    /// The `rbd` CLI as admin (for checking our results, never on the driver's path).
    pub fn rbd(&self, args: &[&str]) -> Result<String, String> {
        let conf = self.admin_conf();
        let conf = conf.to_string_lossy();
        let mut all = vec!["-c", &conf];
        all.extend_from_slice(args);
        self.run("rbd", &all)
    }

    fn spawn(&self, program: &str, args: &[String], log: &str) -> Result<Child, String> {
        let out = fs::File::create(self.dir().join("log").join(log)).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {program}: {e}"))?;
        self.record_pid(child.id())?;
        Ok(child)
    }

    /// The confs. `mon_data_avail_crit = 0`: a test monitor must not refuse to start on a busy
    /// disk (it did, with 4 % of a CI machine's disk free). One setting for a cheap start, measured: `paxos_propose_interval` 0.05 s
    /// instead of 1 s (every osdmap change waited for it; host start to a ready pool 8.5 s ->
    /// 1.0 s). Tried and left out, no effect beyond the noise in the VM rig (qemu TCG, 2 vCPUs,
    /// start 14-20 s either way): one messenger worker (`ms_async_op_threads`), one OSD op shard
    /// and thread, `osd_open_classes_on_start = false`.
    fn write_confs(&self, fsid: &str) -> Result<(), String> {
        let d = self.dir().display().to_string();
        let osd_bytes = self.osd_bytes;
        let common = format!(
            "fsid = {fsid}\nmon_host = {mon}\nauth_cluster_required = cephx\n\
             auth_service_required = cephx\nauth_client_required = cephx\n\
             run_dir = {d}/run\nadmin_socket = {d}/run/$name.$pid.asok\n\
             log_file = {d}/log/$name.log\nms_bind_ipv4 = true\nms_bind_ipv6 = false\n\
             public_addr = 127.0.0.1\n",
            mon = self.mon_host()
        );
        let admin = format!(
            "[global]\n{common}keyring = {d}/keyring\npid_file = {d}/run/$name.pid\n\
             osd_pool_default_size = 1\nosd_pool_default_min_size = 1\n\
             mon_allow_pool_size_one = true\nmon_warn_on_pool_no_redundancy = false\n\
             mon_data_avail_warn = 1\nmon_data_avail_crit = 0\nosd_objectstore = memstore\n\
             memstore_device_bytes = {osd_bytes}\nosd_data = {d}/osd$id\nmon_data = {d}/mon\n\
             mgr_data = {d}/mgr\nosd_crush_chooseleaf_type = 0\n\
             osd_crush_update_on_start = false\nauth_allow_insecure_global_id_reclaim = false\n\
             mgr_stats_period = 1\nmon_osd_reporter_subtree_level = osd\n\
             paxos_propose_interval = 0.05\n\
             osd_pool_default_pg_num = 8\nosd_pool_default_pgp_num = 8\n\
             [osd]\nkeyring = {d}/osd$id/keyring\n\
             [mgr]\nkeyring = {d}/mgr/keyring\n"
        );
        let client = format!(
            "[global]\n{common}\n[client.{CLIENT_ID}]\nkeyring = {d}/{CLIENT_ID}.keyring\n\
             log_file = {d}/log/$name.$pid.log\n"
        );
        fs::write(self.admin_conf(), admin).map_err(|e| e.to_string())?;
        fs::write(self.conf(), client).map_err(|e| e.to_string())
    }

    fn mon_args(&self) -> Vec<String> {
        let d = self.dir().display().to_string();
        vec![
            "-f".into(),
            "-c".into(),
            self.admin_conf().display().to_string(),
            "-i".into(),
            "a".into(),
            "--mon-data".into(),
            format!("{d}/mon"),
        ]
    }

    /// Makes and starts the daemons; returns when each phase was done (seconds since `t0`).
    fn bootstrap(&self, t0: Instant, with_mgr: bool) -> Result<String, String> {
        let mut phases = Vec::new();
        let mut done =
            |what: &str| phases.push(format!("{what} {:.1}", t0.elapsed().as_secs_f64()));
        let d = self.dir().display().to_string();
        let fsid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        self.write_confs(&fsid)?;
        let conf = self.admin_conf().display().to_string();

        // Every key, made here; the monitor's initial keyring holds them all with their caps.
        let osd_key = new_cephx_key()?;
        let mgr_key = new_cephx_key()?;
        let csi_key = new_cephx_key()?;
        let csi_entity = format!("client.{CLIENT_ID}");
        let pool_cap = format!("profile rbd pool={POOL}");
        let csi_caps = [
            ("mon", "profile rbd"),
            ("osd", pool_cap.as_str()),
            ("mgr", pool_cap.as_str()),
        ];
        let osd_caps = [("mon", "allow profile osd"), ("osd", "allow *")];
        let mgr_caps = [
            ("mon", "allow profile mgr"),
            ("osd", "allow *"),
            ("mds", "allow *"),
        ];
        let keyring = format!("{d}/keyring");
        let initial = [
            keyring_entry("mon.", &new_cephx_key()?, &[("mon", "allow *")]),
            keyring_entry(
                "client.admin",
                &new_cephx_key()?,
                &[("mon", "allow *"), ("osd", "allow *"), ("mgr", "allow *")],
            ),
            keyring_entry("osd.0", &osd_key, &osd_caps),
            keyring_entry("mgr.x", &mgr_key, &mgr_caps),
            keyring_entry(&csi_entity, &csi_key, &csi_caps),
        ]
        .concat();
        write_private(Path::new(&keyring), &initial)?;
        let osd_data = format!("{d}/osd0");
        write_private(
            &Path::new(&osd_data).join("keyring"),
            &keyring_entry("osd.0", &osd_key, &[]),
        )?;
        write_private(
            &self.dir().join("mgr/keyring"),
            &keyring_entry("mgr.x", &mgr_key, &[]),
        )?;
        write_private(
            &self.keyring(),
            &keyring_entry(&csi_entity, &csi_key, &csi_caps),
        )?;

        let monmap = format!("{d}/monmap");
        self.run(
            "monmaptool",
            &[
                "--create",
                "--addv",
                "a",
                &self.mon_host(),
                "--fsid",
                &fsid,
                &monmap,
            ],
        )?;
        self.run(
            "ceph-mon",
            &[
                "-c",
                &conf,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &monmap,
                "--keyring",
                &keyring,
                "--mon-data",
                &format!("{d}/mon"),
            ],
        )?;
        done("mon mkfs");
        // The OSD's store while the monitor starts (it needs none: --no-mon-config).
        let mkfs = Command::new("ceph-osd")
            .args([
                "-c",
                &conf,
                "-i",
                "0",
                "--mkfs",
                "--no-mon-config",
                "--osd-data",
                &osd_data,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ceph-osd --mkfs: {e}"))?;
        self.start_mon()?;
        done("mon");

        if with_mgr {
            let mgr = self.spawn(
                "ceph-mgr",
                &[
                    "-f".into(),
                    "-c".into(),
                    conf.clone(),
                    "-i".into(),
                    "x".into(),
                ],
                "mgr.out",
            )?;
            self.daemons.lock().map_err(|_| "lock")?.mgr = Some(mgr);
        }

        let osd = self.mon_command(r#"{"prefix":"osd create"}"#)?;
        if osd.trim() != "0" {
            return Err(format!("osd create gave id {osd}, expected 0"));
        }
        for cmd in [
            r#"{"prefix":"osd crush add-bucket","name":"host0","type":"host"}"#,
            r#"{"prefix":"osd crush move","name":"host0","args":["root=default"]}"#,
            r#"{"prefix":"osd crush add","id":0,"weight":1.0,"args":["host=host0"]}"#,
        ] {
            self.mon_command(cmd)?;
        }
        let out = mkfs
            .wait_with_output()
            .map_err(|e| format!("ceph-osd --mkfs: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ceph-osd --mkfs: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        done("osd mkfs");
        let osd = self.spawn(
            "ceph-osd",
            &[
                "-f".into(),
                "-c".into(),
                conf.clone(),
                "-i".into(),
                "0".into(),
                "--osd-data".into(),
                osd_data,
            ],
            "osd.0.out",
        )?;
        self.daemons.lock().map_err(|_| "lock")?.osd = Some(osd);
        self.mon_command(&format!(
            r#"{{"prefix":"osd pool create","pool":"{POOL}","pg_num":8,"pgp_num":8}}"#
        ))?;
        self.mon_command(&format!(
            r#"{{"prefix":"osd pool application enable","pool":"{POOL}","app":"rbd"}}"#
        ))?;
        self.wait_for_osd_up()?;
        done("osd up");
        // Writes an object: returns once the pool's placement groups are active.
        self.admin()?
            .pool(POOL)
            .and_then(|p| p.init_for_rbd())
            .map_err(|e| {
                format!(
                    "{e}\nosd log:\n{}",
                    tail(&self.dir().join("log/osd.0.log"), 20)
                )
            })?;
        done("pool");
        if with_mgr {
            self.wait_for_df()?;
            done("df");
        }
        Ok(phases.join(", "))
    }

    /// Waits until the monitor has the OSD up (`osd stat`).
    fn wait_for_osd_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let stat = self.mon_command(r#"{"prefix":"osd stat","format":"json"}"#)?;
            if stat.replace(' ', "").contains("\"num_up_osds\":1") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the OSD is not up after 300 s: {stat}\nosd log:\n{}",
                    tail(&self.dir().join("log/osd.0.log"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the manager reports the pool's free space (what GetCapacity reads).
    fn wait_for_df(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let admin = self.admin()?;
        loop {
            let usage = admin.pool_usage(POOL);
            if matches!(&usage, Ok(u) if u.available > 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pool {POOL} has no free space in `ceph df` after 90 s: {usage:?}\nmgr \
                     log:\n{}",
                    tail(&self.dir().join("log/mgr.x.log"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the monitor (again, on the same ports) and waits until it answers.
    pub fn start_mon(&self) -> Result<(), String> {
        let mut daemons = self.daemons.lock().map_err(|_| "lock")?;
        if daemons.mon.is_some() {
            return Ok(());
        }
        daemons.mon = Some(self.spawn("ceph-mon", &self.mon_args(), "mon.a.out")?);
        drop(daemons);
        self.mon_command(r#"{"prefix":"mon stat"}"#).map(drop)
    }

    /// Stops the monitor (SIGKILL): new connections and monitor commands then fail.
    pub fn stop_mon(&self) -> Result<(), String> {
        let mut daemons = self.daemons.lock().map_err(|_| "lock")?;
        if let Some(mut mon) = daemons.mon.take() {
            mon.kill().map_err(|e| format!("kill mon: {e}"))?;
            mon.wait().map_err(|e| format!("wait mon: {e}"))?;
        }
        Ok(())
    }

    /// Whether the monitor process is running.
    pub fn mon_running(&self) -> bool {
        self.daemons
            .lock()
            .map(|d| d.mon.is_some())
            .unwrap_or(false)
    }
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        if let Ok(mut d) = self.daemons.lock() {
            for child in [d.osd.take(), d.mgr.take(), d.mon.take()]
                .into_iter()
                .flatten()
            {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::write(self.pid_file(), "");
        let reaper = self.reaper.lock().ok().and_then(|mut r| r.take());
        if let Some((mut child, stdin)) = reaper {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
