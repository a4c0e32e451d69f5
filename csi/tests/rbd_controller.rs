//! The controller service with `--backend rbd` against a real single-node Ceph cluster
//! (`testkit::ceph`, one per test binary), through the driver binary's socket: CreateVolume
//! (pool-qualified ID, idempotent, ALREADY_EXISTS, the encrypted minimum), the `volume_pool`
//! rules (missing, not a DNS label, no such pool: INVALID_ARGUMENT naming it), ListVolumes (only
//! the driver's images, paged), GetCapacity from the pool, ControllerExpandVolume (grows, never
//! shrinks), DeleteVolume (gone, repeatable, unknown IDs OK, an image in use refused with
//! nothing removed), a stopped monitor (UNAVAILABLE within the bound, then back) and a pool at
//! its quota (RESOURCE_EXHAUSTED, nothing made; NodeStage refused before the map).
//!
//! Without the Ceph binaries the tests skip with a message; with `CI=true` that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use csi::capability::capability;
use csi::proto;
use csi::proto::controller_client::ControllerClient;
use csi::proto::node_client::NodeClient;
use csi::proto::volume_capability::access_mode::Mode;
use testkit::ceph::{CLIENT_ID, CephCluster, OSD_BYTES, POOL};
use tonic::Code;
use tonic::transport::Channel;

const MIB: i64 = 1 << 20;
/// The driver's `--ceph-timeout`.
const CEPH_TIMEOUT_S: u64 = 3;

/// Tests take it shared; the ones that stop the monitor or fill the pool take it exclusively.
static MON: RwLock<()> = RwLock::new(());

struct Driver {
    child: Child,
    /// The driver lives in a `static` (never dropped): this ends it with the test process.
    _reaper: testkit::cmd::Reaper,
    dir: tempfile::TempDir,
    ch: Channel,
    rt: tokio::runtime::Runtime,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One controller for the binary, on the shared cluster; `None`: no Ceph here (skip).
fn driver() -> Option<(&'static CephCluster, &'static Driver)> {
    let c = CephCluster::shared()?;
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    Some((c, DRIVER.get_or_init(|| start(c))))
}

fn start(c: &CephCluster) -> Driver {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .args([
            "--node-id",
            "controller",
            // All services: the node's check before a map runs on the host too (it refuses
            // before anything needs the kernel's RBD client).
            "--mode",
            "all",
            "--backend",
            "rbd",
        ])
        .arg("--kubelet-dir")
        .arg(dir.path())
        .arg("--ceph-conf")
        .arg(c.conf())
        .args(["--ceph-id", CLIENT_ID])
        .args(["--ceph-timeout", &CEPH_TIMEOUT_S.to_string()])
        .arg("--key-store")
        .arg(format!("dir:{}", dir.path().join("keys").display()))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for_socket(&sock);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(csi::cli::client::connect(&format!(
            "unix://{}",
            sock.display()
        )))
        .unwrap();
    Driver {
        _reaper: testkit::cmd::reap_on_exit(child.id()),
        child,
        dir,
        ch,
        rt,
    }
}

fn wait_for_socket(sock: &Path) {
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "driver did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A name unique to this test and run.
fn name(test: &str) -> String {
    format!("pvc-{}-{test}", std::process::id())
}

fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn in_pool(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut p = params(&[("volume_pool", POOL), ("type", "ssd")]);
    p.extend(params(extra));
    p
}

fn create_req(
    name: &str,
    size: i64,
    parameters: HashMap<String, String>,
) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability(false, "ext4", Mode::SingleNodeWriter)],
        parameters,
        ..Default::default()
    }
}

impl Driver {
    fn ctl(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.ch.clone())
    }

    fn create(&self, r: proto::CreateVolumeRequest) -> Result<proto::Volume, tonic::Status> {
        self.rt
            .block_on(self.ctl().create_volume(r))
            .map(|v| v.into_inner().volume.unwrap())
    }

    fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        self.rt
            .block_on(self.ctl().delete_volume(proto::DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            }))
            .map(drop)
    }

    fn list(&self, max: i32, token: &str) -> proto::ListVolumesResponse {
        self.rt
            .block_on(self.ctl().list_volumes(proto::ListVolumesRequest {
                max_entries: max,
                starting_token: token.into(),
            }))
            .unwrap()
            .into_inner()
    }
}

