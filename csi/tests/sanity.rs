//! The CSI conformance rules (as the kubernetes-csi sanity suite states them) that need no
//! kernel support: every call's required fields, unknown volumes, idempotent controller calls,
//! capacity rules, pagination. Runs the real driver binary on a Unix socket on the host; the
//! privileged node paths are covered by the `vm_*` tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi::capability::capability;
use csi::proto;
use csi::proto::controller_client::ControllerClient;
use csi::proto::identity_client::IdentityClient;
use csi::proto::node_client::NodeClient;
use csi::proto::volume_capability::access_mode::Mode;
use tonic::Code;
use tonic::transport::Channel;

struct Driver {
    child: Child,
    _dir: tempfile::TempDir,
    ch: Channel,
    rt: tokio::runtime::Runtime,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Driver {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .args(["--node-id", "sanity-node"])
        .arg("--kubelet-dir")
        .arg(std::env::temp_dir())
        .arg("--backend")
        .arg(format!("local:{}", dir.path().join("volumes").display()))
        .arg("--key-store")
        .arg(format!("dir:{}", dir.path().join("keys").display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "driver did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(csi::cli::client::connect(&format!(
            "unix://{}",
            sock.display()
        )))
        .unwrap();
    Driver {
        child,
        _dir: dir,
        ch,
        rt,
    }
}

fn mount_cap() -> proto::VolumeCapability {
    capability(false, "ext4", Mode::SingleNodeWriter)
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn create_req(name: &str, size: i64) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap()],
        parameters: HashMap::from([("type".into(), "fast".into())]),
        ..Default::default()
    }
}

