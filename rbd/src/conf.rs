//! What the driver reads from the Ceph configuration: the monitor addresses (`mon_host`) and the
//! keyring path from `ceph.conf`, and the cephx key from the keyring. Nothing else: librados reads
//! the same `ceph.conf` itself for everything it needs.
//!
//! The formats are Ceph's INI dialect: `[section]` headers, `key = value` lines, `#` and `;`
//! comments; option names treat spaces, `_` and `-` alike (`mon host` is `mon_host`). An option
//! is looked up in `[client.<id>]`, then `[client]`, then `[global]`, as librados does.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// A cephx user id without the `client.` prefix (`csi` for `client.csi`): letters, digits and
/// `_ - .`, at most 64 characters, so it is safe inside a kernel map option list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Checks the id (a leading `client.` is accepted and removed).
    pub fn new(id: &str) -> Result<Self> {
        let id = id.strip_prefix("client.").unwrap_or(id);
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cephx id",
                format!("{id:?}: expected letters, digits, '_', '-' or '.' (at most 64)"),
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id (`csi`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The entity name (`client.csi`).
    pub fn entity(&self) -> String {
        format!("client.{}", self.0)
    }
}

/// A parsed `ceph.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CephConf {
    /// `(section, [(option, value)])`, option names normalised to `_`.
    sections: Vec<(String, Vec<(String, String)>)>,
    /// Where it was read from (for messages).
    origin: String,
}

fn normalise_key(k: &str) -> String {
    k.trim()
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_lowercase()
}

/// Cuts a `#` or `;` comment off a value (Ceph allows them after a value).
fn strip_comment(v: &str) -> &str {
    match v.find(['#', ';']) {
        Some(i) => &v[..i],
        None => v,
    }
}

impl CephConf {
    /// Reads and parses `path` (blocking file read).
    pub fn read(path: &Path) -> Result<Self> {
        let op = format!("read ceph.conf {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(op.clone(), e))?;
        let mut c = Self::parse(&text).map_err(|e| e.with_op(op))?;
        c.origin = path.display().to_string();
        Ok(c)
    }

    /// Parses the text of a `ceph.conf`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = strip_comment(rest).trim();
                let Some(name) = name.strip_suffix(']') else {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "parse ceph.conf",
                        format!("line {}: unterminated section header", n + 1),
                    ));
                };
                sections.push((name.trim().to_owned(), Vec::new()));
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "parse ceph.conf",
                    format!("line {}: expected `option = value`", n + 1),
                ));
            };
            if sections.is_empty() {
                sections.push(("global".to_owned(), Vec::new()));
            }
            let v = strip_comment(v).trim().trim_matches('"').to_owned();
            if let Some((_, opts)) = sections.last_mut() {
                opts.push((normalise_key(k), v));
            }
        }
        Ok(Self {
            sections,
            origin: "ceph.conf".to_owned(),
        })
    }

    /// An option as librados would see it for `client`: `[client.<id>]`, then `[client]`, then
    /// `[global]`; the last occurrence within a section wins.
    pub fn get(&self, client: &ClientId, option: &str) -> Option<&str> {
        let option = normalise_key(option);
        let entity = client.entity();
        [entity.as_str(), "client", "global"]
            .into_iter()
            .find_map(|want| {
                self.sections
                    .iter()
                    .filter(|(name, _)| name == want)
                    .flat_map(|(_, opts)| opts.iter())
                    .filter(|(k, _)| *k == option)
                    .map(|(_, v)| v.as_str())
                    .next_back()
            })
    }

    /// `mon_host` (or the older `mon_addr`), required.
    pub fn mon_host(&self, client: &ClientId) -> Result<&str> {
        self.get(client, "mon_host")
            .or_else(|| self.get(client, "mon_addr"))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("read {}", self.origin),
                    "no mon_host",
                )
            })
    }

    /// The keyring paths to try, in order: the `keyring` option (comma-separated, with
    /// `$cluster`, `$name`, `$type` and `$id` expanded), or Ceph's default list.
    pub fn keyring_paths(&self, client: &ClientId) -> Vec<PathBuf> {
        let raw = self.get(client, "keyring").unwrap_or(
            "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring",
        );
        raw.split([',', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| {
                PathBuf::from(
                    p.replace("$cluster", "ceph")
                        .replace("$name", &client.entity())
                        .replace("$type", "client")
                        .replace("$id", client.as_str()),
                )
            })
            .collect()
    }

    /// The first of [`Self::keyring_paths`] that exists.
    pub fn keyring(&self, client: &ClientId) -> Result<PathBuf> {
        let paths = self.keyring_paths(client);
        paths.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("keyring of {}", client.entity()),
                format!("none of {paths:?} exists"),
            )
        })
    }
}

