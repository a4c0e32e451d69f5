//! Unit tests of reading and writing both header copies on in-memory devices.

use super::*;
use crate::io::{FaultyDevice, MemDevice};
use crate::metadata::{
    B64, Digest, DigestId, DigestKind, Pbkdf2Digest, Segment, SegmentId, SegmentKind, SegmentSize,
};

const MIB: u64 = 1024 * 1024;

fn metadata(hdr_size: u64) -> Metadata {
    let keyslots_size = 4 * MIB - 2 * hdr_size;
    let seg = Segment {
        offset: 4 * MIB,
        size: SegmentSize::Dynamic,
        flags: None,
        kind: SegmentKind::Crypt {
            iv_tweak: 0,
            encryption: "aes-xts-plain64".into(),
            sector_size: 512,
            integrity: None,
        },
    };
    let mut m = Metadata::new_empty(hdr_size, keyslots_size, seg).unwrap();
    m.digests.insert(
        DigestId::new(0),
        Digest {
            keyslots: vec![],
            segments: vec![SegmentId::new(0)],
            kind: DigestKind::Pbkdf2(Pbkdf2Digest {
                hash: "sha256".into(),
                iterations: 1000,
                salt: B64::encode(&[1; 32]),
                digest: B64::encode(&[2; 32]),
            }),
        },
    );
    m
}

fn params() -> NewHeaderParams {
    NewHeaderParams {
        uuid: Some("0F3C3B0E-8D3F-4F0E-9A55-2C4E1D9B7A11".into()),
        label: "lbl".into(),
        subsystem: "sub".into(),
    }
}

fn formatted(hdr_size: u64) -> (MemDevice, Header) {
    let mut dev = MemDevice::new(usize::try_from(5 * MIB).unwrap());
    let mut h = Header::new(&params(), metadata(hdr_size)).unwrap();
    write_new(&mut dev, &mut h).unwrap();
    (dev, h)
}

#[test]
fn write_then_read_every_metadata_size() {
    for hdr_size in HDR_SIZES.into_iter().take(7) {
        let (dev, h) = formatted(hdr_size);
        assert_eq!(h.seqid(), 1);
        let (back, report) = read_with_report(&dev).unwrap();
        assert_eq!(back, h);
        assert!(!report.needs_repair());
        assert_eq!(back.uuid(), "0f3c3b0e-8d3f-4f0e-9a55-2c4e1d9b7a11");
        assert_eq!((&*back.label(), &*back.subsystem()), ("lbl", "sub"));
        let bytes = dev.as_slice();
        assert_eq!(&bytes[0..6], b"LUKS\xba\xbe");
        let off = usize::try_from(hdr_size).unwrap();
        assert_eq!(&bytes[off..off + 6], b"SKUL\xba\xbe");
        // Salts differ between the copies.
        assert_ne!(&bytes[104..168], &bytes[off + 104..off + 168]);
    }
}

#[test]
fn update_bumps_seqid_and_detects_concurrent_writers() {
    let (mut dev, mut h) = formatted(16384);
    let mut other = read(&dev).unwrap();
    h.set_label("new").unwrap();
    write(&mut dev, &mut h).unwrap();
    assert_eq!(h.seqid(), 2);
    assert_eq!(read(&dev).unwrap().label(), "new");
    // `other` was read before the update: its write must be refused.
    other.set_label("lost update").unwrap();
    let err = write(&mut dev, &mut other).unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    assert_eq!(read(&dev).unwrap().label(), "new");
}

#[test]
fn locked_device_is_busy() {
    let (mut dev, mut h) = formatted(16384);
    crate::io::lock_exclusive(&dev, std::time::Duration::ZERO).unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(write(&mut dev, &mut h), Err(Error::Busy(_))));
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn corrupt_primary_falls_back_to_secondary_and_repair_fixes_it() {
    for hdr_size in [16384, 65536, 4 * MIB / 4] {
        let (mut dev, h) = formatted(hdr_size);
        dev.as_mut_slice()[5000] ^= 0x40; // inside the primary JSON area
        let (back, report) = read_with_report(&dev).unwrap();
        assert_eq!(back.metadata, h.metadata);
        assert!(matches!(
            report.primary,
            CopyStatus::Invalid(Error::Checksum { .. })
        ));
        assert!(report.secondary.is_valid());
        assert_eq!(report.secondary_offset, Some(hdr_size));
        assert_eq!(
            repair(&mut dev).unwrap(),
            RepairOutcome::Rewrote(Copy::Primary)
        );
        let (_, report) = read_with_report(&dev).unwrap();
        assert!(!report.needs_repair());
        assert_eq!(repair(&mut dev).unwrap(), RepairOutcome::NothingToDo);
    }
}

