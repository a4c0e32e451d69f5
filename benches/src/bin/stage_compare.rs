//! NodeStage latency and node-plugin cost at scale: our driver against the way cryptsetup-based
//! CSI drivers (ceph-csi) stage an encrypted volume, measured side by side in one run.
//!
//! Runs as root on a kernel with device-mapper and loop devices (`scripts/bench-stage` runs it
//! in the VM rig). It starts a real OpenBao dev server (Transit) and the release
//! `onmetal-csi-driver serve` through the driver's VM test rig (`testkit::plugin`: local
//! backend and dir key store under `/tmp`, a tmpfs in the VM), and then:
//!
//! 1. Per round (the flows' order rotates every round), on fresh 1 GiB sparse files on the same
//!    tmpfs, ext4:
//!    - `ours-encrypted`: NodeStage through the gRPC socket, first stage (attach, wrap, LUKS2
//!      format, activate, mkfs, mount) and later stage (attach, unwrap, digest check, activate,
//!      mount), each followed by NodeUnstage; `ours-plain`: the same for an unencrypted volume.
//!      Step shares come from the driver's own debug log (`step`, `elapsed_ms`).
//!    - `cryptsetup-ceph`: `losetup`, `cryptsetup luksFormat --type luks2 --hash sha256
//!      --pbkdf-memory 32768`, `cryptsetup luksOpen`, `mkfs.ext4`, `mount` (first), and
//!      `losetup`, `luksOpen`, `mount` (later), each command timed; `cryptsetup-default`: the
//!      same with cryptsetup's default PBKDF (argon2id, up to 1 GiB); `plain-commands`:
//!      `losetup`, `mkfs.ext4`, `mount`. Same mkfs options as the driver, same mount options.
//! 2. Scale: N encrypted volumes (default 50) staged by N concurrent NodeStage calls (first
//!    stage), unstaged concurrently, staged again concurrently (later stage), left idle, and
//!    unstaged: results, wall times, the plugin's peak RSS (VmHWM, reset through
//!    `/proc/PID/clear_refs`, and VmRSS sampled every 10 ms), its fds and threads before and
//!    after, KMS calls (the driver's metrics endpoint), and RSS and CPU while idle.
//!
//! Every mount uses `noinit_itable`, so that ext4's background inode-table zeroing (which
//! would run on after each first mount) does not steal CPU from the next measurement.
//!
//! `--backend rbd`: the same on Ceph RBD, against a single-node Ceph started in the run
//! (`testkit::ceph`: one monitor, one OSD on memstore, in the guest's memory): the driver runs
//! `--backend rbd`; the command flows attach with `rbd device map` (as `client.csi`, with
//! `--options noudev`: the VM runs no udev) of a fresh 1 GiB image and detach with `rbd device
//! unmap`, as ceph-csi's node plugin does (its `rbd map`, then `cryptsetup luksOpen`, mount);
//! `cryptsetup-default` is left out.
//!
//! Usage: `stage_compare [--backend local|rbd] [--quick] [--rounds N] [--scale N] [--idle-secs S]
//! [--skip-default]`; `ONMETAL_CSI_DRIVER` names the driver binary (see `scripts/bench-stage`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use csi::proto;
use csi::proto::node_client::NodeClient;
use csi::proto::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use testkit::ceph::{CLIENT_ID, CephCluster, POOL};
use testkit::peers;
use testkit::plugin::{Rig, Setup};

const GIB: u64 = 1 << 30;
/// The driver's ext4 options (`csi/src/mount.rs`), used for the command flows too.
const MKFS_EXT4: &[&str] = &[
    "-q",
    "-F",
    "-E",
    "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
];
const MOUNT_OPTS: &str = "noinit_itable";

struct Options {
    rbd: bool,
    rounds: usize,
    scale: usize,
    idle: Duration,
    skip_default: bool,
}

