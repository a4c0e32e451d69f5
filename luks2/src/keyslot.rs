//! Keyslot operations on a device: open (unlock), store a new keyslot, replace one, remove one.
//!
//! Ordering for crash safety: a new keyslot's area is written and synced before the metadata that
//! references it; a removed keyslot leaves the metadata before its area is wiped. So after a
//! crash at any point the header opens to the old or the new set of keyslots.
//!
//! Concurrency: the KDF runs outside the device lock; under the lock, before any keyslot area is
//! written, [`header::begin_update_locked`] checks that the on-disk header is still the one the
//! free area was chosen from (same UUID and `seqid`), so a concurrent writer's keyslot or a
//! concurrent re-format is never written over.

use zeroize::Zeroizing;

use crate::crypto::af;
use crate::crypto::calibrate::{self, PbkdfOptions};
use crate::crypto::cipher::{KEYSLOT_SECTOR_SIZE, KeyslotCipher};
use crate::crypto::digest::{self, DIGEST_SALT_LEN};
use crate::crypto::hash::HashAlgorithm;
use crate::crypto::kdf::{self as ckdf, KdfLimits};
use crate::error::{Error, Result};
use crate::header::{self, Header};
use crate::io::{Device, with_exclusive_lock};
use crate::metadata::{
    self, Af, B64, DigestId, DigestKind, Kdf, KdfParams, Keyslot, KeyslotId, Luks2Keyslot,
    Metadata, Priority, RawArea, SegmentId, SegmentKind,
};
use crate::secret::VolumeKey;

/// Salt length of a keyslot KDF (cryptsetup's `LUKS_SALTSIZE`).
pub const KEYSLOT_SALT_LEN: usize = 32;

/// Largest volume key we handle (cryptsetup's limit).
pub const MAX_KEY_SIZE: usize = 512;

/// The cipher and key size for keyslot areas when the segment cipher cannot be used.
pub const DEFAULT_KEYSLOT_CIPHER: KeyslotCipher = KeyslotCipher::AES_XTS_PLAIN64;
/// Key size (bytes) for [`DEFAULT_KEYSLOT_CIPHER`].
pub const DEFAULT_KEYSLOT_KEY_SIZE: usize = 64;

fn random(buf: &mut [u8], what: &'static str) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::io(what, std::io::Error::other(e)))
}

fn not_active(id: KeyslotId) -> Error {
    Error::Slot(format!("keyslot {id} is not active"))
}

/// Keyslot `id`, or the "not active" error.
fn active(md: &Metadata, id: KeyslotId) -> Result<&Keyslot> {
    md.keyslots.get(&id).ok_or_else(|| not_active(id))
}

/// The typed KDF and salt of a stored keyslot, with costs bounded as cryptsetup bounds them and
/// then by the caller's `limits`.
fn keyslot_kdf(ks: &Luks2Keyslot, limits: &KdfLimits) -> Result<(ckdf::Kdf, Vec<u8>)> {
    let params = ks.kdf_params()?;
    let (kdf, salt) = match params {
        KdfParams::Pbkdf2 {
            hash,
            iterations,
            salt,
        } => (
            ckdf::Kdf::Pbkdf2 {
                hash: HashAlgorithm::from_name(&hash)?,
                iterations,
            },
            salt,
        ),
        KdfParams::Argon2 {
            variant,
            time,
            memory_kib,
            lanes,
            salt,
        } => (
            ckdf::Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                lanes,
            },
            salt,
        ),
    };
    if salt.len() != KEYSLOT_SALT_LEN {
        return Err(Error::header(
            "keyslots.kdf.salt",
            format!("{} bytes, expected 32", salt.len()),
        ));
    }
    kdf.check(limits)?;
    Ok((kdf, salt))
}

fn stored_kdf(kdf: &ckdf::Kdf, salt: &[u8]) -> Kdf {
    match *kdf {
        ckdf::Kdf::Pbkdf2 { hash, iterations } => Kdf::Pbkdf2 {
            hash: hash.name().to_owned(),
            iterations: i64::from(iterations),
            salt: B64::encode(salt),
        },
        ckdf::Kdf::Argon2 {
            variant,
            time,
            memory_kib,
            lanes,
        } => Kdf::Argon2 {
            variant,
            time: i64::from(time),
            memory: i64::from(memory_kib),
            cpus: i64::from(lanes),
            salt: B64::encode(salt),
        },
    }
}