/// The monitors' msgr1 addresses from a `mon_host` value, which the kernel client needs (it
/// speaks msgr1 unless mapped with `ms_mode`). Accepts every form Ceph writes: address vectors
/// (`[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:...]`), bare addresses (`10.0.0.1:6789`; a bare
/// address on 3300 is msgr2), bare IPs (msgr1 on 6789), IPv6 (`[::1]:6789`), `/nonce` suffixes
/// and host names (resolved here: blocking).
pub fn msgr1_mon_addrs(mon_host: &str) -> Result<Vec<SocketAddr>> {
    let bad = |what: String| Error::new(ErrorKind::InvalidArgument, "parse mon_host", what);
    let mut out = Vec::new();
    for token in split_top(mon_host) {
        let entries = match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) if is_addrvec(inner) => split_top(inner),
            _ => vec![token],
        };
        for entry in entries {
            let (proto, addr) = if let Some(a) = entry.strip_prefix("v1:") {
                (Some(1), a)
            } else if let Some(a) = entry.strip_prefix("v2:") {
                (Some(2), a)
            } else if let Some(a) = entry.strip_prefix("any:") {
                (None, a)
            } else {
                (None, entry)
            };
            if proto == Some(2) {
                continue;
            }
            let addr = addr.split('/').next().unwrap_or(addr);
            let sa = parse_addr(addr).ok_or_else(|| bad(format!("{entry:?}")))?;
            if proto.is_none() && sa.port() == 3300 {
                continue; // a bare address on the msgr2 port
            }
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    if out.is_empty() {
        return Err(bad(format!(
            "{mon_host:?} names no msgr1 (v1) monitor address, which the kernel client needs"
        )));
    }
    Ok(out)
}

fn is_addrvec(inner: &str) -> bool {
    ["v1:", "v2:", "any:"]
        .iter()
        .any(|p| inner.trim_start().starts_with(p))
}

/// Splits on `,`, `;` and whitespace outside brackets.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' | ';' | ' ' | '\t' if depth == 0 => {
                if i > start {
                    out.push(&s[start..i]);
                }
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// `ip`, `ip:port`, `[v6]`, `[v6]:port`, `host`, `host:port` (port 6789 when absent).
fn parse_addr(a: &str) -> Option<SocketAddr> {
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Some(sa);
    }
    let bare = a
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(a);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 6789));
    }
    if a.is_empty() || a.contains(['[', ']']) {
        return None;
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (a, 6789),
    };
    (host, port).to_socket_addrs().ok()?.next()
}

/// The monitor list as the kernel's `add_single_major` wants it: `ip:port,ip:port`.
pub(crate) fn kernel_mon_list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A cephx secret (the base64 `key` of a keyring entry). Wiped on drop; no `Clone`, no
/// `Display`, and its `Debug` shows nothing of the key.
pub struct CephxKey(Zeroizing<String>);

impl std::fmt::Debug for CephxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CephxKey(<redacted>)")
    }
}

/// The encoded size of a cephx AES key: type (2) + created (8) + length (2) + 16 bytes.
const CEPHX_KEY_ENCODED_LEN: usize = 28;

