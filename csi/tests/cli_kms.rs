//! `onmetal-csi-driver kms` end to end against a real OpenBao dev server on 127.0.0.1.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Output;

use testkit::cmd::try_run;
use testkit::peers::{self, bao::Bao};

const KEY: &str = "pvc-kek";

fn run(args: &[&str], stdin: &[u8]) -> Output {
    try_run(env!("CARGO_BIN_EXE_onmetal-csi-driver"), args, Some(stdin))
}

fn kms_args<'a>(op: &'a str, bao: &'a Bao, dir: &'a Path, volume: Option<&'a str>) -> Vec<String> {
    let mut v = vec![
        "kms".to_owned(),
        op.to_owned(),
        "--type".to_owned(),
        "transit".to_owned(),
        "--endpoint".to_owned(),
        bao.url.clone(),
        "--key-id".to_owned(),
        KEY.to_owned(),
        "--secret-dir".to_owned(),
        dir.display().to_string(),
    ];
    if let Some(vol) = volume {
        v.push("--volume-id".to_owned());
        v.push(vol.to_owned());
    }
    v
}

fn call(op: &str, bao: &Bao, dir: &Path, volume: Option<&str>, stdin: &[u8]) -> Output {
    let args = kms_args(op, bao, dir, volume);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, stdin)
}

fn stderr_line(o: &Output) -> String {
    let s = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        s.trim_end().lines().count(),
        1,
        "one-line error expected: {s:?}"
    );
    s
}

#[test]
fn wrap_unwrap_check_and_errors_over_https() {
    let Some(bao) = Bao::start(true) else { return };
    bao.setup_transit(KEY);
    let token = bao.policy_token(KEY, "");
    let secret_dir = tempfile::tempdir().unwrap();
    // As kubectl --from-literal/--from-file would leave them (a trailing newline is tolerated).
    std::fs::write(secret_dir.path().join("token"), format!("{token}\n")).unwrap();
    std::fs::write(secret_dir.path().join("ca.crt"), bao.ca_pem()).unwrap();
    let dir = secret_dir.path();

    let mut dek = vec![0u8; 64];
    getrandom_fill(&mut dek);
    let wrapped = call("wrap", &bao, dir, Some("pvc-42"), &dek);
    assert!(
        wrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&wrapped.stderr)
    );
    let record = String::from_utf8(wrapped.stdout).unwrap();
    assert_eq!(record.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(v["volumeId"], "pvc-42");
    assert_eq!(v["kmsType"], "transit");

    let unwrapped = call("unwrap", &bao, dir, Some("pvc-42"), record.as_bytes());
    assert!(
        unwrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&unwrapped.stderr)
    );
    assert_eq!(unwrapped.stdout, dek);

    let check = call("check", &bao, dir, None, b"");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let line = String::from_utf8(check.stdout).unwrap();
    assert!(
        line.starts_with("ok: wrap+unwrap round trip ") && line.contains(" ms\n"),
        "{line}"
    );
    assert!(
        line.contains("token: policies [\"default\", \"pvc-enc\"], expires 20"),
        "{line}"
    );
    assert!(line.contains("renewable true, period 86400 s"), "{line}");
    eprintln!("cli check: {line}");

    // Wrong volume: integrity, exit 65, one line.
    let o = call("unwrap", &bao, dir, Some("pvc-43"), record.as_bytes());
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr_line(&o).contains("integrity"));
    assert!(o.stdout.is_empty());

    // A record naming another endpoint (an edited Secret): integrity, exit 65, nothing sent
    // there; the message names the field and both values.
    let elsewhere = format!("https://127.0.0.1:{}", peers::free_port());
    let edited = record.replace(&bao.url, &elsewhere);
    assert_ne!(edited, record);
    let o = call("unwrap", &bao, dir, Some("pvc-42"), edited.as_bytes());
    assert_eq!(o.status.code(), Some(65));
    let line = stderr_line(&o);
    assert!(
        line.contains("endpoint") && line.contains(&elsewhere) && line.contains(&bao.url),
        "{line}"
    );
    assert!(o.stdout.is_empty());

    // Recovery: --endpoint-from-record instead of --endpoint, with a warning on stderr.
    let mut args = kms_args("unwrap", &bao, dir, Some("pvc-42"));
    let at = args.iter().position(|a| a == "--endpoint").unwrap();
    args.drain(at..at + 2);
    args.push("--endpoint-from-record".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, record.as_bytes());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, dek);
    let warning = stderr_line(&o);
    assert!(
        warning.starts_with("WARNING: --endpoint-from-record") && warning.contains(&bao.url),
        "{warning}"
    );
    // Not with --endpoint as well, and not for commands without a record.
    let mut both = args.clone();
    both.extend(["--endpoint", bao.url.as_str()]);
    assert_eq!(run(&both, record.as_bytes()).status.code(), Some(2));
    let mut check: Vec<&str> = args.clone();
    check[1] = "check";
    check.truncate(check.len() - 3);
    check.push("--endpoint-from-record");
    let o = run(&check, b"");
    assert_eq!(o.status.code(), Some(64), "{:?}", check);
    assert!(stderr_line(&o).contains("unwrap and rewrap only"));

    // Cluster-internal endpoint: invalid configuration, exit 78.
    let o = run(
        &[
            "kms",
            "check",
            "--type",
            "transit",
            "--endpoint",
            "https://openbao.vault.svc.cluster.local:8200",
            "--key-id",
            KEY,
            "--secret-dir",
            &dir.display().to_string(),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr_line(&o).contains("cluster-internal"));

    // Unknown type and a DEK too short: exit 78.
    let o = run(
        &[
            "kms",
            "check",
            "--type",
            "aws",
            "--endpoint",
            "x",
            "--key-id",
            "k",
            "--secret-dir",
            "/",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(78));
    stderr_line(&o);
    let o = call("wrap", &bao, dir, Some("pvc-42"), b"short");
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr_line(&o).contains("16..=512"));

    // Revoked token: denied, exit 77, and the token is not in the message.
    bao.revoke(&token);
    let o = call("unwrap", &bao, dir, Some("pvc-42"), record.as_bytes());
    assert_eq!(o.status.code(), Some(77));
    let line = stderr_line(&o);
    assert!(line.contains("denied") && !line.contains(&token), "{line}");

    // Server gone: unavailable, exit 69.
    drop(bao);
    let bao2 = Bao::start(true).unwrap();
    let mut args = kms_args("check", &bao2, dir, None);
    let dead = args[5].replace(&bao2.port.to_string(), &peers::free_port().to_string());
    args[5] = dead;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args, b"");
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stderr_line(&o);
}

fn getrandom_fill(buf: &mut [u8]) {
    let f = std::fs::File::open("/dev/urandom").unwrap();
    use std::io::Read;
    f.take(buf.len() as u64).read_exact(buf).unwrap();
}