#[test]
fn identity_answers() {
    let d = start();
    let mut id = IdentityClient::new(d.ch.clone());
    let info =
        d.rt.block_on(id.get_plugin_info(proto::GetPluginInfoRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(info.name, "csi.onmetal.de");
    assert!(!info.vendor_version.is_empty());
    let caps =
        d.rt.block_on(id.get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(
        caps.capabilities.len(),
        3,
        "controller service, online expansion, and topology (the local backend is node-local)"
    );
    let probe =
        d.rt.block_on(id.probe(proto::ProbeRequest {}))
            .unwrap()
            .into_inner();
    assert!(probe.ready.is_some());
    let mut node = NodeClient::new(d.ch.clone());
    let ni =
        d.rt.block_on(node.node_get_info(proto::NodeGetInfoRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(ni.node_id, "sanity-node");
    // `serve` writes no core file (its memory holds DEKs and KMS tokens).
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let core: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect();
    assert_eq!(core, ["0", "0"], "{limits}");
    // Unadvertised methods are UNIMPLEMENTED.
    let mut ctl = ControllerClient::new(d.ch.clone());
    let caps =
        d.rt.block_on(ctl.controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    assert!(caps.capabilities.len() >= 4);
}

#[test]
fn create_volume_rules() {
    let d = start();
    let mut c = ControllerClient::new(d.ch.clone());
    let rt = &d.rt;
    // Missing name / capabilities.
    assert_eq!(
        code(rt.block_on(c.create_volume(create_req("", 1 << 20)))),
        Code::InvalidArgument
    );
    let mut no_caps = create_req("v", 1 << 20);
    no_caps.volume_capabilities.clear();
    assert_eq!(
        code(rt.block_on(c.create_volume(no_caps))),
        Code::InvalidArgument
    );
    // Multi-node access is not supported.
    let mut multi = create_req("v", 1 << 20);
    multi.volume_capabilities = vec![capability(false, "ext4", Mode::MultiNodeMultiWriter)];
    assert_eq!(
        code(rt.block_on(c.create_volume(multi))),
        Code::InvalidArgument
    );

    // Idempotent by name; the same name with another size is ALREADY_EXISTS.
    let a = rt
        .block_on(c.create_volume(create_req("sanity-a", 10 << 20)))
        .unwrap()
        .into_inner();
    let b = rt
        .block_on(c.create_volume(create_req("sanity-a", 10 << 20)))
        .unwrap()
        .into_inner();
    assert_eq!(a, b);
    assert!(a.volume.as_ref().unwrap().capacity_bytes >= 10 << 20);
    assert_eq!(
        code(rt.block_on(c.create_volume(create_req("sanity-a", 1 << 30)))),
        Code::AlreadyExists
    );
    // Other parameters under the same name: ALREADY_EXISTS.
    let mut other = create_req("sanity-a", 10 << 20);
    other.parameters.insert("type".into(), "slow".into());
    assert_eq!(
        code(rt.block_on(c.create_volume(other))),
        Code::AlreadyExists
    );
    // The CO's own metadata keys do not count as parameters.
    let mut meta = create_req("sanity-a", 10 << 20);
    meta.parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "x".into());
    rt.block_on(c.create_volume(meta)).unwrap();

    // Encryption parameters are validated, named, and copied into the context.
    let enc = |k: &str, v: &str| {
        let mut r = create_req("sanity-enc", 1 << 30);
        r.parameters.extend([
            ("encryptionEnabled".to_owned(), "true".to_owned()),
            ("encryptionKMSType".to_owned(), "transit".to_owned()),
            (
                "encryptionKMSEndpoint".to_owned(),
                "http://10.0.0.5:8200".to_owned(),
            ),
            ("encryptionKMSKeyID".to_owned(), "pvc-kek".to_owned()),
        ]);
        if v.is_empty() {
            r.parameters.remove(k);
        } else {
            r.parameters.insert(k.to_owned(), v.to_owned());
        }
        r
    };
    for (k, v) in [
        ("encryptionEnabled", "yes"),
        ("encryptionKMSType", "aws-kms"),
        ("encryptionKMSEndpoint", "http://openbao.openbao.svc:8200"),
        ("encryptionKMSKeyID", ""),
    ] {
        let err = rt.block_on(c.create_volume(enc(k, v))).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}: {err:?}");
        assert!(err.message().contains(k), "{k}: {}", err.message());
    }
    // Encrypted volumes are at least 1 GiB: rounded up, or OUT_OF_RANGE under a lower limit.
    let mut small = enc("type", "fast");
    small.name = "sanity-enc-small".into();
    small.capacity_range = Some(proto::CapacityRange {
        required_bytes: 100 << 20,
        limit_bytes: 0,
    });
    let v = rt
        .block_on(c.create_volume(small.clone()))
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, 1 << 30);
    assert_eq!(
        v.volume_context["encryptionKMSEndpoint"],
        "http://10.0.0.5:8200"
    );
    assert_eq!(v.volume_context["encryptionKMSKeyID"], "pvc-kek");
    small.name = "sanity-enc-limited".into();
    small.capacity_range = Some(proto::CapacityRange {
        required_bytes: 100 << 20,
        limit_bytes: 200 << 20,
    });
    assert_eq!(code(rt.block_on(c.create_volume(small))), Code::OutOfRange);
}

#[test]
fn controller_calls_on_unknown_and_missing() {
    let d = start();
    let mut c = ControllerClient::new(d.ch.clone());
    let rt = &d.rt;
    // DeleteVolume: missing id INVALID_ARGUMENT, unknown id OK (twice).
    assert_eq!(
        code(rt.block_on(c.delete_volume(proto::DeleteVolumeRequest::default()))),
        Code::InvalidArgument
    );
    for _ in 0..2 {
        rt.block_on(c.delete_volume(proto::DeleteVolumeRequest {
            volume_id: "pvc-does-not-exist".into(),
            secrets: HashMap::new(),
        }))
        .unwrap();
    }
    // ValidateVolumeCapabilities.
    let validate =
        |id: &str, caps: Vec<proto::VolumeCapability>| proto::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
    assert_eq!(
        code(rt.block_on(c.validate_volume_capabilities(validate("", vec![mount_cap()])))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c.validate_volume_capabilities(validate("pvc-x", vec![])))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c.validate_volume_capabilities(validate("pvc-x", vec![mount_cap()])))),
        Code::NotFound
    );
    let v = rt
        .block_on(c.create_volume(create_req("sanity-v", 1 << 20)))
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let ok = rt
        .block_on(c.validate_volume_capabilities(validate(&v.volume_id, vec![mount_cap()])))
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let no = rt
        .block_on(c.validate_volume_capabilities(validate(
            &v.volume_id,
            vec![capability(false, "ext4", Mode::MultiNodeMultiWriter)],
        )))
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none() && !no.message.is_empty());

    // ControllerExpandVolume: missing id, missing range, unknown volume; grows; never shrinks.
    let expand = |id: &str, size: Option<i64>| proto::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: size.map(|s| proto::CapacityRange {
            required_bytes: s,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    assert_eq!(
        code(rt.block_on(c.controller_expand_volume(expand("", Some(1))))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c.controller_expand_volume(expand(&v.volume_id, None)))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(c.controller_expand_volume(expand("pvc-x", Some(1 << 30))))),
        Code::NotFound
    );
    let r = rt
        .block_on(c.controller_expand_volume(expand(&v.volume_id, Some(2 << 20))))
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 2 << 20);
    assert!(r.node_expansion_required);
    let again = rt
        .block_on(c.controller_expand_volume(expand(&v.volume_id, Some(2 << 20))))
        .unwrap()
        .into_inner();
    assert_eq!(again.capacity_bytes, 2 << 20);

    // GetCapacity answers.
    let cap = rt
        .block_on(c.get_capacity(proto::GetCapacityRequest::default()))
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0);
}