/// Bytes of the keyslot area that hold the AF-split key: `round_up(key_size * stripes, 512)`.
fn material_len(key_size: usize, stripes: u32) -> Result<usize> {
    let n = af::split_len(key_size, stripes)?;
    n.checked_add(KEYSLOT_SECTOR_SIZE - 1)
        .map(|v| v / KEYSLOT_SECTOR_SIZE * KEYSLOT_SECTOR_SIZE)
        .ok_or_else(|| Error::InvalidArgument("keyslot material size overflows".into()))
}

/// Verifies `vk` against digest `id` (constant time). `Ok(false)` for a wrong key.
pub fn verify_digest(md: &Metadata, id: DigestId, vk: &[u8]) -> Result<bool> {
    verify_digest_with_limits(md, id, vk, &KdfLimits::UNLOCK)
}

/// The digest's parameters, its iteration count checked against `limits`.
fn digest_params(
    md: &Metadata,
    id: DigestId,
    limits: &KdfLimits,
) -> Result<(HashAlgorithm, u32, Vec<u8>, Vec<u8>)> {
    let d = md
        .digests
        .get(&id)
        .ok_or_else(|| Error::Slot(format!("digest {id} does not exist")))?;
    let DigestKind::Pbkdf2(p) = &d.kind else {
        return Err(Error::Unsupported(format!(
            "digest {id} is not of type pbkdf2"
        )));
    };
    let hash = HashAlgorithm::from_name(&p.hash)?;
    let iterations = u32::try_from(p.iterations)
        .ok()
        .filter(|&i| i >= 1)
        .ok_or_else(|| {
            Error::header(
                "digests.iterations",
                format!("{} out of range", p.iterations),
            )
        })?;
    limits.check_digest_iterations(iterations)?;
    let salt = p.salt.decode("digests.salt")?;
    let expected = p.digest.decode("digests.digest")?;
    Ok((hash, iterations, salt, expected))
}

/// [`verify_digest`] with the digest's iteration count bounded by `limits`.
pub fn verify_digest_with_limits(
    md: &Metadata,
    id: DigestId,
    vk: &[u8],
    limits: &KdfLimits,
) -> Result<bool> {
    let (hash, iterations, salt, expected) = digest_params(md, id, limits)?;
    digest::verify_digest(hash, iterations, &salt, &expected, vk)
}

/// Opens keyslot `id` with `passphrase`: KDF, area decryption, AF merge, digest check.
///
/// Cheap checks (keyslot type, cipher, hashes, digest, sizes, KDF cost bounds) all happen before
/// the KDF runs. A wrong passphrase is [`Error::BadPassphrase`]. A keyslot with the null cipher
/// never opens with a non-empty passphrase (CVE-2025-59054). Costs are bounded by
/// [`KdfLimits::UNLOCK`] (cryptsetup's); see [`open_keyslot_with_limits`].
pub fn open_keyslot<D: Device + ?Sized>(
    dev: &D,
    md: &Metadata,
    id: KeyslotId,
    passphrase: &[u8],
) -> Result<VolumeKey> {
    open_keyslot_with_limits(dev, md, id, passphrase, &KdfLimits::UNLOCK)
}

/// [`open_keyslot`] with the keyslot's KDF costs and the digest's iteration count checked against
/// the caller's `limits` before any KDF runs (over a limit: [`Error::Unsupported`], or
/// [`Error::OutOfMemory`] for Argon2 memory).
pub fn open_keyslot_with_limits<D: Device + ?Sized>(
    dev: &D,
    md: &Metadata,
    id: KeyslotId,
    passphrase: &[u8],
    limits: &KdfLimits,
) -> Result<VolumeKey> {
    let ks = active(md, id)?;
    let ks = ks.as_luks2().ok_or_else(|| {
        Error::Unsupported(format!("keyslot {id} is of type {:?}", ks.type_name()))
    })?;
    let cipher = KeyslotCipher::parse(&ks.area.encryption)?;
    if cipher.is_null() && !passphrase.is_empty() {
        return Err(Error::BadPassphrase);
    }
    let area_key_len = ks.area_key_len()?;
    cipher.check_key_len(area_key_len)?;
    let key_size = usize::try_from(ks.key_size)
        .ok()
        .filter(|&k| (1..=MAX_KEY_SIZE).contains(&k))
        .ok_or_else(|| {
            Error::header("keyslots.key_size", format!("{} out of range", ks.key_size))
        })?;
    let stripes = ks.af_stripes()?;
    let af_hash = HashAlgorithm::from_name(&ks.af.hash)?;
    let len = material_len(key_size, stripes)?;
    if u64::try_from(len).map_or(true, |l| l > ks.area.size) {
        return Err(Error::header(
            "keyslots.area.size",
            "smaller than the AF material",
        ));
    }
    let (digest_id, _) = md
        .digest_of_keyslot(id)
        .ok_or_else(|| Error::header("digests", format!("keyslot {id} has no digest")))?;
    let (kdf, salt) = keyslot_kdf(ks, limits)?;
    digest_params(md, digest_id, limits)?;

    let mut material = Zeroizing::new(vec![0u8; len]);
    dev.read_exact_at(ks.area.offset, &mut material)
        .map_err(|e| Error::io("reading the keyslot area", e))?;
    let area_key = kdf.derive(passphrase, &salt, area_key_len)?;
    cipher.decrypt(&area_key, &mut material)?;
    let key = af::merge(&material, key_size, stripes, af_hash)?;
    if verify_digest_with_limits(md, digest_id, &key, limits)? {
        Ok(VolumeKey::from_zeroizing(key))
    } else {
        Err(Error::BadPassphrase)
    }
}

