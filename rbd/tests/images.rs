//! Image management against a real Ceph cluster (one per test binary, see
//! `testkit::ceph`): create, features, size, grow, metadata, list, remove, pool
//! errors, capacity, watchers and locks, the dead-holder release path (blocklist, break lock),
//! and Ceph unreachable (monitor stopped: Unavailable within the bound, then back).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use rbd::{CephConf, CephxKey, ClientId, Cluster, ConnectOptions, ErrorKind, Features};
use testkit::ceph::{CLIENT_ID, CephCluster, OSD_BYTES, POOL};

/// Tests take it shared; the one that stops the monitor takes it exclusively.
static MON: RwLock<()> = RwLock::new(());

const MIB: u64 = 1 << 20;

fn ceph() -> Option<&'static CephCluster> {
    CephCluster::shared()
}

fn options(c: &CephCluster, timeout: Duration) -> ConnectOptions {
    ConnectOptions {
        conf: c.conf(),
        client: ClientId::new(CLIENT_ID).expect("id"),
        keyring: None,
        timeout,
    }
}

fn connect(c: &CephCluster) -> Cluster {
    Cluster::connect(&options(c, Duration::from_secs(10))).expect("connect as client.csi")
}

/// A name unique to this test and run.
fn name(test: &str) -> String {
    format!("t-{}-{test}", std::process::id())
}

#[test]
fn the_drivers_conf_and_keyring_read_back() {
    let Some(c) = ceph() else { return };
    let id = ClientId::new(CLIENT_ID).expect("id");
    let conf = CephConf::read(&c.conf()).expect("read conf");
    let mons = rbd::msgr1_mon_addrs(conf.mon_host(&id).expect("mon_host")).expect("v1");
    assert_eq!(mons.len(), 1);
    assert_eq!(mons[0].port(), c.mon_v1_port());
    assert_eq!(conf.keyring(&id).expect("keyring"), c.keyring());
    let key = CephxKey::from_keyring_file(&c.keyring(), &id).expect("key");
    assert_eq!(format!("{key:?}"), "CephxKey(<redacted>)");
}

#[test]
fn create_twice_is_exists_and_the_image_has_the_krbd_features() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let pool = connect(c).pool(POOL).expect("pool");
    let img = name("create");
    pool.create_image(&img, 64 * MIB).expect("create");
    let e = pool
        .create_image(&img, 64 * MIB)
        .expect_err("second create");
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(e.to_string().contains(&format!("rbd/{img}")), "{e}");
    let e = pool.create_image(&img, 128 * MIB).expect_err("other size");
    assert_eq!(e.kind(), ErrorKind::Exists);

    let info = pool
        .open_read_only(&img)
        .expect("open")
        .info()
        .expect("info");
    assert_eq!(info.size, 64 * MIB);
    assert_eq!(info.features, Features::KRBD);
    assert_eq!(info.order, 22);
    assert_eq!(info.object_size, 4 * MIB);
    assert!(!info.id.is_empty());
    // The reference tool sees the same.
    let out = c
        .rbd(&["info", &format!("{POOL}/{img}")])
        .expect("rbd info");
    assert!(
        out.contains("features: layering, exclusive-lock, object-map, fast-diff, deep-flatten"),
        "{out}"
    );
    assert!(
        out.contains("size 64 MiB") && out.contains("order 22"),
        "{out}"
    );
    assert!(out.contains(&format!("id: {}", info.id)), "{out}");
    pool.remove_image(&img).expect("remove");
}

#[test]
fn grow_grows_and_shrink_is_refused() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let pool = connect(c).pool(POOL).expect("pool");
    let img = name("grow");
    pool.create_image(&img, 32 * MIB).expect("create");
    {
        let image = pool.open(&img).expect("open");
        assert_eq!(image.size().expect("size"), 32 * MIB);
        assert_eq!(image.grow(96 * MIB).expect("grow"), 96 * MIB);
        assert_eq!(image.grow(96 * MIB).expect("same size"), 96 * MIB);
        let e = image.grow(64 * MIB).expect_err("shrink");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert_eq!(image.size().expect("size"), 96 * MIB);
    }
    let out = c
        .rbd(&["info", &format!("{POOL}/{img}")])
        .expect("rbd info");
    assert!(out.contains("size 96 MiB"), "{out}");
    pool.remove_image(&img).expect("remove");
}

