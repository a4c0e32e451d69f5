#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `--backend rbd` on a real kernel and a real Ceph cluster (one monitor and one OSD in the VM,
//! `testkit::ceph`, one per test binary), through the driver's socket:
//!
//! - the whole life ([`testkit::plugin::life`]) for ext4, xfs and raw block, encrypted (real
//!   OpenBao) and plain: the image exists after CreateVolume, NodeStage maps it, NodeUnstage
//!   unmaps it, DeleteVolume removes image and record;
//! - two node plugins (`node-a`, `node-b`, each mapping as its own cephx user, so that on one
//!   kernel each sees only its own mappings, as two machines would): B refused while A holds the
//!   volume, nothing mapped or written; A unstages, B stages and reads A's data; A's plugin
//!   killed (-9) with the volume staged: B still refused, A's restarted plugin finds its mapping
//!   and unstages; a holder that died (its plugin killed, its mapping left): refused until the
//!   operator's `volume release` (refused without `--live` while the holder still watches),
//!   then the volume stages on the other node with the dead holder's data.
//!
//! Needs root, device-mapper and the `rbd` module: run by `scripts/vm-test`. The tests run one
//! at a time (they share the kernel's mappings and the VM's two emulated CPUs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbd::KernelRbd;
use testkit::ceph::{CLIENT_ID, CephCluster, POOL};
use testkit::plugin::*;
use tonic::Code;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// The second node's cephx user.
const CLIENT_B: &str = "csi-b";

fn ceph() -> &'static CephCluster {
    CephCluster::shared_with(false).expect("the Ceph binaries are installed in the VM rig")
}

/// The image part of a volume ID `rbd.<image>`.
fn image_of(id: &str) -> &str {
    id.strip_prefix(&format!("{POOL}."))
        .unwrap_or_else(|| panic!("volume id {id} is not in pool {POOL}"))
}

/// The driver's `rbd` backend flags for a cephx user.
fn rbd_backend(conf: &Path, client: &str) -> Vec<String> {
    vec![
        "rbd".into(),
        "--ceph-conf".into(),
        conf.display().to_string(),
        "--ceph-id".into(),
        client.into(),
        "--ceph-timeout".into(),
        "10".into(),
    ]
}

fn plugin(node: &str, mode: &str, conf: &Path, client: &str, keys: Option<PathBuf>) -> Rig {
    Rig::set_up(
        Setup {
            node_id: node.into(),
            mode: mode.into(),
            backend: Some(rbd_backend(conf, client)),
            key_dir: keys,
        },
        Vec::new(),
        Vec::new(),
    )
}

/// Volumes as RBD images, seen through the admin's `rbd` and the kernel's mappings.
struct Images {
    ceph: &'static CephCluster,
    krbd: KernelRbd,
}

impl Images {
    fn new(ceph: &'static CephCluster, client: &str) -> Images {
        Images {
            ceph,
            krbd: KernelRbd::new().owned_by(&rbd::ClientId::new(client).unwrap()),
        }
    }
}

impl Backing for Images {
    fn raw(&self, _rig: &Rig, id: &str) -> PathBuf {
        self.krbd
            .find(POOL, image_of(id))
            .unwrap()
            .unwrap_or_else(|| panic!("{id} is not mapped"))
            .device
    }

    fn exists(&self, _rig: &Rig, id: &str) -> bool {
        self.ceph
            .rbd(&["info", &format!("{POOL}/{}", image_of(id))])
            .is_ok()
    }

    fn attached(&self, _rig: &Rig, id: &str) -> bool {
        self.krbd.find(POOL, image_of(id)).unwrap().is_some()
    }
}

/// Force-unmaps every mapping of the pool when dropped (declared before the rigs, so it runs
/// after their drops have unmounted and closed what sits on top).
struct Unmap;

impl Drop for Unmap {
    fn drop(&mut self) {
        let krbd = KernelRbd::new();
        for m in krbd.mappings().unwrap_or_default() {
            if m.pool == POOL {
                let _ = krbd.unmap_id(m.id, true);
            }
        }
    }
}

fn lives(params: &HashMap<String, String>, secrets: &HashMap<String, String>, tag: &str) {
    let c = ceph();
    let _unmap = Unmap;
    let mut rig = plugin("vm-node", "all", &c.conf(), CLIENT_ID, None);
    let images = Images::new(c, CLIENT_ID);
    for (fs, block) in [("ext4", false), ("xfs", false), ("", true)] {
        let name = format!("pvc-rbd-{tag}-{}", if block { "block" } else { fs });
        life(&mut rig, &images, &name, params, secrets, block, fs);
    }
}

#[test]
fn vm_rbd_life_encrypted() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bao, token) = bao();
    lives(&transit_params(&bao.url), &token_secrets(&token), "enc");
}

#[test]
fn vm_rbd_life_plain() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    lives(&plain_params(), &HashMap::new(), "plain");
}

/// A stage refused because the other node holds the image: FAILED_PRECONDITION naming the
/// image, nothing mapped by the refused node, its staging path not mounted.
fn assert_held(
    rig: &Rig,
    images: &Images,
    v: &csi::proto::Volume,
    staging: &Path,
    secrets: &HashMap<String, String>,
) {
    let e = rig
        .stage(v, staging, cap(false, "ext4"), secrets)
        .expect_err("a second node stages a held volume");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(image_of(&v.volume_id)) && e.message().contains("held by"),
        "{e:?}"
    );
    assert!(
        !images.attached(rig, &v.volume_id),
        "the refused node left a mapping"
    );
    assert!(mount_dev(staging).is_none());
}