/// The segment a plain "any keyslot" unlock is for: segment 0, cryptsetup's default segment.
const DEFAULT_SEGMENT: SegmentId = SegmentId::new(0);

/// Whether keyslot `id` unlocks the default segment (its digest covers segment 0).
fn is_bound(md: &Metadata, id: KeyslotId) -> bool {
    md.digest_of_keyslot(id)
        .is_some_and(|(_, d)| d.segments.contains(&DEFAULT_SEGMENT))
}

/// Unlocks the volume key: keyslot `slot` if given (any keyslot, bound or not, whatever its
/// priority), otherwise every `luks2` keyslot bound to the default segment in cryptsetup's order:
/// priority "prefer" (2) first, then "normal", ascending numbers; priority "ignore" (0) never.
///
/// Keyslots that cannot be opened here (an unsupported cipher or KDF) are skipped like a wrong
/// passphrase; any other failure (I/O, out of memory) stops the search, as in cryptsetup. With no
/// candidate keyslot at all the error is [`Error::Slot`] ("no usable keyslot"), as cryptsetup's
/// exit code 1, not a bad passphrase. Costs are bounded by [`KdfLimits::UNLOCK`]; see
/// [`unlock_with_limits`].
pub fn unlock<D: Device + ?Sized>(
    dev: &D,
    md: &Metadata,
    passphrase: &[u8],
    slot: Option<KeyslotId>,
) -> Result<(KeyslotId, VolumeKey)> {
    unlock_with_limits(dev, md, passphrase, slot, &KdfLimits::UNLOCK)
}

/// [`unlock`] under the caller's `limits`: a header offering more candidate keyslots than
/// `limits.max_keyslots_tried` is refused before any KDF runs, and each keyslot's costs are
/// checked before its KDF runs (one over the limits is skipped like an unsupported keyslot, and
/// named in the error if nothing opens).
pub fn unlock_with_limits<D: Device + ?Sized>(
    dev: &D,
    md: &Metadata,
    passphrase: &[u8],
    slot: Option<KeyslotId>,
    limits: &KdfLimits,
) -> Result<(KeyslotId, VolumeKey)> {
    if let Some(id) = slot {
        return open_keyslot_with_limits(dev, md, id, passphrase, limits).map(|vk| (id, vk));
    }
    let mut candidates = Vec::new();
    for prio in [Priority::Prefer, Priority::Normal] {
        for (&id, ks) in &md.keyslots {
            let Keyslot::Luks2(k) = ks else { continue };
            if k.effective_priority() == prio && is_bound(md, id) {
                candidates.push(id);
            }
        }
    }
    if candidates.len() > usize::try_from(limits.max_keyslots_tried).unwrap_or(usize::MAX) {
        return Err(Error::Unsupported(format!(
            "the header offers {} keyslots to try, more than the limit of {} ({})",
            candidates.len(),
            limits.max_keyslots_tried,
            limits.refusal
        )));
    }
    if candidates.is_empty() {
        // cryptsetup's message and exit code 1 (not 2: no passphrase was even tried).
        return Err(Error::Slot("No usable keyslot is available.".into()));
    }
    let mut unsupported = None;
    for id in candidates {
        match open_keyslot_with_limits(dev, md, id, passphrase, limits) {
            Ok(vk) => return Ok((id, vk)),
            Err(Error::BadPassphrase) => {}
            Err(e @ Error::Unsupported(_)) => unsupported = Some(e),
            Err(e) => return Err(e),
        }
    }
    match unsupported {
        // Nothing opened and some keyslot could not even be tried: say so rather than blame the
        // passphrase alone.
        Some(Error::Unsupported(msg)) => Err(Error::Unsupported(format!(
            "no keyslot opened with this passphrase; a keyslot could not be tried: {msg}"
        ))),
        _ => Err(Error::BadPassphrase),
    }
}

