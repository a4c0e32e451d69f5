//! [`KernelRbd`] against a real kernel and a real Ceph cluster: map with the key through the
//! thread keyring, I/O on `/dev/rbdN` without udev, discovery from sysfs, the holders check
//! before and after map (our own kernel client ignored, anyone else refused), online growth from
//! the controller side with the cooperative lock mode, unmap (idempotent), Ceph unreachable
//! (bounded, Unavailable), and a dead holder fenced (blocklist + break lock) while mapped.
//!
//! Needs root and the `rbd` module (the VM rig loads it: `scripts/vm-test`, or `scripts/vm-run`
//! with this binary). Elsewhere the tests skip with a message; under the VM rig
//! (`ONMETAL_VM_TEST=1`) a missing prerequisite is a failure. One cluster (without the manager:
//! nothing here reads `ceph df`) for the whole binary; the tests run one at a time (a lock), since
//! the kernel shares one Ceph client among mappings made with the same options and two of the
//! tests take Ceph away from that client.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbd::{
    CephConf, CephxKey, ClientId, Cluster, ConnectOptions, ErrorKind, KernelRbd, MapOptions,
    MapRequest, Mapping,
};
use testkit::ceph::{CLIENT_ID, CephCluster, POOL};

const MIB: u64 = 1 << 20;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// Root and the kernel's RBD interface, or skip (fail in the VM rig).
fn privileged() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let krbd = KernelRbd::new().available();
    if root && krbd {
        return true;
    }
    let why = format!("root: {root}, /sys/bus/rbd: {krbd}");
    if std::env::var("ONMETAL_VM_TEST").as_deref() == Ok("1") {
        panic!("privileged test cannot run inside the VM rig ({why})");
    }
    eprintln!(
        "SKIPPED: privileged test needs root and the rbd kernel module ({why}); run scripts/vm-test"
    );
    false
}

/// Everything a test needs: the cluster, the driver's view of it (client, key, monitors), and a
/// guard that unmaps what the test mapped, also when it fails.
struct Rig {
    ceph: &'static CephCluster,
    client: ClientId,
    key: CephxKey,
    mons: Vec<std::net::SocketAddr>,
    krbd: KernelRbd,
    images: Vec<String>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn rig() -> Option<Rig> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return None;
    }
    let ceph = CephCluster::shared_with(false)?;
    let client = ClientId::new(CLIENT_ID).expect("id");
    let conf = CephConf::read(&ceph.conf()).expect("conf");
    let mons = rbd::msgr1_mon_addrs(conf.mon_host(&client).expect("mon_host")).expect("msgr1");
    let key = CephxKey::from_keyring_file(&conf.keyring(&client).expect("keyring"), &client)
        .expect("key");
    Some(Rig {
        ceph,
        client,
        key,
        mons,
        krbd: KernelRbd::new(),
        images: Vec::new(),
        _serial: serial,
    })
}

impl Rig {
    fn connect(&self, timeout: Duration) -> Cluster {
        Cluster::connect(&ConnectOptions {
            conf: self.ceph.conf(),
            client: self.client.clone(),
            keyring: None,
            timeout,
        })
        .expect("connect as client.csi")
    }

    /// A new image (removed again by the guard).
    fn image(&mut self, test: &str, size: u64) -> String {
        let name = format!("k-{}-{test}", std::process::id());
        self.connect(Duration::from_secs(30))
            .pool(POOL)
            .expect("pool")
            .create_image(&name, size)
            .expect("create image");
        self.images.push(name.clone());
        name
    }

    fn request<'a>(&'a self, image: &'a str, options: MapOptions) -> MapRequest<'a> {
        MapRequest {
            mons: &self.mons,
            client: &self.client,
            key: &self.key,
            pool: POOL,
            image,
            options,
        }
    }

    /// Maps with the driver's default options; prints the latency.
    fn map(&self, image: &str) -> Mapping {
        let t = Instant::now();
        let m = self
            .krbd
            .map(&self.request(image, MapOptions::default()))
            .expect("map");
        eprintln!(
            "LATENCY rbd map {image}: {:.0} ms (rbd{})",
            t.elapsed().as_secs_f64() * 1000.0,
            m.id
        );
        m
    }