fn image_size(c: &CephCluster, image: &str) -> Option<u64> {
    let pool = c.admin().unwrap().pool(POOL).unwrap();
    match pool.open_read_only(image) {
        Ok(i) => Some(i.size().unwrap()),
        Err(e) if e.kind() == rbd::ErrorKind::NotFound => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn create_is_idempotent_by_name_and_pool_and_conflicts_are_already_exists() {
    let Some((c, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    let n = name("create");
    let v = d.create(create_req(&n, 64 * MIB, in_pool(&[]))).unwrap();
    assert_eq!(
        v.volume_id,
        format!("{POOL}.{n}"),
        "the ID names pool and image"
    );
    assert_eq!(v.capacity_bytes, 64 * MIB);
    assert_eq!(image_size(c, &n), Some(64 << 20));
    let meta = c
        .admin()
        .unwrap()
        .pool(POOL)
        .unwrap()
        .open_read_only(&n)
        .unwrap()
        .metadata_all()
        .unwrap();
    assert_eq!(meta.get("onmetal-csi.volume"), Some(&v.volume_id));
    assert_eq!(
        meta.get("onmetal-csi.param.type").map(String::as_str),
        Some("ssd")
    );

    // The same request again: the same volume.
    let again = d.create(create_req(&n, 64 * MIB, in_pool(&[]))).unwrap();
    assert_eq!(again, v);
    // Other size or other parameters: ALREADY_EXISTS, nothing changed.
    let e = d
        .create(create_req(&n, 128 * MIB, in_pool(&[])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = d
        .create(create_req(&n, 64 * MIB, in_pool(&[("type", "hdd")])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(image_size(c, &n), Some(64 << 20));

    // Encrypted: the 1 GiB minimum, rounded above the backend as for `local`.
    let ne = name("create-enc");
    let enc = in_pool(&[
        ("encryptionEnabled", "true"),
        ("encryptionKMSType", "transit"),
        ("encryptionKMSEndpoint", "https://127.0.0.1:8200"),
        ("encryptionKMSKeyID", "k"),
    ]);
    let v2 = d.create(create_req(&ne, 10 * MIB, enc)).unwrap();
    assert_eq!(v2.capacity_bytes, 1 << 30);
    assert_eq!(image_size(c, &ne), Some(1 << 30));
    assert_eq!(
        v2.volume_context
            .get("encryptionEnabled")
            .map(String::as_str),
        Some("true")
    );

    // An image of that name that the driver did not make is never taken over.
    let nf = name("create-foreign");
    let admin_pool = c.admin().unwrap().pool(POOL).unwrap();
    admin_pool.create_image(&nf, 8 << 20).unwrap();
    admin_pool
        .open(&nf)
        .unwrap()
        .set_metadata("owner", "someone-else")
        .unwrap();
    let e = d
        .create(create_req(&nf, 8 * MIB, in_pool(&[])))
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("not made by this driver"), "{e:?}");

    for id in [v.volume_id, v2.volume_id] {
        d.delete(&id).unwrap();
    }
    admin_pool.remove_image(&nf).unwrap();
}

#[test]
fn volume_pool_is_required_and_must_exist() {
    let Some((_, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    for (p, what) in [
        (params(&[("type", "ssd")]), "missing"),
        (params(&[("volume_pool", "no-such-pool")]), "no such pool"),
        (params(&[("volume_pool", "Not_A_Label")]), "not a DNS label"),
    ] {
        let e = d.create(create_req(&name("pool"), 8 * MIB, p)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains("volume_pool"), "{what}: {e:?}");
    }
}

#[test]
fn list_pages_through_the_drivers_images_only() {
    let Some((c, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    let foreign = name("list-foreign");
    c.admin()
        .unwrap()
        .pool(POOL)
        .unwrap()
        .create_image(&foreign, 4 << 20)
        .unwrap();
    let ids: Vec<String> = ["list-a", "list-b", "list-c"]
        .iter()
        .map(|t| {
            d.create(create_req(&name(t), 8 * MIB, in_pool(&[])))
                .unwrap()
                .volume_id
        })
        .collect();
    // Page by one through everything the driver lists (other tests' volumes may be there).
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = d.list(1, &token);
        assert!(page.entries.len() <= 1);
        for e in &page.entries {
            let v = e.volume.as_ref().unwrap();
            assert!(v.volume_id.starts_with(&format!("{POOL}.")), "{v:?}");
            seen.push(v.clone());
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    for id in &ids {
        let v = seen.iter().find(|v| &v.volume_id == id).expect(id);
        assert_eq!(v.capacity_bytes, 8 * MIB);
        // The context is rebuilt from the image's metadata: the encryption settings (provider
        // parameters such as `type` stay in the metadata, as on `local`).
        assert_eq!(
            v.volume_context
                .get("encryptionEnabled")
                .map(String::as_str),
            Some("false"),
            "{v:?}"
        );
    }
    assert!(
        !seen.iter().any(|v| v.volume_id.ends_with(&foreign)),
        "an image the driver did not make is not listed"
    );
    for id in &ids {
        d.delete(id).unwrap();
    }
    c.admin()
        .unwrap()
        .pool(POOL)
        .unwrap()
        .remove_image(&foreign)
        .unwrap();
}

#[test]
fn capacity_is_the_pools_free_space() {
    let Some((_, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    let cap = |p: HashMap<String, String>| {
        d.rt.block_on(d.ctl().get_capacity(proto::GetCapacityRequest {
            parameters: p,
            ..Default::default()
        }))
    };
    let avail = cap(in_pool(&[])).unwrap().into_inner().available_capacity;
    assert!(
        avail > 0 && avail <= i64::try_from(OSD_BYTES).unwrap(),
        "{avail}"
    );
    let e = cap(params(&[("type", "ssd")])).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("volume_pool"), "{e:?}");
    let e = cap(params(&[("volume_pool", "no-such-pool")])).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[test]
fn expand_grows_and_never_shrinks() {
    let Some((c, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    let n = name("expand");
    let v = d.create(create_req(&n, 16 * MIB, in_pool(&[]))).unwrap();
    let expand = |bytes: i64| {
        d.rt.block_on(
            d.ctl()
                .controller_expand_volume(proto::ControllerExpandVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    capacity_range: Some(proto::CapacityRange {
                        required_bytes: bytes,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                }),
        )
        .unwrap()
        .into_inner()
    };
    let r = expand(48 * MIB);
    assert_eq!(r.capacity_bytes, 48 * MIB);
    assert!(r.node_expansion_required);
    assert_eq!(image_size(c, &n), Some(48 << 20));
    assert_eq!(expand(16 * MIB).capacity_bytes, 48 * MIB, "never shrinks");
    assert_eq!(image_size(c, &n), Some(48 << 20));
    d.delete(&v.volume_id).unwrap();
}

#[test]
fn delete_removes_the_image_and_refuses_one_in_use() {
    let Some((c, d)) = driver() else { return };
    let _g = MON.read().unwrap_or_else(|p| p.into_inner());
    let n = name("delete");
    let v = d.create(create_req(&n, 8 * MIB, in_pool(&[]))).unwrap();

    // A client that watches the image (what a mapping on a node does): refused, nothing removed.
    let watcher = c.admin().unwrap().pool(POOL).unwrap().open(&n).unwrap();
    let e = d.delete(&v.volume_id).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("volume in use"), "{e:?}");
    assert!(
        e.message().contains(&format!("{POOL}/{n}")),
        "names the image: {e:?}"
    );
    assert_eq!(image_size(c, &n), Some(8 << 20), "nothing removed");
    drop(watcher);

    d.delete(&v.volume_id).unwrap();
    assert_eq!(image_size(c, &n), None);
    // Again, and IDs that name nothing: OK.
    d.delete(&v.volume_id).unwrap();
    for id in [
        "rbd.pvc-never-made",
        "no-such-pool.pvc-1",
        "pvc-local-form",
        "Not An ID",
    ] {
        d.delete(id).unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
}

/// With the monitor stopped, a controller that connects afresh (a restarted Pod) fails
/// CreateVolume and DeleteVolume UNAVAILABLE within the bound, and so does GetCapacity (a
/// monitor command) on the running controller's established connection; once the monitor is
/// back, the same calls succeed.
#[test]
fn a_stopped_monitor_is_unavailable_within_the_bound_and_then_back() {
    let Some((c, d)) = driver() else { return };
    let _g = MON.write().unwrap_or_else(|p| p.into_inner());
    // The running controller has its connection.
    let cap = |d: &Driver| {
        d.rt.block_on(d.ctl().get_capacity(proto::GetCapacityRequest {
            parameters: in_pool(&[]),
            ..Default::default()
        }))
    };
    cap(d).unwrap();
    let n = name("mon-stopped");
    c.stop_mon().unwrap();
    let fresh = start(c);
    let bound = Duration::from_secs(3 * CEPH_TIMEOUT_S + 2);
    let timed = |what: &str, f: &dyn Fn() -> Code| {
        let t = Instant::now();
        let code = f();
        let took = t.elapsed();
        eprintln!("{what} with the monitor stopped: {code:?} after {took:?}");
        (code, took)
    };
    let results = [
        timed("CreateVolume (fresh controller)", &|| {
            fresh
                .create(create_req(&n, 8 * MIB, in_pool(&[])))
                .map_or_else(|e| e.code(), |_| Code::Ok)
        }),
        timed("DeleteVolume (fresh controller)", &|| {
            fresh
                .delete(&format!("{POOL}.{n}"))
                .map_or_else(|e| e.code(), |()| Code::Ok)
        }),
        timed("GetCapacity (connected controller)", &|| {
            cap(d).map_or_else(|e| e.code(), |_| Code::Ok)
        }),
    ];
    c.start_mon().unwrap();
    for (code, took) in results {
        assert_eq!(code, Code::Unavailable);
        assert!(took < bound, "took {took:?}, bound {bound:?}");
    }
    // Back: the same requests succeed (the fresh controller reconnects by itself).
    let t = Instant::now();
    let v = loop {
        match fresh.create(create_req(&n, 8 * MIB, in_pool(&[]))) {
            Ok(v) => break v,
            Err(e) if e.code() == Code::Unavailable && t.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    cap(d).unwrap();
    fresh.delete(&v.volume_id).unwrap();
}

/// The pool's flags as the monitor shows them (`hashpspool,full_quota,full`).
fn pool_flags(c: &CephCluster) -> String {
    let out = c
        .mon_command(r#"{"prefix":"osd pool ls","detail":"detail","format":"json"}"#)
        .unwrap();
    let pools: serde_json::Value = serde_json::from_str(&out).unwrap();
    pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool_name"] == POOL)
        .map(|p| p["flags_names"].as_str().unwrap_or("").to_owned())
        .unwrap()
}

/// Waits (the monitor looks at quotas on its tick, every few seconds) until the pool's
/// `full_quota` flag is `set` or cleared.
fn wait_full_quota(c: &CephCluster, set: bool) {
    let t = Instant::now();
    loop {
        let flags = pool_flags(c);
        if flags.split(',').any(|f| f == "full_quota") == set {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "pool flags still {flags:?} after {:?} (want full_quota {set})",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pool at its quota takes no writes: Ceph holds them (it does not fail them) until there is
/// room. CreateVolume of a new volume is then RESOURCE_EXHAUSTED at once, naming the pool, and
/// nothing is made; a repeated CreateVolume of a volume made before is still OK; GetCapacity is
/// 0. With the quota lifted, creation works again.
#[test]
fn a_full_pool_is_resource_exhausted_and_nothing_is_made() {
    let Some((c, d)) = driver() else { return };
    // Exclusive: the other tests write to the pool too.
    let _g = MON.write().unwrap_or_else(|p| p.into_inner());
    let made = name("before-full");
    let v = d.create(create_req(&made, 8 * MIB, in_pool(&[]))).unwrap();
    let quota = |objects: u64| {
        c.mon_command(&format!(
            r#"{{"prefix":"osd pool set-quota","pool":"{POOL}","field":"max_objects","val":"{objects}"}}"#
        ))
        .unwrap();
    };
    quota(1);
    wait_full_quota(c, true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let n = name("on-full");
        let e = d.create(create_req(&n, 8 * MIB, in_pool(&[]))).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("pool rbd is full"), "{e:?}");
        assert!(e.message().contains("quota"), "{e:?}");
        assert_eq!(image_size(c, &n), None, "nothing was created");
        let again = d.create(create_req(&made, 8 * MIB, in_pool(&[]))).unwrap();
        assert_eq!(again.volume_id, v.volume_id);
        // NodeStage of the existing volume: refused before the map (its first write would
        // wait in the kernel), nothing mapped.
        let staging = d.dir.path().join("staging");
        let e =
            d.rt.block_on(NodeClient::new(d.ch.clone()).node_stage_volume(
                proto::NodeStageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    staging_target_path: staging.display().to_string(),
                    volume_capability: Some(capability(false, "ext4", Mode::SingleNodeWriter)),
                    volume_context: v.volume_context.clone(),
                    ..Default::default()
                },
            ))
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("nothing was mapped"), "{e:?}");
        assert!(
            rbd::KernelRbd::new().find(POOL, &made).unwrap().is_none(),
            "nothing mapped"
        );
        let avail =
            d.rt.block_on(d.ctl().get_capacity(proto::GetCapacityRequest {
                parameters: in_pool(&[]),
                ..Default::default()
            }))
            .unwrap()
            .into_inner()
            .available_capacity;
        assert_eq!(avail, 0);
    }));
    quota(0);
    wait_full_quota(c, false);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let n = name("after-full");
    let w = d.create(create_req(&n, 8 * MIB, in_pool(&[]))).unwrap();
    d.delete(&w.volume_id).unwrap();
    d.delete(&v.volume_id).unwrap();
}