/// Settings for a new keyslot.
#[derive(Debug, Clone, Default)]
pub struct NewKeyslot {
    /// Keyslot number; `None` for the lowest free one.
    pub id: Option<KeyslotId>,
    /// PBKDF selection and costs (calibrated unless forced).
    pub pbkdf: PbkdfOptions,
    /// Priority to store (`None`: no `priority` field, i.e. normal).
    pub priority: Option<Priority>,
}

/// The keyslot cipher cryptsetup picks: the segment cipher if usable for keyslots with this key
/// size, else aes-xts-plain64 with a 512-bit key.
pub fn keyslot_cipher_for(md: &Metadata, vk_len: usize) -> (KeyslotCipher, usize) {
    let seg = md
        .segments
        .get(&DEFAULT_SEGMENT)
        .and_then(|s| match &s.kind {
            SegmentKind::Crypt {
                encryption,
                integrity: None,
                ..
            } => Some(encryption.as_str()),
            _ => None,
        });
    if let Some(Ok(c)) = seg.map(KeyslotCipher::parse)
        && !c.is_null()
        && c.check_key_len(vk_len).is_ok()
    {
        return (c, vk_len);
    }
    (DEFAULT_KEYSLOT_CIPHER, DEFAULT_KEYSLOT_KEY_SIZE)
}

/// A keyslot built in memory (area content encrypted), not yet stored.
struct Prepared {
    keyslot: Luks2Keyslot,
    material: Zeroizing<Vec<u8>>,
}

/// Builds keyslot JSON and its encrypted area for `vk` at area `offset`.
fn prepare(
    md: &Metadata,
    vk: &VolumeKey,
    passphrase: &[u8],
    pbkdf: &PbkdfOptions,
    offset: u64,
    priority: Option<Priority>,
) -> Result<Prepared> {
    let (cipher, area_key_len) = keyslot_cipher_for(md, vk.len());
    let kdf = calibrate::keyslot_kdf(pbkdf, area_key_len)?;
    let mut salt = [0u8; KEYSLOT_SALT_LEN];
    random(&mut salt, "generating a keyslot salt")?;
    let af_hash = pbkdf.digest_hash();
    let area_size = metadata::keyslot_area_size(vk.len() as u64, u64::from(af::LUKS_STRIPES))
        .ok_or_else(|| Error::InvalidArgument("keyslot area size overflows".into()))?;
    let split = af::split(vk.as_bytes(), af::LUKS_STRIPES, af_hash)?;
    let mut material = Zeroizing::new(vec![0u8; material_len(vk.len(), af::LUKS_STRIPES)?]);
    material
        .get_mut(..split.len())
        .ok_or_else(|| Error::InvalidArgument("AF material larger than its area".into()))?
        .copy_from_slice(&split);
    let area_key = kdf.derive(passphrase, &salt, area_key_len)?;
    cipher.encrypt(&area_key, &mut material)?;
    let key_size = u32::try_from(vk.len())
        .map_err(|_| Error::InvalidArgument("volume key too large".into()))?;
    let keyslot = Luks2Keyslot {
        key_size,
        priority,
        kdf: stored_kdf(&kdf, &salt),
        af: Af {
            hash: af_hash.name().to_owned(),
            stripes: i64::from(af::LUKS_STRIPES),
        },
        area: RawArea {
            encryption: cipher.spec().to_owned(),
            key_size: i64::try_from(area_key_len)
                .map_err(|_| Error::InvalidArgument("area key too large".into()))?,
            offset,
            size: area_size,
        },
    };
    Ok(Prepared { keyslot, material })
}

/// The digest `vk` belongs to (one covering the default segment, else any that verifies).
fn digest_for_key(md: &Metadata, vk: &VolumeKey) -> Result<DigestId> {
    // Digests of the default segment first, then the others (unbound keys), each in order.
    let (bound, unbound): (Vec<_>, Vec<_>) = md
        .digests
        .iter()
        .partition(|(_, d)| d.segments.contains(&DEFAULT_SEGMENT));
    for id in bound.into_iter().chain(unbound).map(|(id, _)| *id) {
        if verify_digest(md, id, vk.as_bytes()).unwrap_or(false) {
            return Ok(id);
        }
    }
    Err(Error::BadPassphrase)
}

