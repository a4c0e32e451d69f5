//! `deploy/`: the kustomize manifests render (`kubectl kustomize`), alone, with the
//! key-namespace component and with the rbd component (Ceph RBD backend); every object validates against the Kubernetes OpenAPI schemas of the
//! oldest and newest Kubernetes versions we support (`kubernetes-validate --strict`, PyPI;
//! `deploy/install-test-tools.sh` installs it), every object parses into its `k8s-openapi` type
//! and back without losing a field, the RBAC grants exactly the Secret verbs the driver calls,
//! the ValidatingAdmissionPolicy's CEL expressions (evaluated with the `cel` crate) admit the
//! key store's writes and refuse every other Secret write of the driver's ServiceAccounts, and
//! the objects are the ones the deployment needs (CSIDriver fields, sidecars, privileged node
//! plugin, Bidirectional kubelet mount, host network, pinned images).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, ServiceAccount,
};
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
/// The namespace of the wrapped-key Secrets in the hardened alternative
/// (deploy/components/key-namespace).
const KEY_NS: &str = "onmetal-csi-keys";
/// The rbd component (deploy/rbd): the Ceph configuration's ConfigMap (generated: the name
/// gets a hash suffix) and the admin's keyring Secret.
const CEPH_CONFIG: &str = "onmetal-csi-ceph-config";
const CEPH_KEYRING: &str = "onmetal-csi-ceph-keyring";
const LOCAL_BACKEND: &str = "--backend=local:/var/lib/onmetal-csi/volumes";
const RBD_FLAGS: [&str; 3] = [
    "--backend=rbd",
    "--ceph-conf=/etc/ceph/ceph.conf",
    "--ceph-keyring=/etc/ceph-keyring/keyring",
];

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
    render_dir(&repo().join("deploy"))
}

/// `kubectl kustomize DIR`, or `None` (skipped) without kubectl.
fn render_dir(dir: &Path) -> Option<String> {
    if !have("kubectl", &["version", "--client"]) {
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The overlay deploy/README.md tells users to write for the hardened alternative: deploy/
/// with the key-namespace component.
fn render_hardened() -> Option<String> {
    render_with_components("deploy-hardened", &["components/key-namespace"])
}

/// The overlay deploy/README.md tells users to write for the Ceph RBD backend: deploy/ with
/// the rbd component.
fn render_rbd() -> Option<String> {
    render_with_components("deploy-rbd", &["rbd"])
}

/// deploy/ with `components` (paths under deploy/), rendered from an overlay `name`: kustomize
/// wants relative paths and refuses an overlay inside the base's folder, so it goes under the
/// target directory.
fn render_with_components(name: &str, components: &[&str]) -> Option<String> {
    let overlay = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&overlay).unwrap();
    let deploy = relative(&overlay, &repo().join("deploy"));
    let components: String = components
        .iter()
        .map(|c| format!("  - {deploy}/{c}\n"))
        .collect();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources:\n  - {deploy}\n\
             components:\n{components}"
        ),
    )
    .unwrap();
    render_dir(&overlay)
}

/// `to` relative to the directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> String {
    let (from, to) = (
        std::fs::canonicalize(from).unwrap(),
        std::fs::canonicalize(to).unwrap(),
    );
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
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
        ("v1", "Namespace") => round_trip::<Namespace>(o),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(o),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<ValidatingAdmissionPolicy>(o)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<ValidatingAdmissionPolicyBinding>(o)
        }
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
    let hardened = render_hardened().unwrap();
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &yaml).unwrap();
    let rendered_hardened = dir.path().join("rendered-hardened.yaml");
    std::fs::write(&rendered_hardened, &hardened).unwrap();
    let mut files = vec![rendered, rendered_hardened];
    files.extend(examples().into_iter().map(|(p, _)| p));
    kubernetes_validate(&files);
}