#[test]
fn wiped_primary_magic_scans_for_secondary() {
    let (mut dev, h) = formatted(32768);
    dev.as_mut_slice()[..4096].fill(0);
    let (back, report) = read_with_report(&dev).unwrap();
    assert_eq!(back.metadata, h.metadata);
    assert_eq!(report.secondary_offset, Some(32768));
    assert!(matches!(
        report.primary,
        CopyStatus::Invalid(Error::NotLuks2)
    ));
}

#[test]
fn both_copies_bad_is_an_error() {
    let (mut dev, _) = formatted(16384);
    dev.as_mut_slice()[5000] ^= 1;
    dev.as_mut_slice()[16384 + 5000] ^= 1;
    assert!(read(&dev).is_err());
    assert!(matches!(
        read(&MemDevice::new(8 * 1024 * 1024)),
        Err(Error::NotLuks2)
    ));
    assert!(read(&MemDevice::new(100)).is_err());
}

#[test]
fn higher_seqid_wins_and_stale_copy_is_reported() {
    let (mut dev, mut h) = formatted(16384);
    let old_secondary = dev.as_slice()[16384..32768].to_vec();
    h.set_label("second").unwrap();
    write(&mut dev, &mut h).unwrap();
    dev.as_mut_slice()[16384..32768].copy_from_slice(&old_secondary);
    let (back, report) = read_with_report(&dev).unwrap();
    assert_eq!(back.label(), "second");
    assert!(matches!(report.secondary, CopyStatus::Stale { seqid: 1 }));
    // And the other way round: an old primary with a newer secondary.
    let (mut dev, mut h) = formatted(16384);
    let old_primary = dev.as_slice()[..16384].to_vec();
    h.set_label("second").unwrap();
    write(&mut dev, &mut h).unwrap();
    dev.as_mut_slice()[..16384].copy_from_slice(&old_primary);
    let (back, report) = read_with_report(&dev).unwrap();
    assert_eq!(back.label(), "second");
    assert_eq!(back.seqid(), 2);
    assert!(matches!(report.primary, CopyStatus::Stale { seqid: 1 }));
    assert_eq!(
        repair(&mut dev).unwrap(),
        RepairOutcome::Rewrote(Copy::Primary)
    );
    assert_eq!(read(&dev).unwrap().seqid(), 2);
}

#[test]
fn device_too_small_for_keyslots_area_is_rejected() {
    let (dev, _) = formatted(16384);
    let short = MemDevice::from_vec(dev.as_slice()[..usize::try_from(3 * MIB).unwrap()].to_vec());
    assert!(read(&short).is_err());
}

#[test]
fn read_only_requirements_refuse_writes() {
    let (mut dev, mut h) = formatted(16384);
    h.metadata.config.requirements = Some(crate::metadata::Requirements {
        mandatory: Some(vec!["future".into()]),
        ..Default::default()
    });
    assert!(matches!(
        write(&mut dev, &mut h),
        Err(Error::ReadOnlyRequirements(_))
    ));
}