fn parse_args() -> Result<Options> {
    let usage = "usage: stage_compare [--backend local|rbd] [--quick] [--rounds N] [--scale N] \
                 [--idle-secs S] [--skip-default]";
    let mut o = Options {
        rbd: false,
        rounds: 5,
        scale: 50,
        idle: Duration::from_secs(20),
        skip_default: false,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<usize> {
        v.and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n >= 1)
            .with_context(|| format!("{name} takes a positive number\n{usage}"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.rounds = 3;
                o.idle = Duration::from_secs(10);
            }
            "--rounds" => o.rounds = num(args.next(), "--rounds")?,
            "--scale" => o.scale = num(args.next(), "--scale")?,
            "--idle-secs" => o.idle = Duration::from_secs(num(args.next(), "--idle-secs")? as u64),
            "--skip-default" => o.skip_default = true,
            "--backend" => match args.next().as_deref() {
                Some("local") => o.rbd = false,
                Some("rbd") => o.rbd = true,
                _ => bail!("--backend takes local or rbd\n{usage}"),
            },
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}\n{usage}"),
        }
    }
    Ok(o)
}

// --- small helpers ---------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs a command; fails with its stderr unless it exits 0; returns stdout and wall time.
fn run(cmd: &mut Command) -> Result<(String, Duration)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let took = t.elapsed();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), took))
}

fn sh(program: &str, args: &[&str]) -> Result<(String, Duration)> {
    run(Command::new(program).args(args))
}

/// Detaches a command flow's device: `rbd device unmap` (with `conf`) or `losetup --detach`.
fn detach(conf: Option<&str>, dev: &str) -> Result<()> {
    match conf {
        Some(conf) => sh(
            "rbd",
            &[
                "-c",
                conf,
                "--id",
                CLIENT_ID,
                "device",
                "unmap",
                "--options",
                "noudev",
                dev,
            ],
        )?,
        None => sh("losetup", &["--detach", dev])?,
    };
    Ok(())
}

fn sparse_file(path: &Path, size: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

fn mount_cap() -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![MOUNT_OPTS.into()],
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

// --- the plugin process, from /proc ----------------------------------------------------------

/// What /proc says about the plugin.
#[derive(Debug, Clone, Copy, Default)]
struct Proc {
    rss_kib: u64,
    /// Of the RSS: anonymous memory (heap, stacks) and file pages (the program and its shared
    /// libraries, librados/librbd among them).
    anon_kib: u64,
    file_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: u64,
}

fn status_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proc_now(pid: u32) -> Result<Proc> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(Proc {
        rss_kib: status_field(&status, "VmRSS"),
        anon_kib: status_field(&status, "RssAnon"),
        file_kib: status_field(&status, "RssFile"),
        hwm_kib: status_field(&status, "VmHWM"),
        threads: status_field(&status, "Threads"),
        fds,
    })
}

/// Resets the plugin's VmHWM to its current RSS.
fn reset_hwm(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM")
}

/// utime + stime of the plugin, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok(utime + stime)
}

/// Samples VmRSS and Threads every 10 ms until stopped; returns the maxima.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut rss, mut threads) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                if let Ok(p) = proc_now(pid) {
                    rss = rss.max(p.rss_kib);
                    threads = threads.max(p.threads);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (rss, threads)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

// --- the driver's metrics and step log -------------------------------------------------------

/// `onmetal_csi_kms_request_duration_seconds_count` by operation.
fn kms_counts(metrics: &str) -> Result<BTreeMap<String, u64>> {
    let (text, _) = sh(
        "curl",
        &["-sS", "-m", "10", &format!("http://{metrics}/metrics")],
    )?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("onmetal_csi_kms_request_duration_seconds_count{")
        else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("operation=\""))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        out.insert(op, value.trim().parse().unwrap_or(0));
    }
    Ok(out)
}

/// Reads the driver's JSON log from where the last read stopped.
struct StepLog {
    path: PathBuf,
    offset: u64,
}

impl StepLog {
    /// The `step` timings logged since the last call, summed by step name.
    fn steps(&mut self) -> Result<BTreeMap<String, f64>> {
        let mut f = fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        // Only whole lines; a partial last line is read next time.
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += end as u64;
        let mut out = BTreeMap::new();
        for line in text[..end].lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let fields = &v["fields"];
            if fields["message"] != "step" {
                continue;
            }
            if let (Some(step), Some(t)) = (fields["step"].as_str(), fields["elapsed_ms"].as_f64())
            {
                *out.entry(step.to_owned()).or_insert(0.0) += t;
            }
        }
        Ok(out)
    }
}