fn area_size_for(vk: &VolumeKey) -> Result<u64> {
    metadata::keyslot_area_size(vk.len() as u64, u64::from(af::LUKS_STRIPES))
        .ok_or_else(|| Error::InvalidArgument("keyslot area size overflows".into()))
}

fn choose_id(md: &Metadata, id: Option<KeyslotId>) -> Result<KeyslotId> {
    match id {
        Some(id) if id.get() >= metadata::KEYSLOTS_MAX => Err(Error::InvalidArgument(format!(
            "keyslot {id} is out of range (0..31)"
        ))),
        Some(id) if md.keyslots.contains_key(&id) => {
            Err(Error::Slot(format!("keyslot {id} is already in use")))
        }
        Some(id) => Ok(id),
        None => md
            .next_free_keyslot()
            .ok_or_else(|| Error::Slot("all keyslots are full".into())),
    }
}

/// Stores a new keyslot for `vk` (which must match an existing digest) protected by
/// `passphrase`. The area is written and synced first, then the header.
pub fn add_keyslot<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    vk: &VolumeKey,
    passphrase: &[u8],
    params: &NewKeyslot,
) -> Result<KeyslotId> {
    store_keyslot(dev, header, vk, passphrase, params, false)
}

/// [`add_keyslot`] for a header that has never been written (format): the header is written
/// with [`header::write_new`] instead of being compared with what is on the device.
pub(crate) fn add_keyslot_to_new_header<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    vk: &VolumeKey,
    passphrase: &[u8],
    params: &NewKeyslot,
) -> Result<KeyslotId> {
    store_keyslot(dev, header, vk, passphrase, params, true)
}

fn store_keyslot<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    vk: &VolumeKey,
    passphrase: &[u8],
    params: &NewKeyslot,
    new_header: bool,
) -> Result<KeyslotId> {
    header.metadata.ensure_writable()?;
    let id = choose_id(&header.metadata, params.id)?;
    let digest_id = digest_for_key(&header.metadata, vk)?;
    let offset = header
        .metadata
        .find_free_area(area_size_for(vk)?)
        .ok_or_else(|| Error::Slot("no space in the keyslots area for a new keyslot".into()))?;
    let prepared = prepare(
        &header.metadata,
        vk,
        passphrase,
        &params.pbkdf,
        offset,
        params.priority,
    )?;
    let mut updated = header.clone();
    updated
        .metadata
        .keyslots
        .insert(id, Keyslot::Luks2(prepared.keyslot));
    if let Some(d) = updated.metadata.digests.get_mut(&digest_id) {
        d.keyslots.push(id);
        d.keyslots.sort();
    }
    let write_area = |dev: &mut D| -> Result<()> {
        dev.write_all_at(offset, &prepared.material)
            .map_err(|e| Error::io("writing the keyslot area", e))?;
        dev.sync()
            .map_err(|e| Error::io("syncing the keyslot area", e))
    };
    if new_header {
        write_area(dev)?;
        header::write_new(dev, &mut updated)?;
    } else {
        with_exclusive_lock(dev, |dev| {
            // The area chosen above is free only in the header we read: check that it is still
            // the one on disk before writing into the keyslots area.
            header::begin_update_locked(dev, header)?;
            write_area(dev)?;
            header::write_locked(dev, &mut updated)
        })?;
    }
    *header = updated;
    Ok(id)
}

/// Replaces keyslot `id` by a new one for `vk` protected by `new_passphrase`, keeping its number,
/// digest and token assignments (cryptsetup's `luksChangeKey`). The new area is written to free
/// space first, then one header update switches to it, then the old area is wiped.
pub fn replace_keyslot<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    id: KeyslotId,
    vk: &VolumeKey,
    new_passphrase: &[u8],
    pbkdf: &PbkdfOptions,
) -> Result<()> {
    header.metadata.ensure_writable()?;
    let old = active(&header.metadata, id)?;
    let old_range = old.area_range();
    let priority = old.as_luks2().and_then(|k| k.priority);
    let offset = header
        .metadata
        .find_free_area(area_size_for(vk)?)
        .ok_or_else(|| {
            Error::Slot("no free space in the keyslots area to write the new keyslot".into())
        })?;
    let prepared = prepare(
        &header.metadata,
        vk,
        new_passphrase,
        pbkdf,
        offset,
        priority,
    )?;
    let mut updated = header.clone();
    updated
        .metadata
        .keyslots
        .insert(id, Keyslot::Luks2(prepared.keyslot));
    with_exclusive_lock(dev, |dev| {
        header::begin_update_locked(dev, header)?;
        dev.write_all_at(offset, &prepared.material)
            .map_err(|e| Error::io("writing the keyslot area", e))?;
        dev.sync()
            .map_err(|e| Error::io("syncing the keyslot area", e))?;
        header::write_locked(dev, &mut updated)?;
        wipe_area(dev, old_range)
    })?;
    *header = updated;
    Ok(())
}