/// `kubernetes-validate --strict` of `files` for the oldest and the newest Kubernetes.
fn kubernetes_validate(files: &[PathBuf]) {
    for version in [OLDEST, NEWEST] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(files)
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
    for o in objects(&yaml)
        .iter()
        .chain(&objects(&render_hardened().unwrap()))
    {
        parse_typed(o);
    }
    for (path, text) in examples() {
        for o in objects(&text) {
            eprintln!("{}: {}", path.display(), id(&o));
            parse_typed(&o);
        }
    }
}

/// Every ServiceAccount → the Secret verbs its bindings grant (only through Roles in
/// `secret_ns`), and the rules of every role.
fn secret_grants(objs: &[Value], secret_ns: &str) -> BTreeMap<String, BTreeSet<String>> {
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
                assert_eq!(
                    binding_ns,
                    Some(secret_ns),
                    "Secrets only through Roles in {secret_ns}"
                );
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
fn rbac_grants_exactly_the_secret_verbs_the_driver_calls() {
    let Some(yaml) = render() else { return };
    check_rbac(&objects(&yaml), NS);
    // The hardened alternative: the same grants, in the key namespace only.
    check_rbac(&objects(&render_hardened().unwrap()), KEY_NS);
    // The Ceph RBD backend: the same grants (its keyring Secret is kubelet's to mount).
    check_rbac(&objects(&render_rbd().unwrap()), NS);
}

/// No wildcards, no ClusterRole with Secrets; the node may get, create and update Secrets, the
/// controller only delete them (controller::delete -> KubeStore::delete, which reads nothing),
/// both only in `secret_ns`; nobody else.
fn check_rbac(objs: &[Value], secret_ns: &str) {
    // No wildcards, no aggregation, no ClusterRole that names Secrets.
    for o in objs {
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
                let ns = if secrets { secret_ns } else { NS };
                assert_eq!(o["metadata"]["namespace"], ns, "{}", id(o));
            }
        }
    }
    let grants = secret_grants(objs, secret_ns);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(grants[NODE_SA], set(&["get", "create", "update"]));
    assert_eq!(grants[CONTROLLER_SA], set(&["delete"]));
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
fn the_objects_are_the_ones_the_deployment_needs() {
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
fn the_containerfile_builds_the_driver_on_debian_slim_without_cryptsetup_or_the_rbd_cli() {
    let text = std::fs::read_to_string(repo().join("Containerfile")).unwrap();
    let runtime = text.rsplit("FROM ").next().unwrap();
    assert!(runtime.starts_with("docker.io/library/debian:") && runtime.contains("-slim"));
    for pkg in ["e2fsprogs", "xfsprogs", "librbd1", "librados2"] {
        assert!(runtime.contains(pkg), "the image lacks {pkg}");
    }
    let build = text.split("FROM ").nth(1).unwrap();
    for pkg in ["libdevmapper-dev", "librbd-dev", "librados-dev"] {
        assert!(build.contains(pkg), "the build stage lacks {pkg}");
    }
    // Our own code on the attach path: no LUKS tools, no `rbd` CLI, no losetup or mount.
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for tool in ["cryptsetup", "ceph-common", " mount ", "util-linux"] {
            assert!(!line.contains(tool), "no {tool} in the image: {line}");
        }
    }
    assert!(runtime.contains("onmetal-csi-driver"));
}