// --- one flow, one round ---------------------------------------------------------------------

/// One stage: total wall time and per-step times (ms).
#[derive(Debug, Default, Clone)]
struct Stage {
    total: f64,
    steps: BTreeMap<String, f64>,
}

/// The first and later stage of one volume.
#[derive(Debug, Default, Clone)]
struct Sample {
    first: Stage,
    later: Vec<Stage>,
}

struct Bench {
    rig: Rig,
    bao: peers::bao::Bao,
    secrets: HashMap<String, String>,
    log: StepLog,
    metrics: String,
    work: PathBuf,
    seq: usize,
    /// `--backend rbd`: the cluster the volumes and the command flows' images live on.
    ceph: Option<CephCluster>,
}

const LATER_PER_ROUND: usize = 2;

impl Bench {
    fn pid(&self) -> u32 {
        self.rig.driver.as_ref().map_or(0, std::process::Child::id)
    }

    fn node(&self) -> NodeClient<tonic::transport::Channel> {
        NodeClient::new(self.rig.ch.clone().expect("driver running"))
    }

    fn create(&mut self, encrypted: bool) -> Result<proto::Volume> {
        self.seq += 1;
        let mut params = if encrypted {
            testkit::plugin::transit_params(&self.bao.url)
        } else {
            testkit::plugin::plain_params()
        };
        if self.ceph.is_some() {
            params.insert("volume_pool".into(), POOL.into());
        }
        let name = format!(
            "bench-{}-{}",
            if encrypted { "enc" } else { "plain" },
            self.seq
        );
        self.rig
            .create(&name, GIB as i64, &params, false)
            .map_err(|s| anyhow::anyhow!("CreateVolume {name}: {s}"))
    }

    fn staging(&self, v: &proto::Volume) -> PathBuf {
        self.rig.path(&format!("staging/{}", v.volume_id))
    }

    fn stage_timed(&mut self, v: &proto::Volume) -> Result<Stage> {
        self.log.steps()?; // skip whatever came before
        let staging = self.staging(v);
        let took = self
            .rig
            .stage(v, &staging, mount_cap(), &self.secrets)
            .map_err(|s| anyhow::anyhow!("NodeStage {}: {s}", v.volume_id))?;
        // The driver logs its steps before it answers.
        Ok(Stage {
            total: ms(took),
            steps: self.log.steps()?,
        })
    }

    fn unstage(&self, v: &proto::Volume) -> Result<()> {
        self.rig
            .unstage(&v.volume_id, &self.staging(v))
            .map_err(|s| anyhow::anyhow!("NodeUnstage {}: {s}", v.volume_id))
    }

    /// Our driver: first stage, unstage, then `LATER_PER_ROUND` times stage + unstage.
    fn ours(&mut self, encrypted: bool) -> Result<Sample> {
        let v = self.create(encrypted)?;
        let mut s = Sample {
            first: self.stage_timed(&v)?,
            later: Vec::new(),
        };
        self.unstage(&v)?;
        for _ in 0..LATER_PER_ROUND {
            s.later.push(self.stage_timed(&v)?);
            self.unstage(&v)?;
        }
        self.delete_settled(&v)?;
        Ok(s)
    }