/// Overwrites a keyslot area with random data and syncs.
pub(crate) fn wipe_area<D: Device + ?Sized>(dev: &mut D, (offset, size): (u64, u64)) -> Result<()> {
    // 64 KiB of random data at a time: a format holds this much while it writes the ~16 MiB
    // keyslots area, and a node plugin runs many formats at once (50 concurrent first stages
    // with 1 MiB chunks: ~30 MiB more peak RSS); 256 writes instead of 16 cost nothing here.
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; usize::try_from(size.min(CHUNK)).unwrap_or(0)];
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(CHUNK);
        let chunk = buf
            .get_mut(..usize::try_from(n).unwrap_or(0))
            .ok_or_else(|| Error::InvalidArgument("wipe chunk".into()))?;
        random(chunk, "generating wipe data")?;
        let at = offset
            .checked_add(done)
            .ok_or_else(|| Error::InvalidArgument("area offset overflows".into()))?;
        dev.write_all_at(at, chunk)
            .map_err(|e| Error::io("wiping a keyslot area", e))?;
        done += n;
    }
    dev.sync()
        .map_err(|e| Error::io("syncing a wiped keyslot area", e))
}

/// Removes keyslot `id` from the metadata (and from every digest and token referring to it).
fn forget_keyslot(md: &mut Metadata, id: KeyslotId) {
    md.keyslots.remove(&id);
    for d in md.digests.values_mut() {
        d.keyslots.retain(|k| *k != id);
    }
    for t in md.tokens.values_mut() {
        t.keyslots.retain(|k| *k != id);
    }
}

/// Destroys keyslot `id` (cryptsetup's `luksKillSlot`): metadata first, then the area is wiped.
/// As in libcryptsetup, this is allowed on a header with unknown mandatory requirements (which
/// are kept); every other update refuses such a header.
pub fn kill_keyslot<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    id: KeyslotId,
) -> Result<()> {
    let ks = active(&header.metadata, id)?;
    let range = ks.area_range();
    let mut updated = header.clone();
    forget_keyslot(&mut updated.metadata, id);
    with_exclusive_lock(dev, |dev| {
        header::write_locked_keyslot_removal(dev, &mut updated)?;
        wipe_area(dev, range)
    })?;
    *header = updated;
    Ok(())
}

/// Sets the priority of keyslot `id` (`None` removes the field: normal).
pub fn set_priority<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    id: KeyslotId,
    priority: Option<Priority>,
) -> Result<()> {
    header.metadata.ensure_writable()?;
    let mut updated = header.clone();
    match updated.metadata.keyslots.get_mut(&id) {
        Some(Keyslot::Luks2(k)) => k.priority = priority,
        Some(Keyslot::Other(_)) => {
            return Err(Error::Unsupported(format!(
                "keyslot {id} is not a luks2 keyslot"
            )));
        }
        None => return Err(not_active(id)),
    }
    header::write(dev, &mut updated)?;
    *header = updated;
    Ok(())
}

/// Digest salt and value for a new digest of `vk` (cryptsetup's `PBKDF2_digest_store`).
pub(crate) fn new_digest(
    vk: &VolumeKey,
    hash: HashAlgorithm,
    forced: bool,
) -> Result<metadata::Pbkdf2Digest> {
    let iterations = calibrate::digest_iterations(hash, vk.len(), forced)?;
    let mut salt = [0u8; DIGEST_SALT_LEN];
    random(&mut salt, "generating a digest salt")?;
    let value = digest::compute_digest(hash, iterations, &salt, vk.as_bytes())?;
    Ok(metadata::Pbkdf2Digest {
        hash: hash.name().to_owned(),
        iterations: i64::from(iterations),
        salt: B64::encode(&salt),
        digest: B64::encode(&value),
    })
}