impl CephxKey {
    /// Checks a base64 key: it must decode to an encoded cephx key.
    pub fn from_base64(b64: &str) -> Result<Self> {
        let key = Self(Zeroizing::new(b64.trim().to_owned()));
        let raw = key.decoded()?;
        if raw.len() < CEPHX_KEY_ENCODED_LEN {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "cephx key",
                "too short for a cephx key",
            ));
        }
        Ok(key)
    }

    /// The key of `entity`'s section (`client.csi`) in a keyring file (blocking file read).
    pub fn from_keyring_file(path: &Path, client: &ClientId) -> Result<Self> {
        let op = format!("read keyring {}", path.display());
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(op.clone(), e))?);
        Self::from_keyring(&text, client).map_err(|e| e.with_op(op))
    }

    /// The key of `client`'s section in the text of a keyring.
    pub fn from_keyring(text: &str, client: &ClientId) -> Result<Self> {
        let entity = client.entity();
        let mut in_section = false;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix('[') {
                in_section = rest.strip_suffix(']').map(str::trim) == Some(entity.as_str());
                continue;
            }
            if !in_section {
                continue;
            }
            if let Some((k, v)) = line.split_once('=')
                && normalise_key(k) == "key"
            {
                return Self::from_base64(v);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            "parse keyring",
            format!("no key for [{entity}]"),
        ))
    }

    /// The base64 text, for the kernel's `secret=` option only.
    pub(crate) fn base64(&self) -> &str {
        &self.0
    }

    /// The encoded key (what the kernel's `ceph` key type takes as payload).
    pub(crate) fn decoded(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.0.len()));
        base64::engine::general_purpose::STANDARD
            .decode_vec(self.0.as_bytes(), &mut out)
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, "cephx key", "not valid base64"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AQC6vhZr/QnsMBAA0tWf7kEEe712mrUKh4hxMQ==";

    fn csi() -> ClientId {
        ClientId::new("csi").expect("id")
    }

    #[test]
    fn client_ids_are_checked() {
        assert_eq!(ClientId::new("client.csi").expect("id").as_str(), "csi");
        assert_eq!(csi().entity(), "client.csi");
        let long = "a".repeat(65);
        for bad in ["", "a,b", "a=b", "a b", "x\n", long.as_str()] {
            assert_eq!(
                ClientId::new(bad).expect_err(bad).kind(),
                ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn conf_options_follow_librados_precedence() {
        let c = CephConf::parse(
            "# a comment\n[global]\n\tfsid = 1234\n mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789] # here\n\
             keyring = /etc/ceph/$cluster.$name.keyring\n[client]\nkeyring=/k/client\n\
             [client.csi]\n  keyring = /k/$id.keyring ; mine\n[osd]\nkeyring = /osd\n",
        )
        .expect("parse");
        assert_eq!(
            c.mon_host(&csi()).expect("mon_host"),
            "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]"
        );
        assert_eq!(c.get(&csi(), "mon-host"), c.get(&csi(), "mon_host"));
        assert_eq!(
            c.keyring_paths(&csi()),
            vec![PathBuf::from("/k/csi.keyring")]
        );
        let other = ClientId::new("admin").expect("id");
        assert_eq!(c.keyring_paths(&other), vec![PathBuf::from("/k/client")]);
        assert_eq!(c.get(&csi(), "fsid"), Some("1234"));
    }

    #[test]
    fn conf_default_keyring_list_and_missing_mon_host() {
        let c = CephConf::parse("[global]\nfsid = x\n").expect("parse");
        assert_eq!(
            c.mon_host(&csi()).expect_err("none").kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            c.keyring_paths(&csi()),
            vec![
                PathBuf::from("/etc/ceph/ceph.client.csi.keyring"),
                PathBuf::from("/etc/ceph/ceph.keyring"),
                PathBuf::from("/etc/ceph/keyring"),
            ]
        );
        assert!(CephConf::parse("[global\n").is_err());
        assert!(CephConf::parse("[global]\njust words\n").is_err());
    }

    #[test]
    fn mon_host_forms_give_msgr1_addresses() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let cases: &[(&str, &[&str])] = &[
            ("[v2:127.0.0.1:3300,v1:127.0.0.1:6789]", &["127.0.0.1:6789"]),
            (
                "[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0]",
                &["10.0.0.1:6789", "10.0.0.2:6789"],
            ),
            (
                "10.0.0.1:6789, 10.0.0.2:6790",
                &["10.0.0.1:6789", "10.0.0.2:6790"],
            ),
            ("10.0.0.1 10.0.0.2", &["10.0.0.1:6789", "10.0.0.2:6789"]),
            ("10.0.0.1:3300,10.0.0.2", &["10.0.0.2:6789"]),
            ("v1:127.0.0.1:16789", &["127.0.0.1:16789"]),
            ("[v2:[::1]:3300,v1:[::1]:6789]", &["[::1]:6789"]),
            ("[::1]:6790", &["[::1]:6790"]),
            ("localhost:6789", &["127.0.0.1:6789"]),
        ];
        for (input, want) in cases {
            let got = msgr1_mon_addrs(input).expect(input);
            let want: Vec<SocketAddr> = want.iter().map(|s| sa(s)).collect();
            // localhost may resolve to ::1 first on some hosts: compare ports for that case
            if input.starts_with("localhost") {
                assert_eq!(got.first().map(SocketAddr::port), Some(6789));
                continue;
            }
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(
            kernel_mon_list(&msgr1_mon_addrs("[v1:10.0.0.1:6789],[::1]:6789").expect("ok")),
            "10.0.0.1:6789,[::1]:6789"
        );
        for bad in [
            "",
            "[v2:127.0.0.1:3300]",
            "10.0.0.1:3300",
            "10.0.0.1:notaport",
            "[v1:]",
        ] {
            assert_eq!(
                msgr1_mon_addrs(bad).expect_err(bad).kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn keyring_key_is_found_and_never_printed() {
        let text = format!(
            "[client.admin]\n\tkey = AQDifferentKeyxxxxxxxxxxxxxxxxxxxxxxxx==\n\
             [client.csi]\n\tkey = {KEY}\n\tcaps mon = \"profile rbd\"\n"
        );
        let k = CephxKey::from_keyring(&text, &csi()).expect("key");
        assert_eq!(k.base64(), KEY);
        assert_eq!(k.decoded().expect("b64").len(), CEPHX_KEY_ENCODED_LEN);
        assert_eq!(format!("{k:?}"), "CephxKey(<redacted>)");
        let missing = CephxKey::from_keyring(&text, &ClientId::new("other").expect("id"))
            .expect_err("no section");
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let bad =
            CephxKey::from_keyring("[client.csi]\nkey = not*base64!\n", &csi()).expect_err("bad");
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        assert!(!format!("{bad} {bad:?}").contains("not*base64"), "{bad:?}");
        let short = CephxKey::from_base64("AQID").expect_err("short");
        assert!(!format!("{short} {short:?}").contains("AQID"));
    }

    #[test]
    fn keyring_file_errors_name_the_file_not_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("k");
        std::fs::write(&p, format!("[client.other]\nkey = {KEY}\n")).expect("write");
        let e = CephxKey::from_keyring_file(&p, &csi()).expect_err("no csi");
        let s = format!("{e} {e:?}");
        assert!(s.contains(&p.display().to_string()), "{s}");
        assert!(!s.contains(KEY), "{s}");
        let e = CephxKey::from_keyring_file(&dir.path().join("none"), &csi()).expect_err("none");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