#[test]
fn the_key_namespace_component_moves_only_the_key_roles_and_the_flag() {
    let Some(base) = render() else { return };
    let base = objects(&base);
    let mut hardened = objects(&render_hardened().unwrap());
    let ns = find(&hardened, "Namespace", KEY_NS).clone();
    parse_typed(&ns);
    hardened.retain(|o| *o != ns);
    // Undo exactly what the component is meant to change; the rest must be deploy/ as is.
    let mut moved = BTreeSet::new();
    for o in &mut hardened {
        let kind = o["kind"].as_str().unwrap_or_default().to_owned();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if (kind == "Role" || kind == "RoleBinding") && name.ends_with("-keys") {
            assert_eq!(o["metadata"]["namespace"], KEY_NS, "{}", id(o));
            o["metadata"]["namespace"] = NS.into();
            moved.insert(id(o));
        }
        if kind == "Deployment" || kind == "DaemonSet" {
            let containers = o["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .unwrap();
            let driver = containers
                .iter_mut()
                .find(|c| c["name"] == "onmetal-csi-driver")
                .unwrap();
            let flag = driver["args"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|a| a.as_str().unwrap().starts_with("--key-namespace="))
                .unwrap();
            assert_eq!(*flag, format!("--key-namespace={KEY_NS}"), "{name}");
            *flag = format!("--key-namespace={NS}").into();
            moved.insert(id(o));
        }
    }
    assert_eq!(moved.len(), 6, "{moved:?}");
    // (kustomize orders by namespace too: compare as sets)
    let sorted = |v: &[Value]| {
        let mut v: Vec<String> = v.iter().map(Value::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&hardened), sorted(&base));
}

// ---- The Ceph RBD backend (deploy/rbd) ----

/// The rbd component's example StorageClass (not rendered: it holds placeholders).
fn rbd_storage_class() -> PathBuf {
    repo().join("deploy/rbd/storageclass-rbd-transit.yaml")
}

#[test]
fn the_rbd_overlay_runs_both_plugins_on_ceph() {
    let Some(base) = render() else { return };
    let base = objects(&base);
    let yaml = render_rbd().unwrap();
    let mut rbd = objects(&yaml);
    if have("kubernetes-validate", &["--version"]) {
        let dir = tempfile::tempdir().unwrap();
        let rendered = dir.path().join("rendered-rbd.yaml");
        std::fs::write(&rendered, &yaml).unwrap();
        kubernetes_validate(&[rendered, rbd_storage_class()]);
    }
    for o in &rbd {
        parse_typed(o);
    }

    // The Ceph configuration: generated, in kube-system, the conf the driver reads.
    let config = rbd
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the ConfigMap is rendered")
        .clone();
    let config_name = config["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(
        config_name.starts_with(&format!("{CEPH_CONFIG}-")),
        "{config_name}: the generated name with its hash"
    );
    assert_eq!(config["metadata"]["namespace"], NS);
    let cm: ConfigMap = typed(&config);
    let conf = &cm.data.as_ref().unwrap()["ceph.conf"];
    assert!(conf.contains("mon_host ="), "{conf}");
    assert!(
        conf.contains("keyring = /etc/ceph-keyring/keyring"),
        "{conf}"
    );
    assert_eq!(cm.data.unwrap().len(), 1, "ceph.conf alone");
    rbd.retain(|o| *o != config);
    assert!(
        !rbd.iter().any(|o| o["kind"] == "Secret"),
        "the keyring Secret is the admin's, never rendered"
    );

    for (kind, name) in [
        ("Deployment", "onmetal-csi-controller"),
        ("DaemonSet", "onmetal-csi-node"),
    ] {
        let spec = pod_spec(find(&rbd, kind, name));
        let c = container(&spec, "onmetal-csi-driver");
        let a = args(c);
        for flag in RBD_FLAGS {
            assert!(a.contains(&flag), "{name} lacks {flag}: {a:?}");
        }
        let backends: Vec<_> = a.iter().filter(|x| x.starts_with("--backend")).collect();
        assert_eq!(backends, [&"--backend=rbd"], "{name}");
        assert!(!a.iter().any(|x| x.contains("local:")), "{name}: {a:?}");

        let volumes = spec.volumes.as_deref().unwrap_or_default();
        let volume = |n: &str| {
            volumes
                .iter()
                .find(|v| v.name == n)
                .unwrap_or_else(|| panic!("{name}: no volume {n}"))
        };
        let mounts = c.volume_mounts.as_deref().unwrap_or_default();
        let mount = |path: &str| {
            let m = mounts
                .iter()
                .find(|m| m.mount_path == path)
                .unwrap_or_else(|| panic!("{name}: {path} is not mounted"));
            assert_eq!(m.read_only, Some(true), "{name}: {path} read-only");
            assert_eq!(m.sub_path, None, "{name}: {path} whole (updates reach it)");
            volume(&m.name)
        };
        let conf = mount("/etc/ceph");
        assert_eq!(
            conf.config_map.as_ref().map(|c| c.name.as_str()),
            Some(config_name.as_str()),
            "{name}: /etc/ceph"
        );
        let keyring = mount("/etc/ceph-keyring")
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: /etc/ceph-keyring is not a Secret"));
        assert_eq!(keyring.secret_name.as_deref(), Some(CEPH_KEYRING), "{name}");
        assert_eq!(
            keyring.default_mode,
            Some(0o400),
            "{name}: the keyring 0400"
        );
        assert_eq!(keyring.optional, None, "{name}: no Pod without the keyring");
        // The local backend's directory is gone.
        assert!(
            !mounts
                .iter()
                .any(|m| m.mount_path.starts_with("/var/lib/onmetal-csi")),
            "{name}: {mounts:?}"
        );
        assert!(
            !volumes.iter().any(|v| v.name == "volumes-dir"
                || v.host_path
                    .as_ref()
                    .is_some_and(|h| h.path.starts_with("/var/lib/onmetal-csi"))),
            "{name}: {volumes:?}"
        );
    }
    // The node plugin still maps through the host's /sys and /dev, privileged.
    let node = pod_spec(find(&rbd, "DaemonSet", "onmetal-csi-node"));
    let c = container(&node, "onmetal-csi-driver");
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    for (path, host) in [("/sys", "/sys"), ("/dev", "/dev")] {
        let m = c
            .volume_mounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("the node plugin lacks {path}"));
        assert_ne!(
            m.read_only,
            Some(true),
            "{path} writable (add_single_major)"
        );
        let v = node
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|v| v.name == m.name)
            .unwrap();
        assert_eq!(v.host_path.as_ref().map(|h| h.path.as_str()), Some(host));
    }

    // Undo exactly what the component is meant to change in the two workloads (and take the
    // local directory out of deploy/'s): the rest must be deploy/ as is.
    let strip = |objs: &mut Vec<Value>, rbd: bool| {
        for o in objs.iter_mut() {
            if o["kind"] != "Deployment" && o["kind"] != "DaemonSet" {
                continue;
            }
            let pod = &mut o["spec"]["template"]["spec"];
            pod["volumes"].as_array_mut().unwrap().retain(|v| {
                !["volumes-dir", "ceph-config", "ceph-keyring"]
                    .contains(&v["name"].as_str().unwrap())
            });
            let driver = pod["containers"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|c| c["name"] == "onmetal-csi-driver")
                .unwrap();
            driver["volumeMounts"].as_array_mut().unwrap().retain(|m| {
                !["volumes-dir", "ceph-config", "ceph-keyring"]
                    .contains(&m["name"].as_str().unwrap())
            });
            if rbd {
                let a = driver["args"].as_array_mut().unwrap();
                a.retain(|x| !RBD_FLAGS[1..].contains(&x.as_str().unwrap()));
                for x in a.iter_mut() {
                    if x == RBD_FLAGS[0] {
                        *x = LOCAL_BACKEND.into();
                    }
                }
            }
        }
    };
    let mut base = base;
    strip(&mut base, false);
    strip(&mut rbd, true);
    let sorted = |v: &[Value]| {
        let mut v: Vec<String> = v.iter().map(Value::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&rbd), sorted(&base));

    // The example StorageClass: ours, on a pool, expandable.
    let text = std::fs::read_to_string(rbd_storage_class()).unwrap();
    let docs = objects(&text);
    assert_eq!(docs.len(), 1);
    parse_typed(&docs[0]);
    let sc: StorageClass = typed(&docs[0]);
    assert_eq!(sc.provisioner, "csi.onmetal.de");
    assert_eq!(sc.allow_volume_expansion, Some(true));
    let params = sc.parameters.unwrap_or_default();
    assert!(
        params
            .get(csi::backend::rbd::PARAM_POOL)
            .is_some_and(|p| !p.is_empty() && !p.contains('<')),
        "volume_pool: {params:?}"
    );
    assert_eq!(
        params.get("encryptionEnabled").map(String::as_str),
        Some("true")
    );

    // With the key-namespace component too, in either order (deploy/README.md says so): both
    // change the driver's arguments by position.
    for (name, components) in [
        ("deploy-rbd-keys", ["rbd", "components/key-namespace"]),
        ("deploy-keys-rbd", ["components/key-namespace", "rbd"]),
    ] {
        let objs = objects(&render_with_components(name, &components).unwrap());
        for (kind, workload) in [
            ("Deployment", "onmetal-csi-controller"),
            ("DaemonSet", "onmetal-csi-node"),
        ] {
            let spec = pod_spec(find(&objs, kind, workload));
            let a = args(container(&spec, "onmetal-csi-driver"));
            let key_ns = format!("--key-namespace={KEY_NS}");
            for flag in RBD_FLAGS.iter().copied().chain([key_ns.as_str()]) {
                assert!(a.contains(&flag), "{name} {workload} lacks {flag}: {a:?}");
            }
        }
        check_rbac(&objs, KEY_NS);
    }
}