#[test]
fn vm_rbd_two_nodes_never_write_one_volume() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = ceph();
    let (conf_b, _) = c.add_client(CLIENT_B).unwrap();
    let (bao, token) = bao();
    let secrets = token_secrets(&token);
    let _unmap = Unmap;
    let mut a = plugin("node-a", "all", &c.conf(), CLIENT_ID, None);
    let mut b = plugin("node-b", "node", &conf_b, CLIENT_B, Some(a.key_dir()));
    let (on_a, on_b) = (Images::new(c, CLIENT_ID), Images::new(c, CLIENT_B));
    let ext4 = cap(false, "ext4");

    let v = a
        .create("pvc-rbd-two", GIB, &transit_params(&bao.url), false)
        .unwrap();
    let id = v.volume_id.clone();
    b.volumes.push(id.clone());
    let (sa, ta) = (a.path("staging"), a.path("target"));
    let (sb, tb) = (b.path("staging"), b.path("target"));

    // A holds it: B is refused, before and without touching the device.
    a.stage(&v, &sa, ext4.clone(), &secrets).unwrap();
    a.publish(&id, &sa, &ta, ext4.clone(), false).unwrap();
    write_marker(&ta, false, b"written on node-a");
    assert_held(&b, &on_b, &v, &sb, &secrets);

    // A lets go: B stages and reads A's data.
    a.unpublish(&id, &ta).unwrap();
    a.unstage(&id, &sa).unwrap();
    assert!(!on_a.attached(&a, &id));
    b.stage(&v, &sb, ext4.clone(), &secrets).unwrap();
    b.publish(&id, &sb, &tb, ext4.clone(), false).unwrap();
    assert_eq!(read_marker(&tb, false, 17), b"written on node-a");
    write_marker(&tb, false, b"written on node-b");
    b.unpublish(&id, &tb).unwrap();
    b.unstage(&id, &sb).unwrap();

    // A's plugin dies with the volume staged: its mapping stays, B is still refused; the
    // restarted plugin finds its mapping in the kernel and unstages.
    a.stage(&v, &sa, ext4.clone(), &secrets).unwrap();
    a.publish(&id, &sa, &ta, ext4.clone(), false).unwrap();
    assert_eq!(read_marker(&ta, false, 17), b"written on node-b");
    a.kill();
    assert!(on_a.attached(&a, &id));
    assert_held(&b, &on_b, &v, &sb, &secrets);
    a.start();
    a.unpublish(&id, &ta).unwrap();
    a.unstage(&id, &sa).unwrap();
    assert!(!on_a.attached(&a, &id));
    b.stage(&v, &sb, ext4.clone(), &secrets).unwrap();
    b.unstage(&id, &sb).unwrap();
    a.delete(&id).unwrap();
    assert!(!on_a.exists(&a, &id));
}

/// `onmetal-csi-driver volume release` as the operator runs it (the driver's own user).
fn release(conf: &Path, id: &str, live: bool) -> std::process::Output {
    let mut cmd = Command::new(driver_bin());
    cmd.args(["volume", "release", "--volume-id", id])
        .arg("--ceph-conf")
        .arg(conf)
        .args(["--ceph-id", CLIENT_ID]);
    if live {
        cmd.arg("--live");
    }
    cmd.output().unwrap()
}

#[test]
fn vm_rbd_a_dead_holder_is_released_by_the_operator_only() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = ceph();
    let (conf_b, _) = c.add_client(CLIENT_B).unwrap();
    let _unmap = Unmap;
    let mut a = plugin("node-a", "all", &c.conf(), CLIENT_ID, None);
    let mut b = plugin("node-b", "node", &conf_b, CLIENT_B, Some(a.key_dir()));
    let on_a = Images::new(c, CLIENT_ID);
    let ext4 = cap(false, "ext4");
    let none = HashMap::new();
    // Plain: the dead node's dm-crypt mapping would share its name with the next node's on
    // this one kernel (two machines have two device-mapper namespaces); the fence is the same.
    let v = a
        .create("pvc-rbd-dead", GIB, &plain_params(), false)
        .unwrap();
    let id = v.volume_id.clone();
    b.volumes.push(id.clone());
    let (sa, ta) = (a.path("staging"), a.path("target"));
    let (sb, tb) = (b.path("staging"), b.path("target"));

    // B stages, writes, and dies: its mapping (and mount) stay behind, still watching.
    b.stage(&v, &sb, ext4.clone(), &none).unwrap();
    b.publish(&id, &sb, &tb, ext4.clone(), false).unwrap();
    write_marker(&tb, false, b"the dead node's data");
    b.kill();
    assert_held(&a, &on_a, &v, &sa, &none);

    // The release refuses a holder that still watches, unless told it must be fenced.
    let out = release(&c.conf(), &id, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("still watched"),
        "{err}"
    );
    assert_held(&a, &on_a, &v, &sa, &none);
    let out = release(&c.conf(), &id, true);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("blocklisted") && said.contains("released"),
        "{said}"
    );

    // The fenced watch goes away (the OSD drops it, at the latest when it times out): A's
    // stage succeeds then, as kubelet's retries would, and sees the dead node's data.
    let t = Instant::now();
    loop {
        match a.stage(&v, &sa, ext4.clone(), &none) {
            Ok(_) => break,
            Err(e) if e.code() == Code::FailedPrecondition => {
                assert!(t.elapsed() < Duration::from_secs(120), "still held: {e:?}");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("stage after release: {e:?}"),
        }
    }
    eprintln!(
        "LATENCY rbd stage after volume release: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    a.publish(&id, &sa, &ta, ext4.clone(), false).unwrap();
    assert_eq!(read_marker(&ta, false, 20), b"the dead node's data");
    a.unpublish(&id, &ta).unwrap();
    a.unstage(&id, &sa).unwrap();
    assert!(!on_a.attached(&a, &id));
}