    /// The key as the keyring has it (only to check it appears nowhere; never printed).
    fn key_text(&self) -> String {
        let text = std::fs::read_to_string(self.ceph.keyring()).expect("keyring");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("key = ").map(str::to_owned))
            .expect("key line")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for img in &self.images {
            if let Err(e) = self.krbd.unmap(POOL, img, true) {
                eprintln!("cleanup: unmap {img}: {e}");
            }
        }
        if self.images.is_empty() {
            return;
        }
        let Ok(cluster) = Cluster::connect(&ConnectOptions {
            conf: self.ceph.conf(),
            client: self.client.clone(),
            keyring: None,
            timeout: Duration::from_secs(10),
        }) else {
            return;
        };
        if let Ok(pool) = cluster.pool(POOL) {
            for img in &self.images {
                // A blocklisted watcher's watch may take a moment to go.
                let deadline = Instant::now() + Duration::from_secs(40);
                loop {
                    match pool.remove_image(img) {
                        Ok(()) => break,
                        Err(e) if e.kind() == ErrorKind::NotFound => break,
                        Err(e) if e.kind() == ErrorKind::Busy && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(e) => {
                            eprintln!("cleanup: remove {img}: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

fn pattern(seed: u8) -> Box<Block> {
    let mut b = Box::new(Block([0; 4096]));
    for (x, i) in b.0.iter_mut().zip((0..=u8::MAX).cycle()) {
        *x = seed ^ i.wrapping_mul(31);
    }
    b
}

fn open_direct(dev: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
}

fn write_at(dev: &Path, offset: u64, block: &Block) -> std::io::Result<()> {
    let mut f = open_direct(dev)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&block.0)?;
    f.sync_all()
}

fn read_at(dev: &Path, offset: u64) -> std::io::Result<Box<Block>> {
    let mut f = open_direct(dev)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut b = Box::new(Block([0; 4096]));
    f.read_exact(&mut b.0)?;
    Ok(b)
}

fn device_size(dev: &Path) -> u64 {
    let mut f = File::open(dev).expect("open device");
    f.seek(SeekFrom::End(0)).expect("size")
}

/// Waits for `cond` up to `limit`; whether it became true.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn map_io_discovery_and_unmap() {
    let Some(mut r) = rig() else { return };
    let img = r.image("life", 64 * MIB);
    assert_eq!(r.krbd.find(POOL, &img).expect("find"), None);
    let m = r.map(&img);

    // The device node, from devtmpfs (no udev here).
    let meta = std::fs::metadata(&m.device).expect("device node");
    assert!(meta.file_type().is_block_device(), "{m:?}");
    let rdev = meta.rdev();
    assert_eq!(
        (libc::major(rdev), libc::minor(rdev)),
        (m.major, m.minor),
        "{m:?}"
    );
    assert_eq!(device_size(&m.device), 64 * MIB);
    assert_eq!((m.pool.as_str(), m.image.as_str()), (POOL, img.as_str()));
    assert_eq!(m.snapshot, None);
    let addr = m.client_addr.clone().expect("client_addr");
    eprintln!("rbd{}: client_addr {addr}", m.id);

    // O_DIRECT write and read back, at the start and at the end.
    for (offset, seed) in [(0, 7u8), (64 * MIB - 4096, 9)] {
        write_at(&m.device, offset, &pattern(seed)).expect("write");
        assert!(
            read_at(&m.device, offset).expect("read").0 == pattern(seed).0,
            "read back at {offset}"
        );
    }
    // The reference tool reads what the kernel wrote.
    let dump = r.ceph.dir().join("export");
    r.ceph
        .rbd(&[
            "export",
            &format!("{POOL}/{img}"),
            &dump.display().to_string(),
        ])
        .expect("rbd export");
    let exported = std::fs::read(&dump).expect("export");
    assert!(exported[..4096] == pattern(7).0, "rbd export differs");
    std::fs::remove_file(&dump).expect("rm export");

    // A restarted plugin finds the mapping from sysfs alone.
    let fresh = KernelRbd::new();
    assert_eq!(fresh.find(POOL, &img).expect("find"), Some(m.clone()));
    assert!(fresh.mappings().expect("list").contains(&m));
    // Mapping again is idempotent: the same device, nothing new.
    assert_eq!(r.map(&img), m);
    assert_eq!(
        fresh
            .mappings()
            .expect("list")
            .iter()
            .filter(|x| x.image == img)
            .count(),
        1
    );

    // The kernel keeps the request text; it names the key, it does not hold it.
    let cfg = std::fs::read_to_string(format!("/sys/bus/rbd/devices/{}/config_info", m.id))
        .expect("config_info");
    let key = r.key_text();
    assert!(
        !cfg.contains(&key) && !cfg.contains("secret="),
        "config_info holds the key"
    );
    assert!(cfg.contains("key=client.csi"), "{cfg}");
    // Our copy of the key in the thread keyring was invalidated right after the write.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
            !keys
                .lines()
                .any(|l| l.contains(" ceph ") && l.contains("client.csi"))
        }),
        "a ceph key client.csi is still in a keyring: {}",
        std::fs::read_to_string("/proc/keys").unwrap_or_default()
    );

    // Unmap: the device goes; unmapping again is fine.
    let t = Instant::now();
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
    eprintln!(
        "LATENCY rbd unmap {img}: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        wait_for(Duration::from_secs(10), || !m.device.exists()),
        "{} still there",
        m.device.display()
    );
    assert_eq!(r.krbd.find(POOL, &img).expect("find"), None);
    assert!(!r.krbd.unmap(POOL, &img, false).expect("unmap again"));
    assert!(!r.krbd.unmap_id(m.id, false).expect("unmap the id again"));

    // The image kept the data (a later stage on another node reads it).
    let again = r.map(&img);
    assert!(read_at(&again.device, 0).expect("read").0 == pattern(7).0);
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
}

#[test]
fn an_open_device_is_busy_to_unmap_without_force() {
    let Some(mut r) = rig() else { return };
    let img = r.image("busy", 16 * MIB);
    let m = r.map(&img);
    let held = File::open(&m.device).expect("open");
    let e = r
        .krbd
        .unmap(POOL, &img, false)
        .expect_err("open device unmapped");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(r.krbd.find(POOL, &img).expect("find").is_some());
    drop(held);
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
}

#[test]
fn holders_check_ignores_our_kernel_client_and_refuses_any_other() {
    let Some(mut r) = rig() else { return };
    let img = r.image("holders", 16 * MIB);
    let cluster = r.connect(Duration::from_secs(30));
    let pool = cluster.pool(POOL).expect("pool");
    let view = pool.open_read_only(&img).expect("open ro");

    // 1. before map: nobody.
    assert_eq!(
        view.holders().expect("holders").others(None),
        Vec::<String>::new()
    );
    // 2. map.
    let m = r.map(&img);
    let own = m.client_addr.clone().expect("client_addr");
    // 3. after map: the kernel's watch is ours, and the check ignores it.
    let h = view.holders().expect("holders");
    eprintln!("after map: {h:?}");
    assert_eq!(h.watchers.len(), 1, "{h:?}");
    assert_eq!(
        h.watchers[0].addr, own,
        "the kernel's client_addr is what watchers() lists"
    );
    let client_id = std::fs::read_to_string(format!("/sys/bus/rbd/devices/{}/client_id", m.id))
        .expect("client_id");
    assert_eq!(
        client_id.trim(),
        format!("client{}", h.watchers[0].id),
        "{h:?}"
    );
    assert_eq!(h.others(Some(&own)), Vec::<String>::new());
    // Another node's check before its own map (no address of its own yet) refuses: our mapping.
    assert_eq!(
        h.others(None),
        vec![format!("client.{} at {own}", h.watchers[0].id)]
    );

    // The first write takes the exclusive lock (lock_on_read: so would a read); the locker is our
    // kernel client, and the check still ignores it.
    write_at(&m.device, 0, &pattern(1)).expect("write");
    let lockers = view.lockers().expect("lockers");
    assert_eq!(lockers.lockers.len(), 1, "{lockers:?}");
    assert_eq!(lockers.lockers[0].addr, own, "{lockers:?}");
    let h = view.holders().expect("holders");
    assert_eq!(h.others(Some(&own)), Vec::<String>::new(), "{h:?}");

    // A second holder (another node's client opening the image read-write, as a racing stage
    // would map it): the after-map check of our node sees it, and so does theirs.
    let other = r.connect(Duration::from_secs(30));
    let theirs = other.pool(POOL).expect("pool").open(&img).expect("open rw");
    let h = view.holders().expect("holders");
    let them = h.others(Some(&own));
    assert_eq!(them.len(), 1, "{h:?}");
    assert!(
        them[0].starts_with(&format!("client.{} at ", other.instance_id())),
        "{them:?}"
    );
    let their_addr = h
        .watchers
        .iter()
        .find(|w| w.addr != own)
        .expect("their watcher")
        .addr
        .clone();
    assert_eq!(
        h.others(Some(&their_addr)),
        vec![format!(
            "client.{} at {own}",
            h.watchers.iter().find(|w| w.addr == own).expect("ours").id
        )]
    );
    drop(theirs);
    assert!(wait_for(Duration::from_secs(10), || view
        .holders()
        .expect("holders")
        .others(Some(&own))
        .is_empty()));

    // After unmap: nobody again (the lock goes with the mapping).
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
    let h = view.holders().expect("holders");
    assert_eq!(h.others(None), Vec::<String>::new(), "{h:?}");
}

#[test]
fn grow_from_the_controller_while_mapped_reaches_the_kernel() {
    let Some(mut r) = rig() else { return };
    let img = r.image("grow", 32 * MIB);
    let m = r.map(&img);
    // The kernel holds the lock (first write) when the controller resizes.
    write_at(&m.device, 0, &pattern(3)).expect("write");
    let controller = r.connect(Duration::from_secs(30));
    let image = controller
        .pool(POOL)
        .expect("pool")
        .open(&img)
        .expect("open");
    let t = Instant::now();
    assert_eq!(image.grow(96 * MIB).expect("grow while mapped"), 96 * MIB);
    eprintln!(
        "LATENCY rbd grow while mapped: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(image);
    // The header watch tells the kernel; refresh makes sure.
    let t = Instant::now();
    let by_itself = wait_for(Duration::from_secs(30), || {
        device_size(&m.device) == 96 * MIB
    });
    eprintln!(
        "the kernel saw the new size by itself: {by_itself} after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    r.krbd.refresh(m.id).expect("refresh");
    assert_eq!(device_size(&m.device), 96 * MIB);
    assert!(by_itself, "the kernel saw the new size only after refresh");
    // The kernel takes the lock back and writes beyond the old end; old data is intact.
    write_at(&m.device, 96 * MIB - 4096, &pattern(4)).expect("write in the new space");
    assert!(read_at(&m.device, 96 * MIB - 4096).expect("read").0 == pattern(4).0);
    assert!(read_at(&m.device, 0).expect("read").0 == pattern(3).0);
    let lockers = controller
        .pool(POOL)
        .expect("pool")
        .open_read_only(&img)
        .expect("open ro")
        .lockers()
        .expect("lockers");
    assert_eq!(
        lockers
            .lockers
            .iter()
            .map(|l| l.addr.as_str())
            .collect::<Vec<_>>(),
        vec![m.client_addr.as_deref().expect("addr")],
        "the kernel holds the lock again"
    );
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
}

#[test]
fn a_dead_holder_is_fenced_and_another_client_takes_the_image() {
    let Some(mut r) = rig() else { return };
    let img = r.image("fence", 16 * MIB);
    let m = r.map(&img);
    write_at(&m.device, 0, &pattern(5)).expect("write takes the lock");
    let own = m.client_addr.clone().expect("client_addr");

    // The operator's release path: blocklist every holder, then break the lock.
    let admin = r.connect(Duration::from_secs(30));
    let pool = admin.pool(POOL).expect("pool");
    let view = pool.open_read_only(&img).expect("open ro");
    let h = view.holders().expect("holders");
    assert_eq!(h.others(None).len(), 1, "{h:?}");
    for w in &h.watchers {
        admin
            .blocklist_add(&w.addr, Some(Duration::from_secs(600)))
            .expect("blocklist");
    }
    let listed = r
        .ceph
        .mon_command(r#"{"prefix":"osd blocklist ls","format":"json"}"#)
        .expect("blocklist ls");
    assert!(listed.contains(&own), "{listed}");
    for l in view.lockers().expect("lockers").lockers {
        assert_eq!(l.addr, own);
        view.break_lock(&l).expect("break lock");
    }
    assert_eq!(view.lockers().expect("lockers").lockers, vec![]);

    // The fenced mapping cannot write any more (in a thread: a hang is a failure, not a hang).
    let dev = m.device.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut last = Ok(());
        while t.elapsed() < Duration::from_secs(60) {
            last = write_at(&dev, 4096, &pattern(6));
            if last.is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = tx.send((last, t.elapsed()));
    });
    let (res, took) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the fenced mapping's write hangs");
    let e = res.expect_err("the fenced mapping still writes");
    eprintln!("the fenced mapping's write: {e} after {took:?}");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO | libc::ESHUTDOWN)),
        "{e}"
    );

    // Another client takes the image: its resize takes the exclusive lock.
    let next = r.connect(Duration::from_secs(30));
    let taken = next.pool(POOL).expect("pool").open(&img).expect("open rw");
    assert_eq!(taken.grow(32 * MIB).expect("grow takes the lock"), 32 * MIB);
    let lockers = view.lockers().expect("lockers");
    assert_eq!(lockers.lockers.len(), 1, "{lockers:?}");
    assert_eq!(
        lockers.lockers[0].client,
        format!("client.{}", next.instance_id())
    );
    drop(taken);

    // The dead mapping is removed with force once the node is back.
    let t = Instant::now();
    assert!(r.krbd.unmap(POOL, &img, true).expect("unmap force"));
    eprintln!(
        "LATENCY rbd unmap --force of a fenced mapping: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(r.krbd.find(POOL, &img).expect("find"), None);
}

#[test]
fn map_with_the_monitor_stopped_is_unavailable_within_the_bound() {
    let Some(mut r) = rig() else { return };
    let img = r.image("nomon", 8 * MIB);
    // No mapping may share its kernel client (it would not need the monitor to map).
    assert_eq!(
        r.krbd.mappings().expect("list"),
        vec![],
        "leftover mappings"
    );
    r.ceph.stop_mon().expect("stop mon");
    let restart = Restart(r.ceph);
    let options = MapOptions {
        timeout: Some(Duration::from_secs(5)),
        ..MapOptions::default()
    };
    let t = Instant::now();
    let e = r
        .krbd
        .map(&r.request(&img, options))
        .expect_err("mapped without a monitor");
    let took = t.elapsed();
    eprintln!("map with the monitor stopped: {e} after {took:?}");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} for a 5 s bound"
    );
    assert!(!format!("{e} {e:?}").contains(&r.key_text()));
    assert_eq!(r.krbd.find(POOL, &img).expect("find"), None);

    // The monitor back: the same request maps.
    drop(restart);
    let m = r.map(&img);
    assert!(m.device.exists());
    assert!(r.krbd.unmap(POOL, &img, false).expect("unmap"));
}

/// Restarts the monitor when dropped (also when the test fails).
struct Restart(&'static CephCluster);

impl Drop for Restart {
    fn drop(&mut self) {
        if let Err(e) = self.0.start_mon() {
            eprintln!("restarting the monitor: {e}");
        }
    }
}