// ---- The admission policy on the driver's Secret writes (deploy/admission-key-secrets.yaml) ---

const POLICY: &str = "onmetal-csi-key-secrets";

/// What the API server would do with one request under the policy.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The policy does not apply (resource, operation or a match condition).
    NotMatched,
    Admitted,
    /// A validation evaluated to false (its message).
    Refused(String),
    /// A match condition or validation could not be evaluated (failurePolicy decides).
    Error(String),
}

/// Evaluates one CEL expression of the policy with the variables Kubernetes binds for a
/// ValidatingAdmissionPolicy without params: `request`, `object`, `oldObject`. The expression
/// is not type-checked as the API server does (against the Secret schema); an expression using
/// anything else (`params`, `authorizer`, `variables`, `namespaceObject`) fails to evaluate and
/// with it the cases that expect a plain true or false.
fn eval(expr: &str, request: &Value, object: &Value, old: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(expr).map_err(|e| format!("{expr}: {e}"))?;
    let mut ctx = cel::Context::default();
    ctx.add_variable("request", request)
        .map_err(|e| e.to_string())?;
    ctx.add_variable("object", object)
        .map_err(|e| e.to_string())?;
    ctx.add_variable("oldObject", old)
        .map_err(|e| e.to_string())?;
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("{expr}: not a bool: {other:?}")),
        Err(e) => Err(format!("{expr}: {e}")),
    }
}