#[test]
fn metadata_set_get_list_remove() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let pool = connect(c).pool(POOL).expect("pool");
    let img = name("meta");
    pool.create_image(&img, 8 * MIB).expect("create");
    let image = pool.open(&img).expect("open");
    assert_eq!(image.metadata("onmetal.de/type").expect("get"), None);
    image.set_metadata("onmetal.de/type", "fast").expect("set");
    image
        .set_metadata("onmetal.de/empty", "")
        .expect("set empty");
    let long = "x".repeat(5000);
    image
        .set_metadata("onmetal.de/long", &long)
        .expect("set long");
    assert_eq!(
        image.metadata("onmetal.de/type").expect("get").as_deref(),
        Some("fast")
    );
    assert_eq!(
        image.metadata("onmetal.de/long").expect("get long"),
        Some(long.clone())
    );
    let all = image.metadata_all().expect("list");
    assert_eq!(all.get("onmetal.de/type").map(String::as_str), Some("fast"));
    assert_eq!(all.get("onmetal.de/empty").map(String::as_str), Some(""));
    assert_eq!(all.get("onmetal.de/long"), Some(&long));
    assert_eq!(all.len(), 3, "{all:?}");
    // Another client reads what this one wrote.
    let other = connect(c)
        .pool(POOL)
        .expect("pool")
        .open_read_only(&img)
        .expect("open");
    assert_eq!(
        other.metadata("onmetal.de/type").expect("get").as_deref(),
        Some("fast")
    );
    let out = c
        .rbd(&[
            "image-meta",
            "get",
            &format!("{POOL}/{img}"),
            "onmetal.de/type",
        ])
        .expect("cli");
    assert_eq!(out.trim(), "fast");
    image.remove_metadata("onmetal.de/type").expect("remove");
    image
        .remove_metadata("onmetal.de/type")
        .expect("remove again");
    assert_eq!(image.metadata("onmetal.de/type").expect("get"), None);
    drop((image, other));
    pool.remove_image(&img).expect("remove");
}

#[test]
fn list_and_remove_and_unknown_images() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let pool = connect(c).pool(POOL).expect("pool");
    let (a, b) = (name("list-a"), name("list-b"));
    pool.create_image(&a, 4 * MIB).expect("a");
    pool.create_image(&b, 4 * MIB).expect("b");
    let names = pool.images().expect("list");
    assert!(names.contains(&a) && names.contains(&b), "{names:?}");
    pool.remove_image(&a).expect("remove a");
    let names = pool.images().expect("list");
    assert!(!names.contains(&a) && names.contains(&b), "{names:?}");
    let e = pool.remove_image(&a).expect_err("removed twice");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = pool.open(&a).expect_err("open removed");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = pool.remove_image("never-created").expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    pool.remove_image(&b).expect("remove b");
}

#[test]
fn a_missing_pool_is_not_found() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let cluster = connect(c);
    assert!(cluster.pool_exists(POOL).expect("exists"));
    assert!(!cluster.pool_exists("no-such-pool").expect("exists"));
    let e = cluster.pool("no-such-pool").expect_err("open");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no-such-pool"), "{e}");
    let e = cluster.pool_usage("no-such-pool").expect_err("usage");
    assert!(
        matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidArgument),
        "{e}"
    );
    let e = cluster.pool("bad\0name").expect_err("nul");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn capacity_from_the_pool_is_plausible() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let cluster = connect(c);
    let usage = cluster.pool_usage(POOL).expect("usage");
    assert!(
        usage.available > 0 && usage.available <= OSD_BYTES,
        "{usage:?}"
    );
    assert_eq!(usage.quota_bytes, None);
    let stats = cluster.stats().expect("cluster stat");
    assert!(
        stats.total > 0 && stats.total <= OSD_BYTES + MIB,
        "{stats:?}"
    );
    assert!(stats.available <= stats.total, "{stats:?}");
    let pool = cluster
        .pool(POOL)
        .expect("pool")
        .stats()
        .expect("pool stat");
    assert!(pool.bytes < OSD_BYTES, "{pool:?}");
}

