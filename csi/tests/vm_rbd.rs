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
//! - the plugin killed (-9) in the middle of a first stage (the crash points of `vm_faults`):
//!   the restarted plugin finds the mapping the dead one made and converges.
//! - the escape hatch on RBD: `rbd device map` and stock `cryptsetup open` with the DEK from
//!   `volume key` show the files; `restore-header` rebuilds a zeroed header on the image.
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

/// A StorageClass's parameters with `volume_pool` set to the test pool.
fn in_pool(mut params: HashMap<String, String>) -> HashMap<String, String> {
    params.insert("volume_pool".into(), POOL.into());
    params
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
            wrap: Vec::new(),
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
    lives(
        &in_pool(transit_params(&bao.url)),
        &token_secrets(&token),
        "enc",
    );
}

#[test]
fn vm_rbd_life_plain() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    lives(&in_pool(plain_params()), &HashMap::new(), "plain");
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

/// Two node plugins of one cluster: `node-a` (`--mode all`, client.csi) and `node-b` (`--mode
/// node`, its own cephx user, A's key store), with their views of the kernel's mappings.
fn two_nodes(c: &'static CephCluster) -> (Rig, Rig, Images, Images) {
    let (conf_b, _) = c.add_client(CLIENT_B).unwrap();
    let a = plugin("node-a", "all", &c.conf(), CLIENT_ID, None);
    let b = plugin("node-b", "node", &conf_b, CLIENT_B, Some(a.key_dir()));
    (a, b, Images::new(c, CLIENT_ID), Images::new(c, CLIENT_B))
}

#[test]
fn vm_rbd_two_nodes_never_write_one_volume() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = ceph();
    let (bao, token) = bao();
    let secrets = token_secrets(&token);
    let _unmap = Unmap;
    let (mut a, mut b, on_a, on_b) = two_nodes(c);
    let ext4 = cap(false, "ext4");

    let v = a
        .create(
            "pvc-rbd-two",
            GIB,
            &in_pool(transit_params(&bao.url)),
            false,
        )
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
    let _unmap = Unmap;
    let (mut a, mut b, on_a, _) = two_nodes(c);
    let ext4 = cap(false, "ext4");
    let none = HashMap::new();
    // Plain: the dead node's dm-crypt mapping would share its name with the next node's on
    // this one kernel (two machines have two device-mapper namespaces); the fence is the same.
    let v = a
        .create("pvc-rbd-dead", GIB, &in_pool(plain_params()), false)
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

#[test]
fn vm_rbd_killed_first_stage_converges() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = ceph();
    let (bao, token) = bao();
    let secrets = token_secrets(&token);
    let _unmap = Unmap;
    let mut rig = plugin("vm-node", "all", &c.conf(), CLIENT_ID, None);
    let images = Images::new(c, CLIENT_ID);
    for point in ["after-record", "after-format", "before-activate"] {
        let v = rig
            .create(
                &format!("pvc-rbd-crash-{point}"),
                GIB,
                &in_pool(transit_params(&bao.url)),
                false,
            )
            .unwrap();
        let id = v.volume_id.clone();
        let staging = rig.path(&format!("staging-{point}"));
        // The first stage dies at the crash point, with the image mapped by the dead process.
        rig.kill();
        rig.env = vec![("ONMETAL_CSI_CRASH_AT".into(), point.into())];
        rig.start();
        assert!(
            rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
                .is_err()
        );
        assert!(
            !rig.wait_exit().success(),
            "{point}: died at the crash point"
        );
        assert!(
            images.attached(&rig, &id),
            "{point}: the mapping outlives the crash"
        );
        // The restarted plugin takes its own mapping up again and converges.
        rig.env.clear();
        rig.start();
        rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
            .unwrap_or_else(|e| panic!("{point}: retry after the crash: {e}"));
        std::fs::write(staging.join("f"), point).unwrap();
        rig.unstage(&id, &staging).unwrap();
        assert!(!images.attached(&rig, &id));
        rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
            .unwrap();
        assert_eq!(std::fs::read_to_string(staging.join("f")).unwrap(), point);
        let rec = std::fs::read_to_string(rig.record_file(&id)).unwrap();
        assert!(rec.contains("\"state\":\"formatted\""), "{point}: {rec}");
        rig.unstage(&id, &staging).unwrap();
        rig.delete(&id).unwrap();
    }
}

/// Maps `rbd/<image>` with the stock `rbd` CLI as the admin; its device. `noudev` on map and
/// unmap: the VM runs no udev, and the CLI would wait for its events forever.
fn rbd_cli_map(c: &CephCluster, image: &str) -> PathBuf {
    let out = c
        .rbd(&[
            "device",
            "map",
            "--options",
            "noudev",
            &format!("{POOL}/{image}"),
        ])
        .unwrap();
    PathBuf::from(out.trim())
}

#[test]
fn vm_rbd_escape_hatch_stock_rbd_and_cryptsetup_open_the_volume() {
    require_privileged!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = ceph();
    let (bao, token) = bao();
    let secrets = token_secrets(&token);
    let _unmap = Unmap;
    let mut rig = plugin("vm-node", "all", &c.conf(), CLIENT_ID, None);
    let v = rig
        .create(
            "pvc-rbd-hatch",
            GIB,
            &in_pool(transit_params(&bao.url)),
            false,
        )
        .unwrap();
    let id = v.volume_id.clone();
    let staging = rig.path("staging");
    rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
        .unwrap();
    std::fs::write(staging.join("f"), b"on ceph").unwrap();
    rig.unstage(&id, &staging).unwrap();

    // Without the driver: `rbd device map`, the DEK from `volume key`, stock `cryptsetup open`.
    let dev = rbd_cli_map(c, image_of(&id));
    let key = rig.path("dek.bin");
    let key_arg = key.display().to_string();
    rig.volume_cmd("key", &id, &bao.url, &token, &["--output", &key_arg]);
    let mnt = rig.path("cryptsetup-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let name = format!("cs-{id}");
    let shown = sh(&format!(
        "cryptsetup open --key-file {k} {d} {name} && mount /dev/mapper/{name} {m} && cat {m}/f; \
         umount {m}; cryptsetup close {name}",
        k = key.display(),
        d = dev.display(),
        m = mnt.display()
    ));
    assert_eq!(shown, "on ceph");

    // Both header copies destroyed on the image: the driver refuses it, `restore-header`
    // rebuilds the header from the record, and the volume stages with its data.
    sh(&format!(
        "dd if=/dev/zero of={} bs=1M count=16 conv=notrunc oflag=direct status=none",
        dev.display()
    ));
    let dev_arg = dev.display().to_string();
    c.rbd(&["device", "unmap", "--options", "noudev", &dev_arg])
        .unwrap();
    let e = rig
        .stage(&v, &staging, cap(false, "ext4"), &secrets)
        .expect_err("a volume without its header stages");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let dev = rbd_cli_map(c, image_of(&id));
    let dev_arg = dev.display().to_string();
    rig.volume_cmd(
        "restore-header",
        &id,
        &bao.url,
        &token,
        &["--device", &dev_arg],
    );
    c.rbd(&["device", "unmap", "--options", "noudev", &dev_arg])
        .unwrap();
    rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
        .unwrap();
    assert_eq!(std::fs::read(staging.join("f")).unwrap(), b"on ceph");
    rig.unstage(&id, &staging).unwrap();
    rig.delete(&id).unwrap();
}