/// The API server's steps for one request: the resource rules, then every match condition,
/// then every validation (all must be true).
fn admit(policy: &Value, request: &Value, object: &Value, old: &Value) -> Verdict {
    let spec = &policy["spec"];
    let contains = |list: &Value, x: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some(x))
    };
    let res = &request["resource"];
    let rule_matches = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| {
            contains(&r["apiGroups"], res["group"].as_str().unwrap())
                && contains(&r["apiVersions"], res["version"].as_str().unwrap())
                && contains(&r["resources"], res["resource"].as_str().unwrap())
                && contains(&r["operations"], request["operation"].as_str().unwrap())
        });
    if !rule_matches {
        return Verdict::NotMatched;
    }
    for c in spec["matchConditions"].as_array().unwrap() {
        match eval(c["expression"].as_str().unwrap(), request, object, old) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched,
            Err(e) => return Verdict::Error(e),
        }
    }
    for v in spec["validations"].as_array().unwrap() {
        match eval(v["expression"].as_str().unwrap(), request, object, old) {
            Ok(true) => {}
            Ok(false) => return Verdict::Refused(v["message"].as_str().unwrap().to_owned()),
            Err(e) => return Verdict::Error(e),
        }
    }
    Verdict::Admitted
}

fn username(sa: &str) -> String {
    format!("system:serviceaccount:{NS}:{sa}")
}