#[test]
fn an_unmapped_image_has_no_watchers_and_no_lock_and_an_open_one_is_busy() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let cluster = connect(c);
    let pool = cluster.pool(POOL).expect("pool");
    let img = name("watch");
    pool.create_image(&img, 8 * MIB).expect("create");
    let ro = pool.open_read_only(&img).expect("open ro");
    assert_eq!(ro.watchers().expect("watchers"), vec![]);
    assert_eq!(ro.lockers().expect("lockers").lockers, vec![]);
    let e = ro
        .lock_owners()
        .expect_err("owners need a read-write handle");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // A read-write handle elsewhere is a watcher, and the image cannot be removed under it.
    let other = connect(c);
    let rw = other.pool(POOL).expect("pool").open(&img).expect("open rw");
    assert_eq!(
        rw.lock_owners().expect("owners"),
        Vec::<String>::new(),
        "open takes no lock"
    );
    let w = ro.watchers().expect("watchers");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].id, i64::try_from(other.instance_id()).expect("id"));
    assert!(w[0].addr.starts_with("127.0.0.1:"), "{w:?}");
    let holders = ro.holders().expect("holders");
    assert_eq!(
        holders.others(None),
        vec![format!("client.{} at {}", w[0].id, w[0].addr)]
    );
    assert_eq!(holders.others(Some(&w[0].addr)), Vec::<String>::new());
    let e = pool.remove_image(&img).expect_err("watched");
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    drop(rw);
    assert_eq!(ro.watchers().expect("watchers"), vec![]);
    drop(ro);
    pool.remove_image(&img).expect("remove");
}

#[test]
fn a_dead_lock_holder_is_blocklisted_then_its_lock_broken() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let img = name("fence");
    let admin = connect(c);
    let pool = admin.pool(POOL).expect("pool");
    pool.create_image(&img, 8 * MIB).expect("create");

    // The "holder": a resize takes the exclusive lock, and librbd keeps it while open.
    let holder = Cluster::connect(&options(c, Duration::from_secs(3))).expect("holder");
    let held = holder.pool(POOL).expect("pool").open(&img).expect("open");
    held.grow(16 * MIB).expect("grow takes the lock");

    let view = pool.open_read_only(&img).expect("open ro");
    let owners = pool
        .open(&img)
        .expect("open rw")
        .lock_owners()
        .expect("owners");
    assert_eq!(owners.len(), 1, "{owners:?}");
    let lockers = view.lockers().expect("lockers");
    assert!(lockers.exclusive, "{lockers:?}");
    assert_eq!(
        lockers.tag, "internal",
        "the exclusive-lock feature's lock: {lockers:?}"
    );
    assert_eq!(lockers.lockers.len(), 1, "{lockers:?}");
    let locker = lockers.lockers[0].clone();
    assert_eq!(locker.client, format!("client.{}", holder.instance_id()));
    let watchers = view.watchers().expect("watchers");
    assert!(
        watchers.iter().any(|w| w.addr == locker.addr),
        "{watchers:?} {locker:?}"
    );

    // The release path: fence first, then take the lock away.
    admin
        .blocklist_add(&locker.addr, Some(Duration::from_secs(600)))
        .expect("blocklist");
    let listed = c
        .mon_command(r#"{"prefix":"osd blocklist ls","format":"json"}"#)
        .expect("blocklist ls");
    assert!(listed.contains(&locker.addr), "{listed}");
    view.break_lock(&locker).expect("break lock");
    assert_eq!(view.lockers().expect("lockers").lockers, vec![]);

    // The fenced client can no longer change the image.
    let e = held.grow(32 * MIB).expect_err("blocklisted holder");
    eprintln!("the blocklisted holder's resize: {e}");
    assert_eq!(e.raw_errno(), Some(libc::ESHUTDOWN), "EBLOCKLISTED: {e}");
    assert_eq!(view.size().expect("size"), 16 * MIB);
    drop((held, holder, view));
    // Its watch is gone with the blocklisting (watches of a blocklisted client are dropped).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match pool.remove_image(&img) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Busy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("remove after release: {e}"),
        }
    }
}

