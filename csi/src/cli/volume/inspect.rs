//! `volume inspect DEVICE [--json]`: the LUKS2 header (UUID, header copies, data segments with
//! cipher, sector size and data offset, keyslots with their KDF, digests, tokens) and the
//! wrapped-key record kept in the driver's token (KMS type, endpoint, key id, namespace, key
//! version, wrap mode, volume id, creation time).
//!
//! Never shown: any key, and nothing derived from one either: no wrapped-key ciphertext (nor
//! its IV or tag), no keyslot or digest salts, no digest values. Tokens of other types show only
//! their type and keyslots (their fields may hold sealed keys). Reads the device, writes
//! nothing, needs no KMS.

use std::fs::File;
use std::path::PathBuf;

use crate::crypt::TOKEN_TYPE;
use crate::{Error, Result};
use clap::Args;
use kms::WrappedKey;
use luks2::header::{CopyStatus, Header, ReadReport};
use luks2::io::Device;
use luks2::metadata::{DigestKind, Kdf, Keyslot, Priority, SegmentKind, SegmentSize, Token};
use serde::Serialize;

/// `volume inspect` flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The device (or image file) of the volume.
    #[arg(value_name = "DEVICE")]
    device: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    device: String,
    device_size: u64,
    version: u16,
    uuid: String,
    label: String,
    subsystem: String,
    seqid: u64,
    metadata_size: u64,
    keyslots_size: u64,
    primary_copy: String,
    secondary_copy: String,
    /// Segment 0's, for the common questions.
    cipher: Option<String>,
    sector_size: Option<u32>,
    data_offset: Option<u64>,
    segments: Vec<SegmentOut>,
    keyslots: Vec<KeyslotOut>,
    digests: Vec<DigestOut>,
    tokens: Vec<TokenOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SegmentOut {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    offset: u64,
    /// `null`: to the end of the device ("dynamic").
    size: Option<u64>,
    cipher: Option<String>,
    sector_size: Option<u32>,
    iv_tweak: Option<u64>,
    flags: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyslotOut {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    key_size_bits: Option<u64>,
    priority: Option<&'static str>,
    kdf: Option<KdfOut>,
    area_cipher: Option<String>,
    area_offset: u64,
    area_size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KdfOut {
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iterations: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DigestOut {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    hash: Option<String>,
    iterations: Option<i64>,
    keyslots: Vec<u32>,
    segments: Vec<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenOut {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    keyslots: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<RecordOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_error: Option<String>,
}

/// The record without its ciphertext, IV and tag.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordOut {
    kms_type: String,
    endpoint: String,
    key_id: String,
    namespace: Option<String>,
    key_version: Option<u64>,
    mode: String,
    volume_id: String,
    created_at: String,
}

fn copy_status(s: &CopyStatus) -> String {
    match s {
        CopyStatus::Valid => "valid".to_owned(),
        CopyStatus::Stale { seqid } => format!("stale (seqid {seqid})"),
        CopyStatus::Invalid(e) => format!("invalid: {e}"),
    }
}

fn priority(p: Option<Priority>) -> &'static str {
    match p {
        Some(Priority::Ignore) => "ignore",
        Some(Priority::Prefer) => "prefer",
        Some(Priority::Normal) | None => "normal",
    }
}

fn record_out(rec: &WrappedKey) -> RecordOut {
    let mode = serde_json::to_value(rec.mode())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    RecordOut {
        kms_type: rec.kms_type().as_str().to_owned(),
        endpoint: rec.endpoint().to_owned(),
        key_id: rec.key_id().to_owned(),
        namespace: rec.namespace().map(str::to_owned),
        key_version: rec.key_version(),
        mode,
        volume_id: rec.volume_id().as_str().to_owned(),
        created_at: rec.created_at().to_owned(),
    }
}

fn token_out(id: u32, tok: &Token) -> TokenOut {
    let mut out = TokenOut {
        id,
        kind: tok.type_name.clone(),
        keyslots: tok.keyslots.iter().map(|k| k.get()).collect(),
        record: None,
        record_error: None,
    };
    if tok.type_name == TOKEN_TYPE {
        match tok.fields.get("record") {
            None => out.record_error = Some("the token has no record".to_owned()),
            Some(v) => match WrappedKey::from_json(v.to_string().as_bytes()) {
                Ok(rec) => out.record = Some(record_out(&rec)),
                Err(e) => out.record_error = Some(e.display_chain()),
            },
        }
    }
    out
}

fn report(device: &str, device_size: u64, h: &Header, r: &ReadReport) -> Report {
    let md = &h.metadata;
    let segments: Vec<SegmentOut> = md
        .segments
        .iter()
        .map(|(id, s)| {
            let (cipher, sector_size, iv_tweak, kind) = match &s.kind {
                SegmentKind::Crypt {
                    iv_tweak,
                    encryption,
                    sector_size,
                    ..
                } => (
                    Some(encryption.clone()),
                    Some(*sector_size),
                    Some(*iv_tweak),
                    "crypt".to_owned(),
                ),
                SegmentKind::Other { type_name, .. } => (None, None, None, type_name.clone()),
            };
            SegmentOut {
                id: id.get(),
                kind,
                offset: s.offset,
                size: match s.size {
                    SegmentSize::Dynamic => None,
                    SegmentSize::Bytes(b) => Some(b),
                },
                cipher,
                sector_size,
                iv_tweak,
                flags: s.flags.clone().unwrap_or_default(),
            }
        })
        .collect();
    let keyslots = md
        .keyslots
        .iter()
        .map(|(id, k)| {
            let (area_offset, area_size) = k.area_range();
            match k {
                Keyslot::Luks2(k) => KeyslotOut {
                    id: id.get(),
                    kind: "luks2".to_owned(),
                    key_size_bits: Some(u64::from(k.key_size) * 8),
                    priority: Some(priority(k.priority)),
                    kdf: Some(match &k.kdf {
                        Kdf::Pbkdf2 {
                            hash, iterations, ..
                        } => KdfOut {
                            kind: "pbkdf2".to_owned(),
                            hash: Some(hash.clone()),
                            iterations: Some(*iterations),
                            time: None,
                            memory_kib: None,
                            cpus: None,
                        },
                        Kdf::Argon2 {
                            variant,
                            time,
                            memory,
                            cpus,
                            ..
                        } => KdfOut {
                            kind: variant.name().to_owned(),
                            hash: None,
                            iterations: None,
                            time: Some(*time),
                            memory_kib: Some(*memory),
                            cpus: Some(*cpus),
                        },
                        Kdf::Other(m) => KdfOut {
                            kind: m
                                .get("type")
                                .and_then(|t| t.as_str())
                                .unwrap_or("unknown")
                                .to_owned(),
                            hash: None,
                            iterations: None,
                            time: None,
                            memory_kib: None,
                            cpus: None,
                        },
                    }),
                    area_cipher: Some(k.area.encryption.clone()),
                    area_offset,
                    area_size,
                },
                Keyslot::Other(o) => KeyslotOut {
                    id: id.get(),
                    kind: o.type_name.clone(),
                    key_size_bits: None,
                    priority: None,
                    kdf: None,
                    area_cipher: None,
                    area_offset,
                    area_size,
                },
            }
        })
        .collect();
    let digests = md
        .digests
        .iter()
        .map(|(id, d)| {
            let (kind, hash, iterations) = match &d.kind {
                DigestKind::Pbkdf2(p) => (
                    "pbkdf2".to_owned(),
                    Some(p.hash.clone()),
                    Some(p.iterations),
                ),
                DigestKind::Other { type_name, .. } => (type_name.clone(), None, None),
            };
            DigestOut {
                id: id.get(),
                kind,
                hash,
                iterations,
                keyslots: d.keyslots.iter().map(|k| k.get()).collect(),
                segments: d.segments.iter().map(|s| s.get()).collect(),
            }
        })
        .collect();
    let tokens = md
        .tokens
        .iter()
        .map(|(id, t)| token_out(id.get(), t))
        .collect();
    let first = segments.first();
    Report {
        device: device.to_owned(),
        device_size,
        version: 2,
        uuid: h.uuid().into_owned(),
        label: h.label().into_owned(),
        subsystem: h.subsystem().into_owned(),
        seqid: h.seqid(),
        metadata_size: h.hdr_size(),
        keyslots_size: md.config.keyslots_size,
        primary_copy: copy_status(&r.primary),
        secondary_copy: copy_status(&r.secondary),
        cipher: first.and_then(|s| s.cipher.clone()),
        sector_size: first.and_then(|s| s.sector_size),
        data_offset: first.map(|s| s.offset),
        segments,
        keyslots,
        digests,
        tokens,
    }
}

fn ids(v: &[u32]) -> String {
    let s: Vec<String> = v.iter().map(u32::to_string).collect();
    format!("[{}]", s.join(", "))
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

fn text(r: &Report) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!(
        "LUKS2 header of {} ({} bytes)",
        r.device, r.device_size
    ));
    line(format!("  UUID:           {}", r.uuid));
    line(format!("  Label:          {}", or_none(&r.label)));
    line(format!("  Subsystem:      {}", or_none(&r.subsystem)));
    line(format!(
        "  Header:         version {}, seqid {}, {} bytes per copy, keyslots area {} bytes",
        r.version, r.seqid, r.metadata_size, r.keyslots_size
    ));
    line(format!("  Primary copy:   {}", r.primary_copy));
    line(format!("  Secondary copy: {}", r.secondary_copy));
    line("Data segments:".to_owned());
    for s in &r.segments {
        let size = s.size.map_or_else(
            || "to the end of the device".to_owned(),
            |b| format!("{b} bytes"),
        );
        let mut l = format!("  {}: {}, offset {} bytes, {size}", s.id, s.kind, s.offset);
        if let (Some(c), Some(ss), Some(iv)) = (&s.cipher, s.sector_size, s.iv_tweak) {
            l.push_str(&format!(", cipher {c}, sector size {ss}, IV tweak {iv}"));
        }
        if !s.flags.is_empty() {
            l.push_str(&format!(", flags {}", s.flags.join(" ")));
        }
        line(l);
    }
    line("Keyslots:".to_owned());
    for k in &r.keyslots {
        let mut l = format!("  {}: {}", k.id, k.kind);
        if let Some(bits) = k.key_size_bits {
            l.push_str(&format!(", {bits}-bit key"));
        }
        if let Some(kdf) = &k.kdf {
            l.push_str(&format!(", KDF {}", kdf.kind));
            if let (Some(h), Some(i)) = (&kdf.hash, kdf.iterations) {
                l.push_str(&format!(" {h} {i} iterations"));
            }
            if let (Some(t), Some(m), Some(c)) = (kdf.time, kdf.memory_kib, kdf.cpus) {
                l.push_str(&format!(" time {t} memory {m} KiB threads {c}"));
            }
        }
        if let Some(p) = k.priority {
            l.push_str(&format!(", priority {p}"));
        }
        if let Some(c) = &k.area_cipher {
            l.push_str(&format!(", area {c}"));
        }
        l.push_str(&format!(" at {} ({} bytes)", k.area_offset, k.area_size));
        line(l);
    }
    line("Digests:".to_owned());
    for d in &r.digests {
        let mut l = format!("  {}: {}", d.id, d.kind);
        if let (Some(h), Some(i)) = (&d.hash, d.iterations) {
            l.push_str(&format!(" {h} {i} iterations"));
        }
        l.push_str(&format!(
            ", keyslots {}, segments {}",
            ids(&d.keyslots),
            ids(&d.segments)
        ));
        line(l);
    }
    line("Tokens:".to_owned());
    if r.tokens.is_empty() {
        line("  (none)".to_owned());
    }
    for t in &r.tokens {
        line(format!(
            "  {}: {}, keyslots {}",
            t.id,
            t.kind,
            ids(&t.keyslots)
        ));
        if let Some(rec) = &t.record {
            line("    Wrapped-key record:".to_owned());
            line(format!("      KMS type:    {}", rec.kms_type));
            line(format!("      Endpoint:    {}", rec.endpoint));
            line(format!("      Key ID:      {}", rec.key_id));
            line(format!(
                "      Namespace:   {}",
                rec.namespace.as_deref().unwrap_or("(none)")
            ));
            line(format!(
                "      Key version: {}",
                rec.key_version
                    .map_or_else(|| "(none)".to_owned(), |v| v.to_string())
            ));
            line(format!("      Mode:        {}", rec.mode));
            line(format!("      Volume ID:   {}", rec.volume_id));
            line(format!("      Created:     {}", rec.created_at));
        }
        if let Some(e) = &t.record_error {
            line(format!("    Wrapped-key record: invalid: {e}"));
        }
    }
    line(
        "(No key material is shown: no key, no wrapped-key ciphertext, no salts or digests.)"
            .to_owned(),
    );
    o
}

/// Runs `volume inspect`.
pub fn run(a: InspectArgs) -> Result<()> {
    let shown = a.device.display().to_string();
    let f = File::open(&a.device).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!("{shown} does not exist")),
        _ => Error::io(format!("opening {shown}"), e),
    })?;
    let size = f
        .size()
        .map_err(|e| Error::io(format!("reading the size of {shown}"), e))?;
    let (header, read) = match luks2::header::read_with_report(&f) {
        Ok(v) => v,
        Err(luks2::Error::NotLuks2) => {
            return Err(Error::not_found(format!(
                "{shown} has no LUKS2 header (no LUKS magic in either copy)"
            )));
        }
        Err(e) => {
            return Err(Error::precondition(format!(
                "{shown} has no usable LUKS2 header: {e}"
            )));
        }
    };
    let r = report(&shown, size, &header, &read);
    let out = if a.json {
        let mut s = serde_json::to_string_pretty(&r)
            .map_err(|e| Error::internal(format!("serializing the report: {e}")))?;
        s.push('\n');
        s
    } else {
        text(&r)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}