#[test]
fn list_volumes_pages() {
    let d = start();
    let mut c = ControllerClient::new(d.ch.clone());
    let rt = &d.rt;
    for i in 0..5 {
        rt.block_on(c.create_volume(create_req(&format!("sanity-list-{i}"), 1 << 20)))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = rt
            .block_on(c.list_volumes(proto::ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            }))
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(
        code(rt.block_on(c.list_volumes(proto::ListVolumesRequest {
            max_entries: 0,
            starting_token: "not a volume id!".into(),
        }))),
        Code::Aborted
    );
}

#[test]
fn node_calls_need_their_fields_and_a_known_volume() {
    let d = start();
    let mut n = NodeClient::new(d.ch.clone());
    let rt = &d.rt;
    let stage = |id: &str, path: &str, cap: Option<proto::VolumeCapability>| {
        proto::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path.into(),
            volume_capability: cap,
            ..Default::default()
        }
    };
    assert_eq!(
        code(rt.block_on(n.node_stage_volume(stage("", "/tmp/s", Some(mount_cap()))))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_stage_volume(stage("pvc-x", "", Some(mount_cap()))))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_stage_volume(stage("pvc-x", "/tmp/s", None)))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_stage_volume(stage("pvc-x", "/tmp/s", Some(mount_cap()))))),
        Code::NotFound
    );

    let unstage = |id: &str, path: &str| proto::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: path.into(),
    };
    assert_eq!(
        code(rt.block_on(n.node_unstage_volume(unstage("", "/tmp/s")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_unstage_volume(unstage("pvc-x", "")))),
        Code::InvalidArgument
    );

    let publish = |id: &str, st: &str, tgt: &str, cap: Option<proto::VolumeCapability>| {
        proto::NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: st.into(),
            target_path: tgt.into(),
            volume_capability: cap,
            ..Default::default()
        }
    };
    assert_eq!(
        code(rt.block_on(n.node_publish_volume(publish(
            "",
            "/tmp/s",
            "/tmp/t",
            Some(mount_cap())
        )))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_publish_volume(publish("pvc-x", "", "/tmp/t", Some(mount_cap()))))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_publish_volume(publish("pvc-x", "/tmp/s", "", Some(mount_cap()))))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_publish_volume(publish("pvc-x", "/tmp/s", "/tmp/t", None)))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_publish_volume(publish(
            "pvc-x",
            "/tmp/s",
            "/tmp/t",
            Some(mount_cap())
        )))),
        Code::NotFound
    );

    let unpublish = |id: &str, tgt: &str| proto::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: tgt.into(),
    };
    assert_eq!(
        code(rt.block_on(n.node_unpublish_volume(unpublish("", "/tmp/t")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_unpublish_volume(unpublish("pvc-x", "")))),
        Code::InvalidArgument
    );

    // Paths outside kubelet's directory (`--kubelet-dir`, here the temp directory), relative
    // ones and ones that climb out with `..` are refused before anything is looked at.
    let tmp = std::env::temp_dir().display().to_string();
    let inside = format!("{tmp}/onmetal-sanity-s");
    for p in [
        "/etc/onmetal".to_owned(),
        "relative/s".to_owned(),
        format!("{tmp}/../etc/onmetal"),
        "/".to_owned(),
    ] {
        assert_eq!(
            code(rt.block_on(n.node_stage_volume(stage("pvc-x", &p, Some(mount_cap()))))),
            Code::InvalidArgument,
            "stage {p}"
        );
        assert_eq!(
            code(rt.block_on(n.node_unstage_volume(unstage("pvc-x", &p)))),
            Code::InvalidArgument,
            "unstage {p}"
        );
        assert_eq!(
            code(rt.block_on(n.node_publish_volume(publish(
                "pvc-x",
                &inside,
                &p,
                Some(mount_cap())
            )))),
            Code::InvalidArgument,
            "publish to {p}"
        );
        assert_eq!(
            code(rt.block_on(n.node_publish_volume(publish(
                "pvc-x",
                &p,
                &inside,
                Some(mount_cap())
            )))),
            Code::InvalidArgument,
            "publish from {p}"
        );
        assert_eq!(
            code(rt.block_on(n.node_unpublish_volume(unpublish("pvc-x", &p)))),
            Code::InvalidArgument,
            "unpublish {p}"
        );
    }

    let stats = |id: &str, p: &str| proto::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: p.into(),
        staging_target_path: String::new(),
    };
    assert_eq!(
        code(rt.block_on(n.node_get_volume_stats(stats("", "/tmp")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_get_volume_stats(stats("pvc-x", "")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_get_volume_stats(stats("pvc-x", "/nonexistent/path")))),
        Code::NotFound
    );
    // The sanity suite's own "volume not found" request.
    assert_eq!(
        code(rt.block_on(n.node_get_volume_stats(stats("pvc-x", "some/path")))),
        Code::NotFound
    );

    let expand = |id: &str, p: &str| proto::NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: p.into(),
        ..Default::default()
    };
    assert_eq!(
        code(rt.block_on(n.node_expand_volume(expand("", "/tmp")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_expand_volume(expand("pvc-x", "")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(rt.block_on(n.node_expand_volume(expand("pvc-x", "/nonexistent/path")))),
        Code::NotFound
    );

    let caps = rt
        .block_on(n.node_get_capabilities(proto::NodeGetCapabilitiesRequest {}))
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.len() >= 3);
}

#[test]
fn metrics_and_json_logs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .args(["--log-format", "json", "serve", "--node-id", "m"])
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .arg("--backend")
        .arg(format!("local:{}", dir.path().join("v").display()))
        .arg("--key-store")
        .arg(format!("dir:{}", dir.path().join("k").display()))
        .args(["--metrics-address", &addr])
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(csi::cli::client::connect(&format!(
            "unix://{}",
            sock.display()
        )))
        .unwrap();
    let mut c = ControllerClient::new(ch);
    rt.block_on(c.create_volume(create_req("metrics-1", 1 << 20)))
        .unwrap();
    let _ = rt.block_on(c.create_volume(create_req("metrics-1", 1 << 30)));
    let out = Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("onmetal_csi_operation_duration_seconds")
            && text.contains("operation=\"CreateVolume\"")
            && text.contains("code=\"AlreadyExists\""),
        "{text}"
    );
    // Every log line is JSON; the failed call's line names the operation and the volume.
    let logs = std::fs::read_to_string(log.path()).unwrap();
    let mut saw_volume = false;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["span"]["volume_id"] == "metrics-1" && v["span"]["op"] == "CreateVolume" {
            saw_volume = true;
        }
    }
    assert!(saw_volume, "{logs}");
}

