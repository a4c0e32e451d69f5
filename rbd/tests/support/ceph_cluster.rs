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
//! Self-contained (std and `tempfile` only). Teardown: [`Drop`] kills the daemons and removes the
//! directory; and because a cluster kept in a `static` is never dropped, every cluster also has a
//! reaper process that does the same as soon as the test process is gone (it waits for the end
//! of a pipe only this process holds), whether the tests passed, panicked or were killed.
//!
//! [`CephCluster::shared`] starts one cluster per test binary. Without the Ceph binaries it
//! returns `None` after printing why (the test then skips), or panics when `CI=true`.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binaries the cluster needs.
const BINARIES: &[&str] = &[
    "ceph-mon",
    "ceph-mgr",
    "ceph-osd",
    "ceph",
    "ceph-authtool",
    "monmaptool",
    "rbd",
];

/// The cephx user made for the driver.
pub const CLIENT_ID: &str = "csi";
/// The pool made for images.
pub const POOL: &str = "rbd";
/// The OSD's memstore size.
pub const OSD_BYTES: u64 = 1 << 30;

/// A running cluster (see the module docs).
pub struct CephCluster {
    dir: tempfile::TempDir,
    mon_v1: u16,
    mon_v2: u16,
    daemons: Mutex<Daemons>,
    reaper: Mutex<Option<(Child, ChildStdin)>>,
    started_in: Duration,
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
        static CLUSTER: OnceLock<Option<CephCluster>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| {
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
                    assert!(!ci, "CI=true or in the VM rig: {msg}");
                    eprintln!("SKIP: {msg}");
                    return None;
                }
                match CephCluster::start_with(mgr) {
                    Ok(c) => Some(c),
                    Err(e) => panic!("starting the test Ceph cluster: {e}"),
                }
            })
            .as_ref()
    }

    /// Starts a new cluster (about 15 s on a 2-core host). Blocks until pool `rbd` exists and the
    /// manager reports its free space.
    pub fn start() -> Result<Self, String> {
        Self::start_with(true)
    }

    /// Starts a new cluster, with the manager or without it (then without waiting for `ceph df`).
    pub fn start_with(mgr: bool) -> Result<Self, String> {
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
            started_in: Duration::ZERO,
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

    /// The `ceph` CLI as admin.
    pub fn ceph(&self, args: &[&str]) -> Result<String, String> {
        let conf = self.admin_conf();
        let conf = conf.to_string_lossy();
        let mut all = vec!["-c", &conf, "--connect-timeout", "30"];
        all.extend_from_slice(args);
        self.run("ceph", &all)
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

    fn write_confs(&self, fsid: &str) -> Result<(), String> {
        let d = self.dir().display().to_string();
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
             mon_data_avail_warn = 1\nosd_objectstore = memstore\n\
             memstore_device_bytes = {OSD_BYTES}\nosd_data = {d}/osd$id\nmon_data = {d}/mon\n\
             mgr_data = {d}/mgr\nosd_crush_chooseleaf_type = 0\n\
             osd_crush_update_on_start = false\nauth_allow_insecure_global_id_reclaim = false\n\
             mgr_stats_period = 1\nmon_osd_reporter_subtree_level = osd\n\
             [osd]\nkeyring = {d}/osd$id/keyring\n[mgr]\nkeyring = {d}/mgr/keyring\n"
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
        let keyring = format!("{d}/keyring");
        self.run(
            "ceph-authtool",
            &[
                "--create-keyring",
                &keyring,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        )?;
        self.run(
            "ceph-authtool",
            &[
                &keyring,
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ],
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
        self.start_mon()?;
        done("mon");

        if with_mgr {
            let mgr_keyring = format!("{d}/mgr/keyring");
            self.ceph(&[
                "auth",
                "get-or-create",
                "mgr.x",
                "mon",
                "allow profile mgr",
                "osd",
                "allow *",
                "-o",
                &mgr_keyring,
            ])?;
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

        let osd = self.ceph(&["osd", "create"])?.trim().to_owned();
        if osd != "0" {
            return Err(format!("osd create gave id {osd}, expected 0"));
        }
        let osd_data = format!("{d}/osd0");
        self.run(
            "ceph-osd",
            &[
                "-c",
                &conf,
                "-i",
                "0",
                "--mkfs",
                "--mkkey",
                "--no-mon-config",
                "--osd-data",
                &osd_data,
            ],
        )?;
        self.ceph(&[
            "auth",
            "add",
            "osd.0",
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            &format!("{osd_data}/keyring"),
        ])?;
        self.ceph(&["osd", "crush", "add-bucket", "host0", "host"])?;
        self.ceph(&["osd", "crush", "move", "host0", "root=default"])?;
        self.ceph(&["osd", "crush", "add", "osd.0", "1.0", "host=host0"])?;
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
        done(if with_mgr { "mgr+osd" } else { "osd" });

        self.ceph(&["osd", "pool", "create", POOL, "8"])?;
        self.ceph(&["osd", "pool", "application", "enable", POOL, "rbd"])?;
        self.rbd(&["pool", "init", POOL])?;
        self.ceph(&[
            "auth",
            "get-or-create",
            &format!("client.{CLIENT_ID}"),
            "mon",
            "profile rbd",
            "osd",
            &format!("profile rbd pool={POOL}"),
            "mgr",
            &format!("profile rbd pool={POOL}"),
            "-o",
            &self.keyring().display().to_string(),
        ])?;
        done("pool+user");
        if with_mgr {
            self.wait_for_df()?;
            done("df");
        }
        Ok(phases.join(", "))
    }

    /// Waits until the manager reports the pool's free space (what GetCapacity reads).
    fn wait_for_df(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let df = self.ceph(&["df", "-f", "json"])?;
            let pool = format!("\"name\":\"{POOL}\"");
            if let Some(i) = df.find(&pool) {
                let rest = &df[i..];
                let ok = rest
                    .find("\"max_avail\":")
                    .map(|j| &rest[j + 12..])
                    .and_then(|v| {
                        v.split(|c: char| !c.is_ascii_digit())
                            .next()
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > 0);
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pool {POOL} has no free space in `ceph df` after 90 s: {df}\nmgr log:\n{}",
                    tail(&self.dir().join("log/mgr.x.log"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
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
        self.ceph(&["mon", "stat"]).map(drop).map_err(|e| {
            format!(
                "{e}\nmon log:\n{}",
                tail(&self.dir().join("log/mon.a.log"), 20)
            )
        })
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