    /// DeleteVolume, retried for up to 30 s while the backend still reports the volume in use
    /// (an RBD image's watch can outlive its unmap by a moment on a loaded guest).
    fn delete_settled(&self, v: &proto::Volume) -> Result<()> {
        let t = Instant::now();
        loop {
            match self.rig.delete(&v.volume_id) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.code() == tonic::Code::FailedPrecondition
                        && t.elapsed() < Duration::from_secs(30) =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => bail!("DeleteVolume {}: {e}", v.volume_id),
            }
        }
    }

    /// The command flows: `luks` = None (plain), Some(format arguments) for cryptsetup.
    fn commands(&mut self, luks: Option<&[&str]>) -> Result<Sample> {
        self.seq += 1;
        let img = self.work.join(format!("cmd-{}.img", self.seq));
        let key = self.work.join("cmd.key");
        let mnt = self.work.join(format!("cmd-mnt-{}", self.seq));
        let name = format!("bench-cmd-{}", self.seq);
        let mapper = format!("/dev/mapper/{name}");
        fs::create_dir_all(&mnt)?;
        let rbd_image = format!("{POOL}/cmd-{}", self.seq);
        match &self.ceph {
            Some(c) => {
                c.rbd(&["create", "--size", "1G", &rbd_image])
                    .map_err(|e| anyhow::anyhow!("rbd create: {e}"))?;
            }
            None => sparse_file(&img, GIB)?,
        }
        let imgs = img.display().to_string();
        let conf = self.ceph.as_ref().map(|c| c.conf().display().to_string());
        let mnts = mnt.display().to_string();
        let keys = key.display().to_string();
        let mut sample = Sample::default();
        let res = (|| -> Result<()> {
            for pass in 0..=LATER_PER_ROUND {
                let mut st = Stage::default();
                let t0 = Instant::now();
                let dev = match &conf {
                    Some(conf) => {
                        let (dev, t) = sh(
                            "rbd",
                            &["-c", conf, "--id", CLIENT_ID, "device", "map"]
                                .into_iter()
                                .chain(["--options", "noudev", &rbd_image])
                                .collect::<Vec<_>>(),
                        )?;
                        st.steps.insert("rbd map".into(), ms(t));
                        dev
                    }
                    None => {
                        let (dev, t) = sh("losetup", &["--find", "--show", &imgs])?;
                        st.steps.insert("losetup".into(), ms(t));
                        dev
                    }
                };
                let dev = dev.trim().to_owned();
                let fs_dev = if let Some(format_args) = luks {
                    if pass == 0 {
                        let mut a = vec!["luksFormat", "--type", "luks2", "--batch-mode"];
                        a.extend_from_slice(format_args);
                        a.extend_from_slice(&["--key-file", &keys, &dev]);
                        st.steps
                            .insert("luksFormat".into(), ms(sh("cryptsetup", &a)?.1));
                    }
                    let t = sh(
                        "cryptsetup",
                        &["luksOpen", "--key-file", &keys, &dev, &name],
                    )?
                    .1;
                    st.steps.insert("luksOpen".into(), ms(t));
                    mapper.clone()
                } else {
                    dev.clone()
                };
                if pass == 0 {
                    let mut a = MKFS_EXT4.to_vec();
                    a.push(&fs_dev);
                    st.steps.insert("mkfs".into(), ms(sh("mkfs.ext4", &a)?.1));
                }
                let t = sh("mount", &["-t", "ext4", "-o", MOUNT_OPTS, &fs_dev, &mnts])?.1;
                st.steps.insert("mount".into(), ms(t));
                st.total = ms(t0.elapsed());
                if pass == 0 {
                    sample.first = st;
                } else {
                    sample.later.push(st);
                }
                sh("umount", &[&mnts])?;
                if luks.is_some() {
                    sh("cryptsetup", &["luksClose", &name])?;
                }
                detach(conf.as_deref(), &dev)?;
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = sh("umount", &[&mnts]);
            let _ = sh("cryptsetup", &["luksClose", &name]);
            if conf.is_none()
                && let Ok((out, _)) = sh("losetup", &["-n", "-O", "NAME", "-j", &imgs])
            {
                for d in out.lines() {
                    let _ = sh("losetup", &["--detach", d.trim()]);
                }
            }
        }
        if let Some(c) = &self.ceph {
            if res.is_err() {
                let krbd = rbd::KernelRbd::new();
                if let Ok(Some(m)) = krbd.find(POOL, &format!("cmd-{}", self.seq)) {
                    let _ = krbd.unmap_id(m.id, true);
                }
            }
            let _ = c.rbd(&["rm", "--no-progress", &rbd_image]);
        }
        let _ = fs::remove_file(&img);
        let _ = fs::remove_dir(&mnt);
        res.map(|()| sample)
    }

    /// `luksDump`'s keyslot PBKDF lines of a header made with `format_args`.
    fn kdf_of(&self, format_args: &[&str]) -> Result<String> {
        let img = self.work.join("kdf.img");
        sparse_file(&img, 32 << 20)?;
        let keys = self.work.join("cmd.key").display().to_string();
        let imgs = img.display().to_string();
        let mut a = vec!["luksFormat", "--type", "luks2", "--batch-mode"];
        a.extend_from_slice(format_args);
        a.extend_from_slice(&["--key-file", &keys, &imgs]);
        sh("cryptsetup", &a)?;
        let (dump, _) = sh("cryptsetup", &["luksDump", &imgs])?;
        let _ = fs::remove_file(&img);
        let mut out = Vec::new();
        let mut in_slots = false;
        for l in dump.lines() {
            if l.starts_with("Keyslots:") {
                in_slots = true;
            } else if l.starts_with("Tokens:") {
                in_slots = false;
            }
            let t = l.trim();
            if in_slots
                && ["PBKDF:", "Time cost:", "Memory:", "Threads:", "Iterations:"]
                    .iter()
                    .any(|p| t.starts_with(p))
            {
                out.push(t.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        Ok(out.join(", "))
    }
}

// --- scale -----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Phase {
    ok: usize,
    failed: Vec<String>,
    wall: Duration,
    hwm_kib: u64,
    sampled_rss_kib: u64,
    sampled_threads: u64,
}

#[derive(Debug, Default)]
struct Scale {
    n: usize,
    before: Proc,
    first: Phase,
    unstage1: Phase,
    later: Phase,
    idle_rss_kib: u64,
    idle_threads: u64,
    idle_fds: u64,
    idle_cpu_pct: f64,
    idle_secs: f64,
    unstage2: Phase,
    after: Proc,
    after_settled: Proc,
    kms: BTreeMap<String, u64>,
}

/// How long the scale part waits for one call of many at once.
const CALL_LIMIT: Duration = Duration::from_secs(300);

enum Op {
    Stage,
    Unstage,
}

impl Bench {
    fn concurrent(&self, vols: &[proto::Volume], op: &Op) -> Result<Phase> {
        let pid = self.pid();
        reset_hwm(pid)?;
        let sampler = Sampler::start(pid);
        let t = Instant::now();
        let results: Vec<Result<(), tonic::Status>> = self.rig.rt.block_on(async {
            let mut tasks = Vec::new();
            for v in vols {
                let mut c = self.node();
                let staging = self.staging(v).display().to_string();
                let id = v.volume_id.clone();
                let fut: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = match op {
                    Op::Stage => {
                        let req = proto::NodeStageVolumeRequest {
                            volume_id: id,
                            staging_target_path: staging,
                            volume_capability: Some(mount_cap()),
                            secrets: self.secrets.clone(),
                            volume_context: v.volume_context.clone(),
                            publish_context: HashMap::new(),
                        };
                        Box::pin(async move { c.node_stage_volume(req).await.map(|_| ()) })
                    }
                    Op::Unstage => {
                        let req = proto::NodeUnstageVolumeRequest {
                            volume_id: id,
                            staging_target_path: staging,
                        };
                        Box::pin(async move { c.node_unstage_volume(req).await.map(|_| ()) })
                    }
                };
                // A call that never returns (a write held by a full pool, a hung device) is a
                // failure of the run, not a run that never ends.
                tasks.push(tokio::spawn(async move {
                    match tokio::time::timeout(CALL_LIMIT, fut).await {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {} s",
                            CALL_LIMIT.as_secs()
                        ))),
                    }
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(
                    t.await
                        .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string()))),
                );
            }
            out
        });
        let wall = t.elapsed();
        let (sampled_rss_kib, sampled_threads) = sampler.finish();
        let p = proc_now(pid)?;
        let mut phase = Phase {
            wall,
            hwm_kib: p.hwm_kib,
            sampled_rss_kib,
            sampled_threads,
            ..Phase::default()
        };
        for r in results {
            match r {
                Ok(()) => phase.ok += 1,
                Err(s) => phase
                    .failed
                    .push(format!("{:?}: {}", s.code(), s.message())),
            }
        }
        Ok(phase)
    }

    fn scale(&mut self, n: usize, idle: Duration) -> Result<Scale> {
        let mut vols = Vec::new();
        for _ in 0..n {
            vols.push(self.create(true)?);
        }
        let pid = self.pid();
        let kms0 = kms_counts(&self.metrics)?;
        let mut s = Scale {
            n,
            before: proc_now(pid)?,
            ..Scale::default()
        };
        eprintln!("stage_compare: scale: {n} concurrent first stages");
        s.first = self.concurrent(&vols, &Op::Stage)?;
        eprintln!("stage_compare: scale: {n} concurrent unstages");
        s.unstage1 = self.concurrent(&vols, &Op::Unstage)?;
        eprintln!("stage_compare: scale: {n} concurrent later stages");
        s.later = self.concurrent(&vols, &Op::Stage)?;
        eprintln!(
            "stage_compare: scale: idle {}s with {n} staged",
            idle.as_secs()
        );
        let (c0, t0) = (cpu_ticks(pid)?, Instant::now());
        std::thread::sleep(idle);
        let (c1, secs) = (cpu_ticks(pid)?, t0.elapsed().as_secs_f64());
        let ticks = sh("getconf", &["CLK_TCK"])?
            .0
            .trim()
            .parse::<f64>()
            .unwrap_or(100.0);
        s.idle_cpu_pct = (c1 - c0) as f64 / ticks / secs * 100.0;
        s.idle_secs = secs;
        let p = proc_now(pid)?;
        (s.idle_rss_kib, s.idle_threads, s.idle_fds) = (p.rss_kib, p.threads, p.fds);
        eprintln!("stage_compare: scale: {n} concurrent unstages");
        s.unstage2 = self.concurrent(&vols, &Op::Unstage)?;
        s.after = proc_now(pid)?;
        // tokio's blocking threads exit after 10 s idle.
        std::thread::sleep(Duration::from_secs(12));
        s.after_settled = proc_now(pid)?;
        let kms1 = kms_counts(&self.metrics)?;
        for (op, v) in kms1 {
            let d = v - kms0.get(&op).copied().unwrap_or(0);
            s.kms.insert(op, d);
        }
        // A volume left behind is reported with the last unstage (and fails the run at the
        // end), after the tables are printed.
        for v in &vols {
            if let Err(e) = self.delete_settled(v) {
                s.unstage2.failed.push(format!("then {e}"));
            }
        }
        Ok(s)
    }
}