/// A ListVolumes `starting_token` is only one this driver handed out (csi-sanity's "should fail
/// when an invalid starting_token is passed" sends `invalid-token`): anything else is ABORTED,
/// also a bare volume ID or an altered token. A token of ours stays valid when the volume it
/// names is deleted between pages: the next page neither repeats nor skips a volume.
#[test]
fn list_volumes_refuses_tokens_it_did_not_make() {
    let d = start();
    let mut c = ControllerClient::new(d.ch.clone());
    let rt = &d.rt;
    for i in 0..4 {
        rt.block_on(c.create_volume(create_req(&format!("sanity-tok-{i}"), 1 << 20)))
            .unwrap();
    }
    let list = |c: &mut ControllerClient<Channel>, token: &str| {
        rt.block_on(c.list_volumes(proto::ListVolumesRequest {
            max_entries: 1,
            starting_token: token.to_owned(),
        }))
    };
    let first = list(&mut c, "").unwrap().into_inner();
    let token = first.next_token.clone();
    assert!(!token.is_empty());
    let named = first.entries[0].volume.as_ref().unwrap().volume_id.clone();
    let mut altered = token.clone();
    altered.replace_range(..1, if token.starts_with('0') { "1" } else { "0" });
    for bad in [
        "invalid-token",
        "sanity-tok-0",
        named.as_str(),
        altered.as_str(),
        &token[..token.len() - 1],
        &format!("{token}0"),
    ] {
        assert_eq!(code(list(&mut c, bad)), Code::Aborted, "{bad:?}");
    }
    // The volume the token names goes away between pages.
    rt.block_on(c.delete_volume(proto::DeleteVolumeRequest {
        volume_id: named.clone(),
        ..Default::default()
    }))
    .unwrap();
    let mut seen = vec![named];
    let mut token = token;
    while !token.is_empty() {
        let page = list(&mut c, &token).unwrap().into_inner();
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        token = page.next_token;
    }
    assert_eq!(
        seen,
        [
            "sanity-tok-0",
            "sanity-tok-1",
            "sanity-tok-2",
            "sanity-tok-3"
        ]
    );
}

