//! `deploy/`: the kustomize manifests render (`kubectl kustomize`), every object validates
//! against the Kubernetes OpenAPI schemas of the oldest and newest Kubernetes versions we support
//! (`kubernetes-validate --strict`, PyPI; `deploy/install-test-tools.sh` installs it), every
//! object parses into its `k8s-openapi` type and back without losing a field, the RBAC grants
//! exactly the Secret verbs of issue 11, and the objects are what the issue lists.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The Kubernetes versions we support: the oldest and the newest (k8s-openapi's range).
const OLDEST: &str = "1.33.0";
const NEWEST: &str = "1.37.0";
const NS: &str = "kube-system";
const CONTROLLER_SA: &str = "onmetal-csi-controller";
const NODE_SA: &str = "onmetal-csi-node";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A missing tool fails under `CI=true` and skips (with a note) otherwise.
fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = format!("{tool} is not installed: run deploy/install-test-tools.sh");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} (CI=true: missing tools are failures)"
        );
        eprintln!("SKIP: {msg}");
    }
    ok
}

/// `kubectl kustomize deploy/`, or `None` (skipped) without kubectl.
fn render() -> Option<String> {
    if !have("kubectl", &["version", "--client"]) {
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn examples() -> Vec<(PathBuf, String)> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    v.sort();
    v
}

fn id(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn typed<T: DeserializeOwned>(o: &Value) -> T {
    serde_json::from_value(o.clone()).unwrap_or_else(|e| panic!("{}: {e}", id(o)))
}

/// Parses `o` into `T` and back: an unknown or misspelt field would be dropped, so the round
/// trip must give the same document.
fn round_trip<T: DeserializeOwned + Serialize>(o: &Value) {
    let t: T = typed(o);
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, o, "{} does not survive its k8s-openapi type", id(o));
}

fn parse_typed(o: &Value) {
    let api = o["apiVersion"].as_str().unwrap_or_default();
    let kind = o["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(o),
        ("v1", "PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(o),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(o),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(o)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(o),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(o),
        ("storage.k8s.io/v1", "CSIDriver") => round_trip::<CSIDriver>(o),
        ("storage.k8s.io/v1", "StorageClass") => round_trip::<StorageClass>(o),
        _ => panic!("{}: no k8s-openapi type mapped for {api} {kind}", id(o)),
    }
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is not rendered"))
}

#[test]
fn manifests_render_and_validate_for_the_oldest_and_newest_kubernetes() {
    let Some(yaml) = render() else { return };
    assert!(objects(&yaml).len() >= 10);
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &yaml).unwrap();
    let mut files = vec![rendered];
    files.extend(examples().into_iter().map(|(p, _)| p));
    for version in [OLDEST, NEWEST] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate {version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_object_parses_into_its_k8s_openapi_type() {
    let Some(yaml) = render() else { return };
    for o in objects(&yaml) {
        parse_typed(&o);
    }
    for (path, text) in examples() {
        for o in objects(&text) {
            eprintln!("{}: {}", path.display(), id(&o));
            parse_typed(&o);
        }
    }
}

/// Every ServiceAccount → the Secret verbs its bindings grant, and the rules of every role.
fn secret_grants(objs: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let rules_of = |kind: &str, name: &str| -> Vec<PolicyRule> {
        let o = find(objs, kind, name);
        match kind {
            "Role" => typed::<Role>(o).rules.unwrap_or_default(),
            _ => typed::<ClusterRole>(o).rules.unwrap_or_default(),
        }
    };
    let grants_secrets = |r: &PolicyRule| {
        r.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g.is_empty())
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == "secrets")
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bind = |subjects: Vec<k8s_openapi::api::rbac::v1::Subject>,
                    rules: Vec<PolicyRule>,
                    binding_ns: Option<&str>| {
        for s in subjects {
            assert_eq!(s.kind, "ServiceAccount");
            assert_eq!(s.namespace.as_deref(), Some(NS));
            let verbs = out.entry(s.name.clone()).or_default();
            for r in rules.iter().filter(|r| grants_secrets(r)) {
                assert_eq!(binding_ns, Some(NS), "Secrets only through Roles in {NS}");
                verbs.extend(r.verbs.iter().cloned());
            }
        }
    };
    for o in objs {
        match o["kind"].as_str().unwrap_or_default() {
            "RoleBinding" => {
                let b: RoleBinding = typed(o);
                let rules = rules_of(&b.role_ref.kind, &b.role_ref.name);
                let ns = b.metadata.namespace.clone();
                bind(b.subjects.unwrap_or_default(), rules, ns.as_deref());
            }
            "ClusterRoleBinding" => {
                let b: ClusterRoleBinding = typed(o);
                assert_eq!(b.role_ref.kind, "ClusterRole");
                let rules = rules_of("ClusterRole", &b.role_ref.name);
                bind(b.subjects.unwrap_or_default(), rules, None);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_secret_verbs_of_the_issue() {
    let Some(yaml) = render() else { return };
    let objs = objects(&yaml);
    // No wildcards, no aggregation, no ClusterRole that names Secrets.
    for o in &objs {
        let kind = o["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        assert!(o.get("aggregationRule").is_none(), "{}: aggregation", id(o));
        let rules: Vec<PolicyRule> = serde_json::from_value(o["rules"].clone()).unwrap();
        for r in &rules {
            for list in [
                r.api_groups.as_deref().unwrap_or_default(),
                r.resources.as_deref().unwrap_or_default(),
                &r.verbs,
                r.non_resource_urls.as_deref().unwrap_or_default(),
            ] {
                assert!(!list.iter().any(|x| x.contains('*')), "{}: wildcard", id(o));
            }
            let secrets = r
                .resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == "secrets");
            if kind == "ClusterRole" {
                assert!(!secrets, "{}: a ClusterRole grants Secrets", id(o));
            }
            if kind == "Role" {
                assert_eq!(o["metadata"]["namespace"], NS, "{}", id(o));
            }
        }
    }
    let grants = secret_grants(&objs);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(grants[NODE_SA], set(&["get", "create", "update"]));
    assert_eq!(grants[CONTROLLER_SA], set(&["get", "delete"]));
    assert_eq!(
        grants.keys().collect::<Vec<_>>(),
        [CONTROLLER_SA, NODE_SA],
        "no other ServiceAccount is bound"
    );
}

fn pod_spec(o: &Value) -> PodSpec {
    match o["kind"].as_str().unwrap_or_default() {
        "Deployment" => typed::<Deployment>(o).spec.template.spec.unwrap(),
        "DaemonSet" => typed::<DaemonSet>(o).spec.template.spec.unwrap(),
        other => panic!("{other} has no pod template"),
    }
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Container) -> Vec<&str> {
    c.args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect()
}

#[test]
fn the_objects_are_the_ones_the_issue_lists() {
    let Some(yaml) = render() else { return };
    let objs = objects(&yaml);

    let driver: CSIDriver = typed(find(&objs, "CSIDriver", "csi.onmetal.de"));
    let spec = driver.spec;
    assert_eq!(spec.attach_required, Some(false));
    assert_eq!(spec.pod_info_on_mount, Some(false));
    assert_eq!(spec.fs_group_policy.as_deref(), Some("File"));
    assert_eq!(
        spec.volume_lifecycle_modes.as_deref(),
        Some(&["Persistent".to_owned()][..])
    );

    let ctrl = pod_spec(find(&objs, "Deployment", "onmetal-csi-controller"));
    assert_eq!(ctrl.service_account_name.as_deref(), Some(CONTROLLER_SA));
    assert!(args(container(&ctrl, "csi-provisioner")).contains(&"--extra-create-metadata"));
    container(&ctrl, "csi-resizer");
    container(&ctrl, "livenessprobe");
    let ours = args(container(&ctrl, "onmetal-csi-driver"));
    for a in [
        "serve",
        "--mode=controller",
        "--key-store=kube",
        "--key-namespace=kube-system",
    ] {
        assert!(ours.contains(&a), "controller args lack {a}: {ours:?}");
    }

    let node = pod_spec(find(&objs, "DaemonSet", "onmetal-csi-node"));
    assert_eq!(node.service_account_name.as_deref(), Some(NODE_SA));
    assert_eq!(node.host_network, Some(true));
    container(&node, "node-driver-registrar");
    container(&node, "livenessprobe");
    let c = container(&node, "onmetal-csi-driver");
    for a in [
        "serve",
        "--mode=node",
        "--key-store=kube",
        "--key-namespace=kube-system",
    ] {
        assert!(args(c).contains(&a), "node args lack {a}");
    }
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let mounts: BTreeMap<&str, Option<&str>> = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|m| (m.mount_path.as_str(), m.mount_propagation.as_deref()))
        .collect();
    assert_eq!(mounts.get("/var/lib/kubelet"), Some(&Some("Bidirectional")));
    assert!(mounts.contains_key("/dev") && mounts.contains_key("/sys"));
    let host_paths: BTreeSet<&str> = node
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    for p in ["/dev", "/sys", "/var/lib/kubelet"] {
        assert!(host_paths.contains(p), "host {p} is not mounted");
    }

    // Every image is pinned by the kustomization (a registry path and a tag), and the
    // manifests themselves name only the placeholders that kustomization maps.
    for spec in [&ctrl, &node] {
        for c in &spec.containers {
            let image = c.image.as_deref().unwrap();
            assert!(
                image.contains('/')
                    && image
                        .rsplit_once(':')
                        .is_some_and(|(_, t)| t.starts_with('v')),
                "{} has an unpinned image {image}",
                c.name
            );
        }
    }
    for f in ["controller.yaml", "node.yaml"] {
        let text = std::fs::read_to_string(repo().join("deploy").join(f)).unwrap();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("image:"))
        {
            assert!(
                !line.contains(':') || line.matches(':').count() == 1,
                "{f}: {line}"
            );
        }
    }
}

#[test]
fn the_containerfile_builds_the_driver_on_debian_slim_without_cryptsetup() {
    let text = std::fs::read_to_string(repo().join("Containerfile")).unwrap();
    let runtime = text.rsplit("FROM ").next().unwrap();
    assert!(runtime.starts_with("docker.io/library/debian:") && runtime.contains("-slim"));
    for pkg in ["e2fsprogs", "xfsprogs"] {
        assert!(runtime.contains(pkg), "the image lacks {pkg}");
    }
    for line in text.lines().filter(|l| l.contains("install")) {
        assert!(
            !line.contains("cryptsetup"),
            "no cryptsetup in the image: {line}"
        );
    }
    assert!(runtime.contains("onmetal-csi-driver"));
}