// --- report ----------------------------------------------------------------------------------

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn step_medians(stages: &[&Stage]) -> BTreeMap<String, f64> {
    let mut names: Vec<&String> = stages.iter().flat_map(|s| s.steps.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let v = stages
                .iter()
                .map(|s| s.steps.get(n).copied().unwrap_or(0.0))
                .collect();
            (n.clone(), median(v))
        })
        .collect()
}

fn steps_text(m: &BTreeMap<String, f64>, total: f64) -> String {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    v.iter()
        .filter(|(_, t)| **t >= 0.05)
        .map(|(n, t)| format!("{n} {t:.0} ({:.0}%)", **t / total * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .map(|t| status_field(&t, "MemTotal"))
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cs = sh("cryptsetup", &["--version"])
        .map(|o| o.0)
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({cpu}), {:.1} GiB, kernel {}, {}, guest load average at the end: {}",
        mem as f64 / 1048576.0,
        kernel.trim(),
        cs.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    ensure!(
        testkit::privileged::privileged(),
        "needs root and device-mapper (run scripts/bench-stage)"
    );
    let started = Instant::now();
    let (bao, token) = testkit::plugin::bao();
    let metrics = format!("127.0.0.1:{}", peers::free_port());
    let ceph = if opts.rbd {
        // Every encrypted volume of the scale part keeps its LUKS2 header area (16 MiB) and
        // ext4's metadata and inode tables (zeroed by the kernel after mount: about 20 MiB for
        // 1 GiB) on the OSD: 64 MiB each and 1 GiB for the rest. A full memstore OSD would hold
        // the stages' writes forever.
        let osd_bytes = (1u64 << 30) + (opts.scale as u64) * (64 << 20);
        Some(CephCluster::start_sized(false, osd_bytes).map_err(|e| anyhow::anyhow!("Ceph: {e}"))?)
    } else {
        None
    };
    let setup = Setup {
        backend: ceph.as_ref().map(|c| {
            vec![
                "rbd".into(),
                "--ceph-conf".into(),
                c.conf().display().to_string(),
                "--ceph-id".into(),
                CLIENT_ID.into(),
            ]
        }),
        ..Setup::default()
    };
    let rig = Rig::set_up(
        setup,
        Vec::new(),
        vec![
            "--metrics-address".into(),
            metrics.clone(),
            "--log-format".into(),
            "json".into(),
        ],
    );
    let log = StepLog {
        path: rig.path("driver-1.log"),
        offset: 0,
    };
    let work = rig.path("commands");
    fs::create_dir_all(&work)?;
    // Test material for the command flows (a throwaway key on the guest's tmpfs).
    let mut key = [0u8; 64];
    getrandom_fill(&mut key)?;
    fs::write(work.join("cmd.key"), key)?;
    let mut b = Bench {
        rig,
        bao,
        secrets: testkit::plugin::token_secrets(&token),
        log,
        metrics,
        work,
        seq: 0,
        ceph,
    };

    const CEPH: &[&str] = &["--hash", "sha256", "--pbkdf-memory", "32768"];
    let mut flows: Vec<&str> = vec![
        "ours-encrypted",
        "ours-plain",
        "cryptsetup-ceph",
        "cryptsetup-default",
        "plain-commands",
    ];
    if opts.skip_default || opts.rbd {
        flows.retain(|f| *f != "cryptsetup-default");
    }
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..opts.rounds {
        for i in 0..flows.len() {
            let flow = flows[(i + round) % flows.len()];
            eprintln!("stage_compare: round {}/{}: {flow}", round + 1, opts.rounds);
            let s = match flow {
                "ours-encrypted" => b.ours(true)?,
                "ours-plain" => b.ours(false)?,
                "cryptsetup-ceph" => b.commands(Some(CEPH))?,
                "cryptsetup-default" => b.commands(Some(&[]))?,
                _ => b.commands(None)?,
            };
            samples.entry(flow).or_default().push(s);
        }
    }
    let kdf_ceph = b.kdf_of(CEPH)?;
    let kdf_default = if opts.skip_default || opts.rbd {
        String::new()
    } else {
        b.kdf_of(&[])?
    };
    let scale = b.scale(opts.scale, opts.idle)?;

    // Medians.
    let med = |flow: &str, later: bool| -> (f64, BTreeMap<String, f64>) {
        let stages: Vec<&Stage> = samples
            .get(flow)
            .map(|v| {
                v.iter()
                    .flat_map(|s| {
                        if later {
                            s.later.iter().collect::<Vec<_>>()
                        } else {
                            vec![&s.first]
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            median(stages.iter().map(|s| s.total).collect()),
            step_medians(&stages),
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## NodeStage on {}: ours against the cryptsetup flow ({} rounds; first stage 1 sample, \
         later stage {LATER_PER_ROUND} samples per round; medians, ms)\n",
        if opts.rbd {
            "Ceph RBD (one OSD on memstore)"
        } else {
            "local (sparse files on tmpfs, loop devices)"
        },
        opts.rounds
    );
    let _ = writeln!(
        out,
        "| flow | first stage | later stage | steps of the later stage (median ms, share) | steps of the first stage |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---|");
    let mut later = HashMap::new();
    for flow in &flows {
        let (f, fs_) = med(flow, false);
        let (l, ls) = med(flow, true);
        later.insert(*flow, (l, ls.clone()));
        let _ = writeln!(
            out,
            "| {flow} | {f:.0} | {l:.0} | {} | {} |",
            steps_text(&ls, l),
            steps_text(&fs_, f)
        );
    }
    let (enc, enc_steps) = later["ours-encrypted"].clone();
    let (plain, _) = later["ours-plain"].clone();
    let (ceph, _) = later["cryptsetup-ceph"].clone();
    let kms = enc_steps.get("kms_unwrap").copied().unwrap_or(f64::NAN);
    let _ = writeln!(out, "\nRatios (later stage):\n");
    let _ = writeln!(
        out,
        "- ours-encrypted / cryptsetup-ceph = {:.3} (target <= 0.3, goal 0.1)",
        enc / ceph
    );
    if let Some((d, _)) = later.get("cryptsetup-default") {
        let _ = writeln!(
            out,
            "- ours-encrypted / cryptsetup-default = {:.3}",
            enc / d
        );
    }
    let _ = writeln!(
        out,
        "- ours-encrypted / (ours-plain + one KMS round trip) = {enc:.0} / ({plain:.0} + {kms:.0}) \
         = {:.3} (target <= 1.5)",
        enc / (plain + kms)
    );
    let _ = writeln!(
        out,
        "- encryption's cost at attach (ours-encrypted - ours-plain) = {:.0} ms",
        enc - plain
    );
    let _ = writeln!(
        out,
        "\nKeyslot PBKDF of the cryptsetup headers (luksDump): ceph-csi's: {kdf_ceph}; defaults: {kdf_default}"
    );

    let s = &scale;
    let phase = |name: &str, p: &Phase| {
        format!(
            "| {name} | {}/{} | {:.1} | {:.1} | {:.1} | {} |{}",
            p.ok,
            s.n,
            p.wall.as_secs_f64(),
            mib(p.hwm_kib),
            mib(p.sampled_rss_kib),
            p.sampled_threads,
            if p.failed.is_empty() {
                String::new()
            } else {
                format!(" failures: {}", p.failed.join("; "))
            }
        )
    };
    let _ = writeln!(
        out,
        "\n## Scale: {} encrypted volumes, concurrent calls\n",
        s.n
    );
    let _ = writeln!(
        out,
        "| phase | succeeded | wall (s) | plugin peak RSS, VmHWM (MiB) | peak VmRSS sampled every 10 ms (MiB) | peak threads (sampled) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(out, "{}", phase("NodeStage, first", &s.first));
    let _ = writeln!(out, "{}", phase("NodeUnstage", &s.unstage1));
    let _ = writeln!(out, "{}", phase("NodeStage, later", &s.later));
    let _ = writeln!(out, "{}", phase("NodeUnstage", &s.unstage2));
    let _ = writeln!(
        out,
        "\n| plugin | RSS (MiB) | of it anonymous / file pages (MiB) | open fds | threads |\n\
         |---|---:|---:|---:|---:|"
    );
    for (name, p) in [
        ("before (idle, nothing staged)", s.before),
        ("right after the last unstage", s.after),
        ("12 s later", s.after_settled),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.1} / {:.1} | {} | {} |",
            mib(p.rss_kib),
            mib(p.anon_kib),
            mib(p.file_kib),
            p.fds,
            p.threads
        );
    }
    let _ = writeln!(
        out,
        "| idle with {} staged | {:.1} | | {} | {} |",
        s.n,
        mib(s.idle_rss_kib),
        s.idle_fds,
        s.idle_threads
    );
    let _ = writeln!(
        out,
        "\nIdle with {} staged: {:.2}% of one CPU (utime+stime over {:.0} s). KMS calls during \
         the scale run (driver metrics): {}.",
        s.n,
        s.idle_cpu_pct,
        s.idle_secs,
        s.kms
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "\nMachine (guest): {}. Whole run {:.0} s.",
        machine(),
        started.elapsed().as_secs_f64()
    );
    println!("{out}");
    if let Ok(dir) = std::env::var("VM_SHARE_DIR") {
        let _ = fs::write(Path::new(&dir).join("stage_compare.md"), &out);
    }
    let failed = s.first.failed.len()
        + s.unstage1.failed.len()
        + s.later.failed.len()
        + s.unstage2.failed.len();
    ensure!(failed == 0, "{failed} calls of the scale run failed");
    Ok(())
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    let mut f = fs::File::open("/dev/urandom")?;
    f.read_exact(buf)?;
    Ok(())
}
