//! Crash safety of the header write path, judged by us and by cryptsetup: a failure injected at
//! every write/sync step (clean or torn) of a metadata update leaves an image that both
//! implementations read as the old or the new header, never neither.
#![allow(clippy::unwrap_used)]

use luks2::header;
use luks2::io::{FaultyDevice, MemDevice};
use testkit::cryptsetup::{Image, cryptsetup, run_ok};

fn label_of(dump: &str) -> String {
    dump.lines()
        .find_map(|l| l.strip_prefix("Label:"))
        .map(|v| v.trim().to_owned())
        .unwrap()
}

#[test]
fn crash_during_update_leaves_old_or_new_for_both_implementations() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(
        &cs,
        4 * 1024 * 1024,
        &[
            "--luks2-keyslots-size",
            "1048576",
            "--offset",
            "4096",
            "--label",
            "old",
        ],
    );
    let pristine = MemDevice::from_vec(img.bytes());
    let mut h = header::read(&pristine).unwrap();
    h.set_label("new").unwrap();
    h.metadata.config.flags = Some(vec!["allow-discards".into()]);

    let mut counting = FaultyDevice::counting(pristine.clone());
    header::write(&mut counting, &mut h.clone()).unwrap();
    let steps = counting.ops().len();
    assert!(
        steps >= 8,
        "two copies, each: header, JSON, sealed header, sync"
    );

    let mut seen = std::collections::BTreeSet::new();
    for n in 0..steps {
        for torn in [false, true] {
            let mut dev = if torn {
                FaultyDevice::torn_at(pristine.clone(), n)
            } else {
                FaultyDevice::failing_at(pristine.clone(), n)
            };
            assert!(header::write(&mut dev, &mut h.clone()).is_err());
            let after = dev.into_inner();
            let ours = header::read(&after)
                .unwrap_or_else(|e| panic!("step {n} torn={torn}: we cannot read it: {e}"))
                .label()
                .into_owned();
            assert!(ours == "old" || ours == "new", "step {n}: {ours}");
            let case = Image::sparse(0);
            std::fs::write(&case.path, after.as_slice()).unwrap();
            let theirs = label_of(&run_ok(&cs, &["luksDump", case.p()]));
            assert_eq!(
                theirs, ours,
                "step {n} torn={torn}: cryptsetup and we disagree"
            );
            run_ok(
                &cs,
                &["open", "--test-passphrase", "--key-file", img.k(), case.p()],
            );
            seen.insert(ours);
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "both outcomes occur over the steps: {seen:?}"
    );
}