#[test]
fn a_stopped_monitor_is_unavailable_within_the_bound_and_then_back() {
    let Some(c) = ceph() else { return };
    let _g = MON.write().unwrap_or_else(|p| p.into_inner());
    let bound = Duration::from_secs(3);
    let opts = options(c, bound);
    let existing = Cluster::connect(&opts).expect("connect while up");
    c.stop_mon().expect("stop mon");
    let restart = scopeguard(c);

    let t = Instant::now();
    let e = Cluster::connect(&opts).expect_err("connect with the monitor down");
    let took = t.elapsed();
    eprintln!("connect with the monitor down: {e} after {took:?}");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(took < bound * 3, "took {took:?}, bound {bound:?}");

    let t = Instant::now();
    let e = existing
        .pool_usage(POOL)
        .expect_err("df with the monitor down");
    let took = t.elapsed();
    eprintln!("df on a connection with the monitor down: {e} after {took:?}");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(took < bound * 3, "took {took:?}, bound {bound:?}");

    drop(restart);
    let back = Cluster::connect(&opts).expect("connect after the restart");
    let pool = back.pool(POOL).expect("pool");
    let img = name("after-restart");
    pool.create_image(&img, 4 * MIB)
        .expect("create after restart");
    assert!(pool.images().expect("list").contains(&img));
    pool.remove_image(&img).expect("remove");
    assert!(back.pool_usage(POOL).expect("df").available > 0);
}

/// Restarts the monitor when dropped (also when the test fails), so later tests find it up.
struct Restart(&'static CephCluster);

fn scopeguard(c: &'static CephCluster) -> Restart {
    Restart(c)
}

impl Drop for Restart {
    fn drop(&mut self) {
        if let Err(e) = self.0.start_mon() {
            eprintln!("restarting the monitor: {e}");
        }
    }
}

#[test]
fn a_pool_quota_caps_the_capacity() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let pool = "quota-test";
    c.mon_command(&format!(
        r#"{{"prefix":"osd pool create","pool":"{pool}","pg_num":8,"pgp_num":8}}"#
    ))
    .expect("create pool");
    c.mon_command(&format!(
        r#"{{"prefix":"osd pool set-quota","pool":"{pool}","field":"max_bytes","val":"{}"}}"#,
        100 * MIB
    ))
    .expect("quota");
    let cluster = connect(c);
    // The manager reports a new pool within a few stats periods.
    let deadline = Instant::now() + Duration::from_secs(60);
    let usage = loop {
        match cluster.pool_usage(pool) {
            Ok(u) => break u,
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("usage of {pool}: {e}"),
        }
    };
    assert_eq!(usage.quota_bytes, Some(100 * MIB));
    assert!(
        usage.available > 0 && usage.available <= 100 * MIB,
        "{usage:?}"
    );
    let rbd_pool = cluster.pool_usage(POOL).expect("rbd usage");
    assert!(
        rbd_pool.available > usage.available,
        "{rbd_pool:?} {usage:?}"
    );
}

#[test]
fn a_wrong_key_is_permission_denied() {
    let Some(c) = ceph() else { return };
    let _g = MON.read();
    let dir = tempfile::tempdir().expect("tmp");
    let keyring = dir.path().join("wrong.keyring");
    // A well-formed cephx key that is not client.csi's.
    std::fs::write(
        &keyring,
        "[client.csi]\n\tkey = AQBrG1ZnAAAAABAAqV7vCPUjAgW0Xw6e8hHfvA==\n",
    )
    .expect("write");
    let opts = ConnectOptions {
        keyring: Some(keyring),
        ..options(c, Duration::from_secs(3))
    };
    let t = Instant::now();
    let e = Cluster::connect(&opts).expect_err("wrong key");
    eprintln!("connect with a wrong key: {e} after {:?}", t.elapsed());
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_retryable());
}
