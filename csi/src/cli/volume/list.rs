//! `volume list`: one line per wrapped-key record, without keys.

use std::io::Write;

use clap::Args;

use crate::cli::args::StoreArgs;
use crate::error::{Error, Result};
use crate::keystore::{KeyStore, Stored};
use crate::volume_id::VolumeId;

/// Arguments of `volume list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// Opens the store and prints the table.
pub async fn run(args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    let store = args.store.open().await?;
    print(store.as_ref(), out).await
}

/// Prints every record of `store`: volume id, KMS type, endpoint, key id, key version (Transit),
/// state and creation time. The ciphertext is never printed. A record that cannot be read gets
/// an error line `<volume>: ERROR: <why>` after the table, and the command fails once all is
/// printed.
pub async fn print(store: &dyn KeyStore, out: &mut dyn Write) -> Result<()> {
    let entries = store.list().await.map_err(Error::from)?;
    let rows: Vec<[String; 7]> = entries
        .iter()
        .filter_map(|(v, s)| s.as_ref().ok().map(|s| row(v, s)))
        .collect();
    let header = [
        "VOLUME", "KMS", "ENDPOINT", "KEY", "VERSION", "STATE", "CREATED",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut text = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    let mut bad = 0;
    for (volume, e) in entries
        .iter()
        .filter_map(|(v, s)| s.as_ref().err().map(|e| (v, e)))
    {
        bad += 1;
        let why = e.display_chain().replace(['\n', '\r'], " ");
        text.push_str(&format!("{volume}: ERROR: {why}\n"));
    }
    text.push_str(&format!("{} encrypted volume(s)", rows.len()));
    if bad > 0 {
        text.push_str(&format!(", {bad} unreadable record(s)"));
    }
    text.push('\n');
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("writing to stdout", e))?;
    if bad > 0 {
        return Err(Error::precondition(format!(
            "{bad} wrapped-key record(s) could not be read (listed above)"
        )));
    }
    Ok(())
}

fn row(volume: &VolumeId, stored: &Stored) -> [String; 7] {
    let r = &stored.entry.record;
    [
        volume.to_string(),
        r.kms_type().to_string(),
        r.endpoint().to_owned(),
        match r.namespace() {
            Some(ns) => format!("{} (namespace {ns})", r.key_id()),
            None => r.key_id().to_owned(),
        },
        r.key_version()
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        stored.entry.state.as_str().to_owned(),
        r.created_at().to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::tests::sample_record;
    use crate::keystore::{DirStore, KeyEntry, VolumeState};

    #[tokio::test]
    async fn lists_every_record_without_the_ciphertext() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::open(tmp.path()).unwrap();
        for (i, state) in [(1, VolumeState::Formatted), (2, VolumeState::Pending)] {
            let v = VolumeId::parse(&format!("pvc-list-{i}")).unwrap();
            let entry = KeyEntry {
                record: sample_record(&v, i),
                state,
            };
            store.create(&v, &entry).await.unwrap();
        }
        let mut out = Vec::new();
        print(&store, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("VOLUME"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "pvc-list-1",
                "transit",
                "http://10.0.0.1:8200",
                "pvc-kek",
                "1",
                "formatted",
                "2026-11-29T04:00:00Z"
            ]
        );
        assert!(lines[2].contains("pending"));
        assert_eq!(lines[3], "2 encrypted volume(s)");
        assert!(!text.contains("vault:v"), "no ciphertext: {text}");
    }
}
