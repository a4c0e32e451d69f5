//! `luks2 dump`: the fields of `cryptsetup luksDump`, in its layout.

use std::fmt::Write as _;

use luks2::header::Header;
use luks2::metadata::{DigestKind, Kdf, Keyslot, Priority, SegmentKind, SegmentSize};

/// cryptsetup's `hexprint_base64`: 16 bytes a line, each byte followed by a space.
fn hex_lines(out: &mut String, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(16).enumerate() {
        if i > 0 {
            out.push_str("\n\t            ");
        }
        for b in chunk {
            let _ = write!(out, "{b:02x} ");
        }
    }
    out.push('\n');
}

fn b64(out: &mut String, label: &str, v: &luks2::metadata::B64) {
    out.push_str(label);
    match v.decode("dump") {
        Ok(bytes) => hex_lines(out, &bytes),
        Err(_) => {
            let _ = writeln!(out, "{}", v.as_str());
        }
    }
}

fn or_none<'a>(s: &'a str, none: &'a str) -> &'a str {
    if s.is_empty() { none } else { s }
}

/// The human-readable dump.
pub(crate) fn render(h: &Header) -> String {
    let md = &h.metadata;
    let mut o = String::new();
    o.push_str("LUKS header information\n");
    let _ = writeln!(o, "Version:       \t2");
    let _ = writeln!(o, "Epoch:         \t{}", h.seqid());
    let _ = writeln!(o, "Metadata area: \t{} [bytes]", h.hdr_size());
    let _ = writeln!(o, "Keyslots area: \t{} [bytes]", md.config.keyslots_size);
    let _ = writeln!(o, "UUID:          \t{}", h.uuid());
    let _ = writeln!(o, "Label:         \t{}", or_none(&h.label(), "(no label)"));
    let _ = writeln!(
        o,
        "Subsystem:     \t{}",
        or_none(&h.subsystem(), "(no subsystem)")
    );
    let flags = md
        .config
        .flags
        .as_ref()
        .map(|f| f.join(" "))
        .unwrap_or_default();
    let _ = writeln!(o, "Flags:       \t{}", or_none(&flags, "(no flags)"));
    if !md.requirements().is_empty() {
        // cryptsetup prints each requirement followed by a space.
        o.push_str("Requirements:\t");
        for r in md.requirements() {
            let _ = write!(o, "{r} ");
        }
        o.push('\n');
    }
    o.push_str("\nData segments:\n");
    for (id, s) in &md.segments {
        let type_name = match &s.kind {
            SegmentKind::Crypt { .. } => "crypt",
            SegmentKind::Other { type_name, .. } => type_name.as_str(),
        };
        let _ = writeln!(o, "  {id}: {type_name}");
        let _ = writeln!(o, "\toffset: {} [bytes]", s.offset);
        match s.size {
            SegmentSize::Dynamic => o.push_str("\tlength: (whole device)\n"),
            SegmentSize::Bytes(b) => {
                let _ = writeln!(o, "\tlength: {b} [bytes]");
            }
        }
        if let SegmentKind::Crypt {
            encryption,
            sector_size,
            iv_tweak,
            ..
        } = &s.kind
        {
            let _ = writeln!(o, "\tcipher: {encryption}");
            let _ = writeln!(o, "\tsector: {sector_size} [bytes]");
            if *iv_tweak != 0 {
                let _ = writeln!(o, "\tIV tweak: {iv_tweak}");
            }
        }
        if let Some(f) = &s.flags {
            let _ = writeln!(o, "\tflags : {}", f.join(" "));
        }
        o.push('\n');
    }
    o.push_str("Keyslots:\n");
    for (id, ks) in &md.keyslots {
        // cryptsetup marks a keyslot whose key encrypts no segment (no digest, or a digest
        // without segments).
        let bound = md
            .digest_of_keyslot(*id)
            .is_some_and(|(_, d)| !d.segments.is_empty());
        let unbound = if bound { "" } else { " (unbound)" };
        let _ = writeln!(o, "  {id}: {}{unbound}", ks.type_name());
        let Keyslot::Luks2(k) = ks else { continue };
        let _ = writeln!(o, "\tKey:        {} bits", u64::from(k.key_size) * 8);
        let prio = match k.effective_priority() {
            Priority::Ignore => "ignored",
            Priority::Normal => "normal",
            Priority::Prefer => "preferred",
        };
        let _ = writeln!(o, "\tPriority:   {prio}");
        let _ = writeln!(o, "\tCipher:     {}", k.area.encryption);
        let _ = writeln!(
            o,
            "\tCipher key: {} bits",
            k.area.key_size.saturating_mul(8)
        );
        match &k.kdf {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => {
                let _ = writeln!(o, "\tPBKDF:      pbkdf2");
                let _ = writeln!(o, "\tHash:       {hash}");
                let _ = writeln!(o, "\tIterations: {iterations}");
                b64(&mut o, "\tSalt:       ", salt);
            }
            Kdf::Argon2 {
                variant,
                time,
                memory,
                cpus,
                salt,
            } => {
                let _ = writeln!(o, "\tPBKDF:      {}", variant.name());
                let _ = writeln!(o, "\tTime cost:  {time}");
                let _ = writeln!(o, "\tMemory:     {memory}");
                let _ = writeln!(o, "\tThreads:    {cpus}");
                b64(&mut o, "\tSalt:       ", salt);
            }
            Kdf::Other(m) => {
                // Any type but pbkdf2 (the legacy `argon2`, say) is dumped as Argon2 is.
                let t = m.get("type").and_then(|v| v.as_str()).unwrap_or("?");
                let _ = writeln!(o, "\tPBKDF:      {t}");
                for (label, key) in [
                    ("Time cost:  ", "time"),
                    ("Memory:     ", "memory"),
                    ("Threads:    ", "cpus"),
                ] {
                    if let Some(v) = m.get(key) {
                        // A number as is, a string without its quotes.
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        let _ = writeln!(o, "\t{label}{text}");
                    }
                }
                if let Some(salt) = m.get("salt").and_then(|v| v.as_str()) {
                    b64(
                        &mut o,
                        "\tSalt:       ",
                        &luks2::metadata::B64::from_text(salt),
                    );
                }
            }
        }
        let _ = writeln!(o, "\tAF stripes: {}", k.af.stripes);
        let _ = writeln!(o, "\tAF hash:    {}", k.af.hash);
        let _ = writeln!(o, "\tArea offset:{} [bytes]", k.area.offset);
        let _ = writeln!(o, "\tArea length:{} [bytes]", k.area.size);
        if let Some((d, _)) = md.digest_of_keyslot(*id) {
            let _ = writeln!(o, "\tDigest ID:  {d}");
        }
    }
    o.push_str("Tokens:\n");
    for (id, t) in &md.tokens {
        let _ = writeln!(o, "  {id}: {}", t.type_name);
        if t.type_name == "luks2-keyring"
            && let Some(desc) = t.fields.get("key_description").and_then(|v| v.as_str())
        {
            let _ = writeln!(o, "\tKey description: {desc}");
        }
        for k in &t.keyslots {
            let _ = writeln!(o, "\tKeyslot:    {k}");
        }
    }
    o.push_str("Digests:\n");
    for (id, d) in &md.digests {
        match &d.kind {
            DigestKind::Pbkdf2(p) => {
                let _ = writeln!(o, "  {id}: pbkdf2");
                let _ = writeln!(o, "\tHash:       {}", p.hash);
                let _ = writeln!(o, "\tIterations: {}", p.iterations);
                b64(&mut o, "\tSalt:       ", &p.salt);
                b64(&mut o, "\tDigest:     ", &p.digest);
            }
            DigestKind::Other { type_name, .. } => {
                let _ = writeln!(o, "  {id}: {type_name}");
            }
        }
    }
    o
}