/// An admission request for a Secret, as the API server builds it (the parts a policy sees).
fn secret_request(op: &str, user: &str, name: &str) -> Value {
    serde_json::json!({
        "uid": "d8f1e4a0-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Secret"},
        "resource": {"group": "", "version": "v1", "resource": "secrets"},
        "requestKind": {"group": "", "version": "v1", "kind": "Secret"},
        "requestResource": {"group": "", "version": "v1", "resource": "secrets"},
        "name": name,
        "namespace": NS,
        "operation": op,
        "userInfo": {
            "username": user,
            "uid": "6d5f3b7e-0000-4000-8000-000000000002",
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NS}"),
                       "system:authenticated"],
        },
        "dryRun": false,
    })
}

/// A Secret as the API server holds it after defaulting (`type` is `Opaque` when not given).
fn secret(name: &str, type_: Option<&str>, annotations: Value) -> Value {
    let mut s = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": "0b9d2c4e-0000-4000-8000-000000000003",
            "resourceVersion": "4711",
            "annotations": annotations,
        },
        "data": {"record": "e30=", "state": "cGVuZGluZw=="},
    });
    if let Some(t) = type_ {
        s["type"] = t.into();
    }
    s
}

/// The kube store's record of a volume: its name and type from the driver's own constants.
fn record() -> Value {
    let id = csi::volume_id::VolumeId::parse("pvc-6f1c2a3b-9d4e-4f5a-8b7c-0d1e2f3a4b5c").unwrap();
    secret(
        &id.record_name(),
        Some(csi::keystore::kube::SECRET_TYPE),
        serde_json::json!({csi::keystore::kube::ANNOTATION_DRIVER: "csi.onmetal.de"}),
    )
}