#[test]
fn invalid_metadata_is_never_written() {
    let (mut dev, mut h) = formatted(16384);
    h.metadata.digests.clear();
    assert!(matches!(
        write(&mut dev, &mut h),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(read(&dev).unwrap().seqid(), 1);
}

/// A failure injected at every write/sync step of an update (clean failures and torn writes)
/// leaves a device that reads back as the old or the new header, never neither.
#[test]
fn crash_at_every_step_leaves_old_or_new() {
    let (dev, h) = formatted(16384);
    let mut new = h.clone();
    new.set_label("after").unwrap();
    let mut counting = FaultyDevice::counting(dev.clone());
    write(&mut counting, &mut new.clone()).unwrap();
    let steps = counting.ops().len();
    assert_eq!(steps, 8, "{:?}", counting.ops());
    let mut outcomes = std::collections::BTreeSet::new();
    for n in 0..steps {
        for torn in [false, true] {
            let mut faulty = if torn {
                FaultyDevice::torn_at(dev.clone(), n)
            } else {
                FaultyDevice::failing_at(dev.clone(), n)
            };
            let mut attempt = new.clone();
            assert!(write(&mut faulty, &mut attempt).is_err());
            let mut after = faulty.into_inner();
            let back =
                read(&after).unwrap_or_else(|e| panic!("step {n} torn {torn}: unreadable: {e}"));
            assert!(back.label() == "lbl" || back.label() == "after", "step {n}");
            outcomes.insert(back.label().into_owned());
            // The survivor can always be repaired and updated again.
            repair(&mut after).unwrap();
            let mut again = read(&after).unwrap();
            again.set_label("third").unwrap();
            write(&mut after, &mut again).unwrap();
            assert_eq!(read(&after).unwrap().label(), "third");
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both old and new states must occur: {outcomes:?}"
    );
}

#[test]
fn read_bytes_of_a_backup_image() {
    let (dev, h) = formatted(16384);
    let len = usize::try_from(h.header_area_size()).unwrap();
    let back = read_bytes(&dev.as_slice()[..len]).unwrap();
    assert_eq!(back, h);
    assert!(read_bytes(&dev.as_slice()[..len - 1]).is_err());
}

#[test]
fn new_header_checks_its_inputs() {
    let mut p = params();
    p.uuid = Some("not-a-uuid".into());
    assert!(Header::new(&p, metadata(16384)).is_err());
    let mut p = params();
    p.label = "x".repeat(48);
    assert!(Header::new(&p, metadata(16384)).is_err());
    let mut p = params();
    p.uuid = None;
    let a = Header::new(&p, metadata(16384)).unwrap();
    let b = Header::new(&p, metadata(16384)).unwrap();
    assert_ne!(a.uuid(), b.uuid());
    assert_eq!(a.uuid().len(), 36);
}

#[test]
fn primary_version_decides_the_format_before_the_secondary_is_tried() {
    for (version, readable) in [(0u16, true), (1, false), (3, false), (0x3000, false)] {
        let (mut dev, h) = formatted(16384);
        dev.as_mut_slice()[6..8].copy_from_slice(&version.to_be_bytes());
        let r = read(&dev);
        assert_eq!(r.is_ok(), readable, "version {version}: {r:?}");
        if readable {
            assert_eq!(r.unwrap().metadata, h.metadata);
        }
    }
}

/// Found by the `header_area` fuzz target: a UUID field holding bytes that are not UTF-8 reads
/// fine (as in cryptsetup), but its lossy text no longer fits the field, and repair and updates
/// failed with "uuid must be at most 39 bytes". The stored bytes are now written back as read.
#[test]
fn a_uuid_that_is_not_utf8_survives_repair_and_rewrite() {
    let (mut dev, mut h) = formatted(16384);
    let mut raw = [0u8; binary::UUID_LEN];
    raw[..36].copy_from_slice(b"12ca6554-7332-4bdf-8804-fdd2f31\xff\xff\xff\xffc");
    h.uuid = raw;
    // A new UUID is a new header (an ordinary update refuses a UUID change on disk).
    write_new(&mut dev, &mut h).unwrap();
    let back = read(&dev).unwrap();
    assert_eq!(back.uuid, raw);
    assert!(back.uuid().len() > 39, "{}", back.uuid());
    // Break the secondary copy; repair rewrites it from the primary, bytes unchanged.
    let hdr = usize::try_from(back.hdr_size()).unwrap();
    dev.as_mut_slice()[hdr + 5000] ^= 1;
    assert_eq!(
        repair(&mut dev).unwrap(),
        RepairOutcome::Rewrote(Copy::Secondary)
    );
    let (after, report) = read_with_report(&dev).unwrap();
    assert!(!report.needs_repair());
    assert_eq!(after, back);
    // An ordinary update writes the same UUID bytes back.
    let mut upd = after.clone();
    upd.set_label("new").unwrap();
    write(&mut dev, &mut upd).unwrap();
    let last = read(&dev).unwrap();
    assert_eq!((last.uuid, &*last.label()), (raw, "new"));
}

/// A header copy that needs recovery on a device that also carries another
/// signature (an ext superblock written over the primary's padding) is refused for reading, as
/// cryptsetup refuses every operation; an explicit repair proceeds.
#[test]
fn ambiguous_signatures_refuse_reading_but_not_repair() {
    let (mut dev, h) = formatted(16384);
    // ext2/3/4 magic in the primary binary header's padding: its checksum breaks.
    dev.as_mut_slice()[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
    let err = read(&dev).unwrap_err();
    assert!(matches!(err, Error::AmbiguousSignatures { .. }), "{err}");
    assert_eq!(err.kind().exit_code(), 1);
    assert_eq!(
        repair(&mut dev).unwrap(),
        RepairOutcome::Rewrote(Copy::Primary)
    );
    assert_eq!(read(&dev).unwrap().metadata, h.metadata);
}