/// The topology segment of `node`.
fn on_node(node: &str) -> proto::Topology {
    proto::Topology {
        segments: HashMap::from([("topology.csi.onmetal.de/node".to_owned(), node.to_owned())]),
    }
}

/// The `local` backend keeps volumes on one machine: the plugin says so (capability
/// VOLUME_ACCESSIBILITY_CONSTRAINTS, NodeGetInfo's topology), every volume names its node, and
/// a request that may only be served elsewhere is RESOURCE_EXHAUSTED (the CO tries elsewhere).
#[test]
fn node_local_volumes_carry_their_node_topology() {
    use proto::plugin_capability::{Type, service};
    let d = start();
    let here = on_node("sanity-node");
    let mut id = IdentityClient::new(d.ch.clone());
    let caps =
        d.rt.block_on(id.get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    assert!(
        caps.capabilities.iter().any(|c| matches!(
            &c.r#type,
            Some(Type::Service(s))
                if s.r#type == service::Type::VolumeAccessibilityConstraints as i32
        )),
        "{caps:?}"
    );
    let mut node = NodeClient::new(d.ch.clone());
    let ni =
        d.rt.block_on(node.node_get_info(proto::NodeGetInfoRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(ni.accessible_topology.as_ref(), Some(&here));

    let mut ctl = ControllerClient::new(d.ch.clone());
    let elsewhere = on_node("other-node");
    let with = |name: &str, requisite: Vec<proto::Topology>| proto::CreateVolumeRequest {
        accessibility_requirements: Some(proto::TopologyRequirement {
            preferred: requisite.clone(),
            requisite,
        }),
        ..create_req(name, 1 << 20)
    };
    assert_eq!(
        code(d.rt.block_on(ctl.create_volume(with("pvc-away", vec![elsewhere.clone()])))),
        Code::ResourceExhausted
    );
    let v =
        d.rt.block_on(ctl.create_volume(with("pvc-here", vec![elsewhere, here.clone()])))
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
    assert_eq!(v.accessible_topology, vec![here.clone()]);
    // Without requirements, and on a repeated create and in ListVolumes, the same.
    let again =
        d.rt.block_on(ctl.create_volume(create_req("pvc-here", 1 << 20)))
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
    assert_eq!(again.accessible_topology, vec![here.clone()]);
    let list =
        d.rt.block_on(ctl.list_volumes(proto::ListVolumesRequest::default()))
            .unwrap()
            .into_inner();
    let listed = list
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref())
        .find(|v| v.volume_id == "pvc-here")
        .unwrap();
    assert_eq!(listed.accessible_topology, vec![here]);
}