#[test]
fn the_key_secret_policy_admits_the_stores_records_and_refuses_everything_else() {
    let Some(yaml) = render() else { return };
    let objs = objects(&yaml);
    let policy = find(&objs, "ValidatingAdmissionPolicy", POLICY);
    let binding: ValidatingAdmissionPolicyBinding =
        typed(find(&objs, "ValidatingAdmissionPolicyBinding", POLICY));
    assert!(
        policy["metadata"].get("namespace").is_none(),
        "cluster-scoped"
    );
    assert!(binding.metadata.namespace.is_none(), "cluster-scoped");
    let spec = binding.spec;
    assert_eq!(spec.policy_name, POLICY);
    assert_eq!(spec.validation_actions, ["Deny"]);
    assert!(
        spec.param_ref.is_none() && spec.match_resources.is_none(),
        "every request"
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    // Exactly Secrets, exactly the writes; no wildcard (which admit() would not understand).
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"],
        serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                            "operations": ["CREATE", "UPDATE", "DELETE"]}])
    );
    // The usernames in the policy are those of the rendered ServiceAccounts.
    for sa in [NODE_SA, CONTROLLER_SA] {
        let o = find(&objs, "ServiceAccount", sa);
        assert_eq!(o["metadata"]["namespace"], NS);
    }

    let node = username(NODE_SA);
    let ctrl = username(CONTROLLER_SA);
    let ours = record();
    let our_name = ours["metadata"]["name"].as_str().unwrap().to_owned();
    let null = Value::Null;
    let mut formatted = ours.clone();
    formatted["data"]["state"] = "Zm9ybWF0dGVk".into();

    // What the driver does: node create and update (pending -> formatted), controller delete.
    let admitted = [
        (
            "node creates a record",
            secret_request("CREATE", &node, &our_name),
            &ours,
            &null,
        ),
        (
            "node updates a record",
            secret_request("UPDATE", &node, &our_name),
            &formatted,
            &ours,
        ),
        (
            "controller deletes a record",
            secret_request("DELETE", &ctrl, &our_name),
            &null,
            &ours,
        ),
    ];
    for (what, req, object, old) in &admitted {
        assert_eq!(admit(policy, req, object, old), Verdict::Admitted, "{what}");
    }

    let sa_token = secret(
        "generic-garbage-collector-token",
        Some("kubernetes.io/service-account-token"),
        serde_json::json!({"kubernetes.io/service-account.name": "generic-garbage-collector"}),
    );
    let sa_token_our_name = secret(
        &our_name,
        Some("kubernetes.io/service-account-token"),
        serde_json::json!({"kubernetes.io/service-account.name": "generic-garbage-collector"}),
    );
    let opaque_our_name = secret(&our_name, Some("Opaque"), serde_json::json!({}));
    let untyped_our_name = secret(&our_name, None, serde_json::json!({}));
    let kms_token = secret("kms-token", Some("Opaque"), serde_json::json!({}));
    let mut our_type_other_name = ours.clone();
    our_type_other_name["metadata"]["name"] = "kms-token".into();

    let refused = [
        (
            "node creates a ServiceAccount token Secret",
            secret_request("CREATE", &node, "generic-garbage-collector-token"),
            &sa_token,
            &null,
        ),
        (
            "controller creates a ServiceAccount token Secret",
            secret_request("CREATE", &ctrl, "generic-garbage-collector-token"),
            &sa_token,
            &null,
        ),
        (
            "node creates a ServiceAccount token Secret with our prefix",
            secret_request("CREATE", &node, &our_name),
            &sa_token_our_name,
            &null,
        ),
        (
            "node creates an Opaque Secret with our prefix",
            secret_request("CREATE", &node, &our_name),
            &opaque_our_name,
            &null,
        ),
        (
            "node creates a Secret with our prefix and no type",
            secret_request("CREATE", &node, &our_name),
            &untyped_our_name,
            &null,
        ),
        (
            "node creates a Secret of our type under another name",
            secret_request("CREATE", &node, "kms-token"),
            &our_type_other_name,
            &null,
        ),
        (
            "node overwrites the KMS credentials",
            secret_request("UPDATE", &node, "kms-token"),
            &kms_token,
            &kms_token,
        ),
        (
            "node turns a foreign Opaque Secret with our name into a record",
            secret_request("UPDATE", &node, &our_name),
            &ours,
            &opaque_our_name,
        ),
        (
            "controller deletes the KMS credentials",
            secret_request("DELETE", &ctrl, "kms-token"),
            &null,
            &kms_token,
        ),
        (
            "controller deletes a foreign Secret with our name",
            secret_request("DELETE", &ctrl, &our_name),
            &null,
            &opaque_our_name,
        ),
        (
            "node deletes a ServiceAccount token Secret",
            secret_request("DELETE", &node, "generic-garbage-collector-token"),
            &null,
            &sa_token,
        ),
    ];
    for (what, req, object, old) in &refused {
        match admit(policy, req, object, old) {
            Verdict::Refused(msg) => assert!(msg.contains("onmetal-csi-luks-*"), "{what}: {msg}"),
            other => panic!("{what}: {other:?}, expected a validation to refuse it"),
        }
    }

    // Everyone else is not looked at, whatever they write: an admin, kube-controller-manager's
    // token controller, a ServiceAccount of the same name in another namespace.
    let others = [
        "kubernetes-admin",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:kube-controller-manager",
        "system:serviceaccount:default:onmetal-csi-node",
    ];
    for user in others {
        for (op, object, old) in [
            ("CREATE", &sa_token, &null),
            ("UPDATE", &kms_token, &kms_token),
            ("DELETE", &null, &kms_token),
        ] {
            let req = secret_request(op, user, "x");
            assert_eq!(
                admit(policy, &req, object, old),
                Verdict::NotMatched,
                "{user} {op}"
            );
        }
    }
    // Nor are the driver's requests on other resources (its sidecars' Events, Leases, PVs).
    let mut lease = secret_request("UPDATE", &ctrl, "external-resizer-csi-onmetal-de");
    lease["resource"] =
        serde_json::json!({"group": "coordination.k8s.io", "version": "v1", "resource": "leases"});
    assert_eq!(admit(policy, &lease, &null, &null), Verdict::NotMatched);
}
