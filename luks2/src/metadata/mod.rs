//! The LUKS2 JSON metadata: a typed, validated model.
//!
//! [`Metadata::parse`] takes the raw JSON area of a header copy and accepts exactly what
//! cryptsetup 2.6 accepts (see `parse.rs`); [`Metadata::to_json`] writes compact JSON in
//! cryptsetup's key order, 64-bit values as decimal strings, base64 as cryptsetup writes it.
//! Parsing what we serialize gives an equal value. For metadata that was read, members the
//! model does not interpret and the stored member order are kept as cryptsetup keeps them
//! (`stored.rs`): unknown JSON is data.
//!
//! Things cryptsetup accepts in a header but that cannot be used safely (unknown keyslot or KDF
//! types, absurd KDF costs, undecodable base64) are kept, not rejected: the header stays
//! readable, and the typed accessors ([`Luks2Keyslot::kdf_params`], [`B64::decode`]) check them
//! before any use.

mod json;
mod parse;
mod stored;

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub use parse::parse_u64_field;

/// A JSON object with its keys in document order.
pub type JsonMap = Map<String, Value>;

/// Size of the binary part of each header copy.
pub const BIN_HEADER_SIZE: u64 = 4096;
/// The nine header-copy sizes (binary header + JSON area) cryptsetup allows.
pub const HDR_SIZES: [u64; 9] = [
    16 * 1024,
    32 * 1024,
    64 * 1024,
    128 * 1024,
    256 * 1024,
    512 * 1024,
    1024 * 1024,
    2048 * 1024,
    4096 * 1024,
];
/// Largest keyslots area cryptsetup allows (128 MiB).
pub const MAX_KEYSLOTS_SIZE: u64 = 128 * 1024 * 1024;
/// Keyslot ids are `0..KEYSLOTS_MAX`.
pub const KEYSLOTS_MAX: u32 = 32;
/// Token ids are `0..TOKENS_MAX`.
pub const TOKENS_MAX: u32 = 32;
/// At most this many segments.
pub const SEGMENTS_MAX: u32 = 32;
/// At most this many digests.
pub const DIGESTS_MAX: u32 = 8;
/// AF stripes cryptsetup uses for every keyslot.
pub const AF_STRIPES: u32 = 4000;
/// Alignment of keyslot areas and of the keyslots area size.
pub const AREA_ALIGN: u64 = 4096;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl $name {
            /// Wraps a number.
            pub const fn new(n: u32) -> Self {
                $name(n)
            }
            /// The number.
            pub const fn get(self) -> u32 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A keyslot number (the JSON object key).
    KeyslotId
);
id_type!(
    /// A token number.
    TokenId
);
id_type!(
    /// A segment number.
    SegmentId
);
id_type!(
    /// A digest number.
    DigestId
);

/// Base64 data as stored in the header. Kept as text so that a header cryptsetup accepts (it does
/// not decode salts when loading) round-trips; decode before use.
#[derive(Clone, PartialEq, Eq)]
pub struct B64(String);

impl B64 {
    /// Encodes bytes as cryptsetup does (standard alphabet, padded).
    pub fn encode(bytes: &[u8]) -> Self {
        B64(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Wraps stored text without checking it.
    pub fn from_text(text: impl Into<String>) -> Self {
        B64(text.into())
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decodes; `field` names the value in the error.
    pub fn decode(&self, field: &'static str) -> Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(self.0.as_bytes())
            .map_err(|e| Error::header(field, format!("invalid base64: {e}")))
    }
}

impl fmt::Debug for B64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B64({:?})", self.0)
    }
}

/// Keyslot priority (`priority` field; absent means normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// 0: never tried unless named explicitly.
    Ignore,
    /// 1: the default.
    Normal,
    /// 2: tried before normal keyslots.
    Prefer,
}

impl Priority {
    /// The JSON number.
    pub fn as_number(self) -> i64 {
        match self {
            Priority::Ignore => 0,
            Priority::Normal => 1,
            Priority::Prefer => 2,
        }
    }

    /// From the JSON number (cryptsetup treats anything else as normal).
    pub fn from_number(n: i64) -> Self {
        match n {
            0 => Priority::Ignore,
            2 => Priority::Prefer,
            _ => Priority::Normal,
        }
    }
}

/// The Argon2 variants LUKS2 uses. Also the KDF's own type ([`crate::crypto::kdf::Argon2Variant`]
/// re-exports it), so the metadata model needs no crypto code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Argon2Variant {
    /// Argon2i (data-independent addressing).
    Argon2i,
    /// Argon2id (hybrid), cryptsetup 2.6's default.
    Argon2id,
}

impl Argon2Variant {
    /// The LUKS2 `kdf.type` name.
    pub fn name(self) -> &'static str {
        match self {
            Argon2Variant::Argon2i => "argon2i",
            Argon2Variant::Argon2id => "argon2id",
        }
    }
}

/// A keyslot KDF as stored. Integer costs are kept as JSON gives them (cryptsetup does not check
/// them when loading); use [`Luks2Keyslot::kdf_params`] to get bounded, typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Kdf {
    /// PBKDF2-HMAC.
    Pbkdf2 {
        /// Hash name (`sha256`, ...).
        hash: String,
        /// Iterations.
        iterations: i64,
        /// Salt.
        salt: B64,
    },
    /// Argon2i / Argon2id.
    Argon2 {
        /// Which variant.
        variant: Argon2Variant,
        /// Time cost (passes).
        time: i64,
        /// Memory cost in KiB.
        memory: i64,
        /// Lanes (part of the result).
        cpus: i64,
        /// Salt.
        salt: B64,
    },
    /// A KDF type cryptsetup loads but we cannot run; kept verbatim.
    Other(JsonMap),
}

/// Limits applied to untrusted KDF costs before they are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Maximum PBKDF2 iterations.
    pub max_pbkdf2_iterations: u32,
    /// Maximum Argon2 time cost.
    pub max_argon2_time: u32,
    /// Maximum Argon2 memory in KiB.
    pub max_argon2_memory_kib: u32,
    /// Maximum Argon2 lanes.
    pub max_argon2_lanes: u32,
}

impl Default for KdfLimits {
    /// cryptsetup 2.6's PBKDF limits: Argon2 memory at most 4 GiB and at most 4 lanes; time and
    /// iterations at most `u32::MAX`.
    fn default() -> Self {
        KdfLimits {
            max_pbkdf2_iterations: u32::MAX,
            max_argon2_time: u32::MAX,
            max_argon2_memory_kib: 4 * 1024 * 1024,
            max_argon2_lanes: 4,
        }
    }
}

/// Bounded, decoded KDF parameters, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdfParams {
    /// PBKDF2.
    Pbkdf2 {
        /// Hash name as stored.
        hash: String,
        /// Iterations, >= 1.
        iterations: u32,
        /// Decoded salt.
        salt: Vec<u8>,
    },
    /// Argon2.
    Argon2 {
        /// Variant.
        variant: Argon2Variant,
        /// Passes, >= 1.
        time: u32,
        /// Memory in KiB, >= 8 * lanes.
        memory_kib: u32,
        /// Lanes, >= 1.
        lanes: u32,
        /// Decoded salt.
        salt: Vec<u8>,
    },
}

fn bounded(value: i64, min: u32, max: u32, field: &'static str) -> Result<u32> {
    match u32::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Error::Unsupported(format!(
            "{field} {value} outside the accepted range {min}..={max}"
        ))),
    }
}

/// Anti-forensic splitter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Af {
    /// Diffusion hash name.
    pub hash: String,
    /// Stripes (4000).
    pub stripes: i64,
}

/// The keyslot's raw area (`area.type == "raw"`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawArea {
    /// Area cipher, e.g. `aes-xts-plain64`.
    pub encryption: String,
    /// Area cipher key size in bytes (as stored; see [`Luks2Keyslot::area_key_len`]).
    pub key_size: i64,
    /// Byte offset on the device.
    pub offset: u64,
    /// Byte length.
    pub size: u64,
}

/// A keyslot of type `luks2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks2Keyslot {
    /// Size of the key stored in this keyslot (the volume key), bytes.
    pub key_size: u32,
    /// Priority; `None` when the field is absent (normal).
    pub priority: Option<Priority>,
    /// The KDF.
    pub kdf: Kdf,
    /// The AF splitter.
    pub af: Af,
    /// The encrypted area.
    pub area: RawArea,
}

impl Luks2Keyslot {
    /// The effective priority.
    pub fn effective_priority(&self) -> Priority {
        self.priority.unwrap_or(Priority::Normal)
    }

    /// KDF parameters checked against cryptsetup's limits.
    pub fn kdf_params(&self) -> Result<KdfParams> {
        self.kdf_params_with(&KdfLimits::default())
    }

    /// KDF parameters checked against `limits`.
    pub fn kdf_params_with(&self, limits: &KdfLimits) -> Result<KdfParams> {
        match &self.kdf {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => Ok(KdfParams::Pbkdf2 {
                hash: hash.clone(),
                iterations: bounded(
                    *iterations,
                    1,
                    limits.max_pbkdf2_iterations,
                    "pbkdf2 iterations",
                )?,
                salt: salt.decode("kdf.salt")?,
            }),
            Kdf::Argon2 {
                variant,
                time,
                memory,
                cpus,
                salt,
            } => {
                let lanes = bounded(*cpus, 1, limits.max_argon2_lanes, "argon2 cpus")?;
                let memory_kib =
                    bounded(*memory, 1, limits.max_argon2_memory_kib, "argon2 memory")?;
                if u64::from(memory_kib) < 8 * u64::from(lanes) {
                    return Err(Error::Unsupported(format!(
                        "argon2 memory {memory_kib} KiB is below 8 KiB per lane ({lanes} lanes)"
                    )));
                }
                Ok(KdfParams::Argon2 {
                    variant: *variant,
                    time: bounded(*time, 1, limits.max_argon2_time, "argon2 time")?,
                    memory_kib,
                    lanes,
                    salt: salt.decode("kdf.salt")?,
                })
            }
            Kdf::Other(map) => Err(Error::Unsupported(format!(
                "keyslot KDF type {}",
                map.get("type").and_then(Value::as_str).unwrap_or("?")
            ))),
        }
    }

    /// The area cipher key length, bounded to 1..=512 bytes.
    pub fn area_key_len(&self) -> Result<usize> {
        let n = bounded(self.area.key_size, 1, 512, "area key_size")?;
        usize::try_from(n).map_err(|_| Error::Unsupported("area key_size".into()))
    }

    /// The AF stripe count, bounded to 1..=4000 (cryptsetup only writes 4000).
    pub fn af_stripes(&self) -> Result<u32> {
        bounded(self.af.stripes, 1, AF_STRIPES, "af stripes")
    }
}

/// A keyslot.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyslot {
    /// A regular keyslot.
    Luks2(Luks2Keyslot),
    /// Any other type (`reencrypt`, or one unknown to cryptsetup's loader), kept verbatim.
    /// Such keyslots occupy their area but cannot be opened here.
    Other(OtherKeyslot),
}

/// A keyslot we do not interpret.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherKeyslot {
    /// Its `type`.
    pub type_name: String,
    /// Its `area.offset`.
    pub area_offset: u64,
    /// Its `area.size`.
    pub area_size: u64,
    /// The whole JSON object.
    pub raw: JsonMap,
}

impl Keyslot {
    /// The `type` string.
    pub fn type_name(&self) -> &str {
        match self {
            Keyslot::Luks2(_) => "luks2",
            Keyslot::Other(o) => &o.type_name,
        }
    }

    /// `(offset, size)` of the keyslot's area in bytes.
    pub fn area_range(&self) -> (u64, u64) {
        match self {
            Keyslot::Luks2(k) => (k.area.offset, k.area.size),
            Keyslot::Other(o) => (o.area_offset, o.area_size),
        }
    }

    /// The `luks2` keyslot, if it is one.
    pub fn as_luks2(&self) -> Option<&Luks2Keyslot> {
        match self {
            Keyslot::Luks2(k) => Some(k),
            Keyslot::Other(_) => None,
        }
    }
}

/// A token: `type`, `keyslots` and every other field preserved verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Its `type`.
    pub type_name: String,
    /// Keyslots it unlocks.
    pub keyslots: Vec<KeyslotId>,
    /// All other fields, in document order.
    pub fields: JsonMap,
}

impl Token {
    /// Builds a token from a JSON object as `cryptsetup token import` takes it: `type` (string)
    /// and `keyslots` (array of keyslot number strings) are required.
    pub fn from_json(value: &Value) -> Result<Self> {
        parse::token_from_json(value)
    }

    /// The token as a JSON object (as `cryptsetup token export` prints it).
    pub fn to_json(&self) -> Value {
        let mut m = JsonMap::new();
        m.insert("type".into(), Value::String(self.type_name.clone()));
        m.insert("keyslots".into(), id_array(&self.keyslots));
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A pbkdf2 digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Pbkdf2Digest {
    /// Hash name.
    pub hash: String,
    /// Iterations as stored.
    pub iterations: i64,
    /// Salt.
    pub salt: B64,
    /// The digest value.
    pub digest: B64,
}

/// What kind of digest.
#[derive(Debug, Clone, PartialEq)]
pub enum DigestKind {
    /// `pbkdf2` with all its fields well-typed.
    Pbkdf2(Pbkdf2Digest),
    /// Anything else cryptsetup loads (other type, or pbkdf2 with odd fields): kept verbatim
    /// (without `type`, `keyslots`, `segments`), unusable for verification.
    Other {
        /// Its `type`.
        type_name: String,
        /// The other fields.
        fields: JsonMap,
    },
}

/// A digest binding keyslots to segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// Keyslots whose key this digest verifies.
    pub keyslots: Vec<KeyslotId>,
    /// Segments the key encrypts (none for an unbound key).
    pub segments: Vec<SegmentId>,
    /// The digest itself.
    pub kind: DigestKind,
}

/// A segment's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentSize {
    /// `"dynamic"`: to the end of the device.
    Dynamic,
    /// Fixed, in bytes (non-zero, 512-aligned).
    Bytes(u64),
}

/// Type-specific segment data.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentKind {
    /// `crypt`.
    Crypt {
        /// IV offset in 512-byte sectors.
        iv_tweak: u64,
        /// Cipher spec, e.g. `aes-xts-plain64`.
        encryption: String,
        /// Encryption sector size (multiple of 512).
        sector_size: u32,
        /// dm-integrity settings, kept verbatim.
        integrity: Option<JsonMap>,
    },
    /// Any other type (`linear`, ...): the fields other than `type`, `offset`, `size`, `flags`.
    Other {
        /// Its `type`.
        type_name: String,
        /// The other fields.
        fields: JsonMap,
    },
}

/// A data segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Byte offset of the data (512-aligned; 0 for a detached header).
    pub offset: u64,
    /// Size.
    pub size: SegmentSize,
    /// Optional `flags`.
    pub flags: Option<Vec<String>>,
    /// Type-specific fields.
    pub kind: SegmentKind,
}

impl Segment {
    /// Whether this is a reencryption backup segment (a flag starting with `backup-`).
    pub fn is_backup(&self) -> bool {
        self.flags
            .as_ref()
            .is_some_and(|f| f.iter().any(|s| s.starts_with("backup-")))
    }
}

/// The `requirements` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Requirements {
    /// `mandatory`, if present.
    pub mandatory: Option<Vec<String>>,
    /// Other fields, kept verbatim.
    pub fields: JsonMap,
}

/// The `config` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Size of the JSON area (header copy size - 4096).
    pub json_size: u64,
    /// Size of the keyslots area.
    pub keyslots_size: u64,
    /// Persistent activation flags (`allow-discards`, ...).
    pub flags: Option<Vec<String>>,
    /// Requirements.
    pub requirements: Option<Requirements>,
}

/// The validated JSON metadata of a LUKS2 header.
///
/// Metadata that was read also keeps the stored JSON object: members the model does not
/// interpret and the stored member order are written back as they were (see
/// [`Metadata::to_value`]). Equality compares the model only.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Keyslots by number.
    pub keyslots: BTreeMap<KeyslotId, Keyslot>,
    /// Tokens by number.
    pub tokens: BTreeMap<TokenId, Token>,
    /// Segments by number.
    pub segments: BTreeMap<SegmentId, Segment>,
    /// Digests by number.
    pub digests: BTreeMap<DigestId, Digest>,
    /// Config.
    pub config: Config,
    /// Entries whose key is a string of digits but not a canonical `u32` (`"00"`, `""`,
    /// `"4294967296"`): cryptsetup loads such headers but never addresses these entries by
    /// number, and neither do we. Kept verbatim, per section.
    pub unindexed: Unindexed,
    /// The JSON object as read: members the model does not interpret, and the member order,
    /// are kept from it on every write (see [`Metadata::to_value`]).
    stored: stored::StoredJson,
}

/// Entries with non-canonical keys, kept verbatim (see [`Metadata::unindexed`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unindexed {
    /// Keyslots (their areas still count as used).
    pub keyslots: JsonMap,
    /// Tokens.
    pub tokens: JsonMap,
    /// Digests.
    pub digests: JsonMap,
}

fn id_array<T: fmt::Display>(ids: &[T]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.to_string())).collect())
}

fn u64_str(v: u64) -> Value {
    Value::String(v.to_string())
}

impl Metadata {
    /// Parses and validates a whole JSON area (the bytes after the binary header, including the
    /// NUL padding) of a header copy of `hdr_size` bytes, as cryptsetup does.
    pub fn parse(json_area: &[u8], hdr_size: u64) -> Result<Self> {
        parse::parse_area(json_area, hdr_size)
    }

    /// Validates a JSON value as if it were stored in a header copy of `hdr_size` bytes.
    pub fn from_value(root: Value, hdr_size: u64) -> Result<Self> {
        parse::from_value(root, hdr_size)
    }

    /// Minimal metadata for a fresh header: no keyslots, tokens or digests, one `crypt` segment.
    /// The caller must add a digest covering the segment before it validates.
    pub fn new_empty(hdr_size: u64, keyslots_size: u64, segment: Segment) -> Result<Self> {
        if !HDR_SIZES.contains(&hdr_size) {
            return Err(Error::InvalidArgument(format!(
                "unsupported LUKS2 metadata size {hdr_size}"
            )));
        }
        if !keyslots_size.is_multiple_of(AREA_ALIGN) || keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(Error::InvalidArgument(format!(
                "keyslots size {keyslots_size} must be a multiple of 4096 and at most 128 MiB"
            )));
        }
        let mut segments = BTreeMap::new();
        segments.insert(SegmentId::new(0), segment);
        Ok(Metadata {
            keyslots: BTreeMap::new(),
            tokens: BTreeMap::new(),
            segments,
            digests: BTreeMap::new(),
            unindexed: Unindexed::default(),
            stored: stored::StoredJson::default(),
            config: Config {
                json_size: hdr_size - BIN_HEADER_SIZE,
                keyslots_size,
                flags: None,
                requirements: None,
            },
        })
    }

    /// The JSON value. For metadata that was read, this is the stored JSON with the model's
    /// changes applied: members the model does not interpret (an extra key in `config`, a
    /// vendor field in a keyslot) and the stored member order are kept, as cryptsetup keeps
    /// them. Built metadata has cryptsetup's key order.
    pub fn to_value(&self) -> Value {
        let generated = self.generated_value();
        match &self.stored.0 {
            Some(stored) => stored::merge(stored, generated, &stored::ROOT),
            None => generated,
        }
    }

    /// Token `id` as JSON, its stored members and member order kept (`token export`).
    pub fn token_value(&self, id: TokenId) -> Option<Value> {
        let generated = self.tokens.get(&id)?.to_json();
        let stored = self
            .stored
            .0
            .as_ref()
            .and_then(|s| s.get("tokens"))
            .and_then(|t| t.get(id.to_string()));
        Some(match stored {
            Some(s) => stored::merge(s, generated, &stored::TOKEN),
            None => generated,
        })
    }

    /// Records `value` as the stored JSON of token `id` (an import keeps the member order it
    /// was given, as cryptsetup's does).
    pub(crate) fn set_stored_token(&mut self, id: TokenId, value: Value) {
        let root = self
            .stored
            .0
            .get_or_insert_with(|| Value::Object(JsonMap::new()));
        let Value::Object(root) = root else { return };
        let tokens = root
            .entry("tokens")
            .or_insert_with(|| Value::Object(JsonMap::new()));
        if let Value::Object(tokens) = tokens {
            tokens.insert(id.to_string(), value);
        }
    }

    /// Makes the current JSON (stored members kept, the model's changes applied) the stored JSON,
    /// as after a write.
    pub(crate) fn refresh_stored(&mut self) {
        if self.stored.0.is_some() {
            self.stored.0 = Some(self.to_value());
        }
    }

    /// The JSON the model produces, keys in cryptsetup's order.
    fn generated_value(&self) -> Value {
        let mut root = JsonMap::new();
        let mut ks = JsonMap::new();
        for (id, k) in &self.keyslots {
            ks.insert(id.to_string(), keyslot_value(k));
        }
        ks.extend(self.unindexed.keyslots.clone());
        root.insert("keyslots".into(), Value::Object(ks));
        let mut ts = JsonMap::new();
        for (id, t) in &self.tokens {
            ts.insert(id.to_string(), t.to_json());
        }
        ts.extend(self.unindexed.tokens.clone());
        root.insert("tokens".into(), Value::Object(ts));
        let mut ss = JsonMap::new();
        for (id, s) in &self.segments {
            ss.insert(id.to_string(), segment_value(s));
        }
        root.insert("segments".into(), Value::Object(ss));
        let mut ds = JsonMap::new();
        for (id, d) in &self.digests {
            ds.insert(id.to_string(), digest_value(d));
        }
        ds.extend(self.unindexed.digests.clone());
        root.insert("digests".into(), Value::Object(ds));
        root.insert("config".into(), config_value(&self.config));
        Value::Object(root)
    }

    /// Compact JSON text as cryptsetup writes it.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The JSON area: compact JSON padded with NULs to `config.json_size` bytes. Fails if the JSON
    /// does not fit with at least one NUL after it.
    pub fn to_json_area(&self) -> Result<Vec<u8>> {
        if !HDR_SIZES.contains(&self.config.json_size.saturating_add(BIN_HEADER_SIZE)) {
            return Err(Error::InvalidArgument(format!(
                "json_size {} is not one of the allowed JSON area sizes",
                self.config.json_size
            )));
        }
        let text = self.to_json();
        let len = usize::try_from(self.config.json_size)
            .map_err(|_| Error::InvalidArgument("json_size too large".into()))?;
        if text.len() >= len {
            return Err(Error::InvalidArgument(format!(
                "metadata JSON ({} bytes) does not fit the {len}-byte JSON area",
                text.len()
            )));
        }
        let mut area = text.into_bytes();
        area.resize(len, 0);
        Ok(area)
    }

    /// Size of one header copy (binary header + JSON area).
    pub fn hdr_size(&self) -> u64 {
        self.config.json_size.saturating_add(BIN_HEADER_SIZE)
    }

    /// Bytes at the start of the device occupied by both header copies and the keyslots area
    /// (what `luksHeaderBackup` saves).
    pub fn header_area_size(&self) -> u64 {
        self.hdr_size()
            .saturating_mul(2)
            .saturating_add(self.config.keyslots_size)
    }

    /// `(start, end)` of the keyslots area: `[2 * hdr_size, 2 * hdr_size + keyslots_size)`.
    pub fn keyslots_area(&self) -> (u64, u64) {
        let start = self.hdr_size().saturating_mul(2);
        (start, start.saturating_add(self.config.keyslots_size))
    }

    /// The data offset in bytes: the smallest offset of a non-backup segment (0 = detached).
    pub fn data_offset(&self) -> u64 {
        self.segments
            .values()
            .filter(|s| !s.is_backup())
            .map(|s| s.offset)
            .min()
            .unwrap_or(0)
    }

    /// Mandatory requirements (empty if none).
    pub fn requirements(&self) -> &[String] {
        self.config
            .requirements
            .as_ref()
            .and_then(|r| r.mandatory.as_deref())
            .unwrap_or_default()
    }

    /// Whether the header must not be modified or activated: it has mandatory requirements
    /// (this implementation supports none of them, e.g. reencryption in progress).
    pub fn is_read_only(&self) -> bool {
        !self.requirements().is_empty()
    }

    /// Error out if the header is read-only.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnlyRequirements(self.requirements().to_vec()));
        }
        Ok(())
    }

    /// The lowest free keyslot number below [`KEYSLOTS_MAX`].
    pub fn next_free_keyslot(&self) -> Option<KeyslotId> {
        (0..KEYSLOTS_MAX)
            .map(KeyslotId::new)
            .find(|id| !self.keyslots.contains_key(id))
    }

    /// The lowest free token number below [`TOKENS_MAX`].
    pub fn next_free_token(&self) -> Option<TokenId> {
        (0..TOKENS_MAX)
            .map(TokenId::new)
            .find(|id| !self.tokens.contains_key(id))
    }

    /// The lowest free digest number below [`DIGESTS_MAX`].
    pub fn next_free_digest(&self) -> Option<DigestId> {
        (0..DIGESTS_MAX)
            .map(DigestId::new)
            .find(|id| !self.digests.contains_key(id))
    }

    /// The digest a keyslot belongs to.
    pub fn digest_of_keyslot(&self, id: KeyslotId) -> Option<(DigestId, &Digest)> {
        self.digests
            .iter()
            .find(|(_, d)| d.keyslots.contains(&id))
            .map(|(i, d)| (*i, d))
    }

    /// The digest covering a segment.
    pub fn digest_of_segment(&self, id: SegmentId) -> Option<(DigestId, &Digest)> {
        self.digests
            .iter()
            .find(|(_, d)| d.segments.contains(&id))
            .map(|(i, d)| (*i, d))
    }

    /// First free `size`-byte gap (rounded up to 4096) inside the keyslots area, 4096-aligned,
    /// as cryptsetup allocates keyslot areas. `None` if nothing fits.
    pub fn find_free_area(&self, size: u64) -> Option<u64> {
        let size = size.checked_add(AREA_ALIGN - 1)? / AREA_ALIGN * AREA_ALIGN;
        if size == 0 {
            return None;
        }
        let (start, end) = self.keyslots_area();
        let mut used: Vec<(u64, u64)> = self.keyslots.values().map(Keyslot::area_range).collect();
        used.extend(
            self.unindexed
                .keyslots
                .values()
                .filter_map(parse::raw_area_range),
        );
        used.sort_unstable();
        let mut candidate = start;
        for (off, len) in used {
            let used_end = off.saturating_add(len);
            if used_end <= candidate {
                continue;
            }
            if off >= candidate.checked_add(size)? {
                break;
            }
            candidate = used_end.checked_add(AREA_ALIGN - 1)? / AREA_ALIGN * AREA_ALIGN;
        }
        (candidate.checked_add(size)? <= end).then_some(candidate)
    }
}

/// Bytes of a keyslot area holding an AF-split key: `round_up(key_size * stripes, 4096)`.
pub fn keyslot_area_size(key_size: u64, stripes: u64) -> Option<u64> {
    let raw = key_size.checked_mul(stripes)?;
    Some(raw.checked_add(AREA_ALIGN - 1)? / AREA_ALIGN * AREA_ALIGN)
}

fn keyslot_value(k: &Keyslot) -> Value {
    let k = match k {
        Keyslot::Luks2(k) => k,
        Keyslot::Other(o) => return Value::Object(o.raw.clone()),
    };
    let mut m = JsonMap::new();
    m.insert("type".into(), "luks2".into());
    m.insert("key_size".into(), k.key_size.into());
    let mut af = JsonMap::new();
    af.insert("type".into(), "luks1".into());
    af.insert("stripes".into(), k.af.stripes.into());
    af.insert("hash".into(), k.af.hash.clone().into());
    m.insert("af".into(), Value::Object(af));
    let mut area = JsonMap::new();
    area.insert("type".into(), "raw".into());
    area.insert("offset".into(), u64_str(k.area.offset));
    area.insert("size".into(), u64_str(k.area.size));
    area.insert("encryption".into(), k.area.encryption.clone().into());
    area.insert("key_size".into(), k.area.key_size.into());
    m.insert("area".into(), Value::Object(area));
    let kdf = match &k.kdf {
        Kdf::Pbkdf2 {
            hash,
            iterations,
            salt,
        } => {
            let mut d = JsonMap::new();
            d.insert("type".into(), "pbkdf2".into());
            d.insert("hash".into(), hash.clone().into());
            d.insert("iterations".into(), (*iterations).into());
            d.insert("salt".into(), salt.as_str().into());
            d
        }
        Kdf::Argon2 {
            variant,
            time,
            memory,
            cpus,
            salt,
        } => {
            let mut d = JsonMap::new();
            d.insert("type".into(), variant.name().into());
            d.insert("time".into(), (*time).into());
            d.insert("memory".into(), (*memory).into());
            d.insert("cpus".into(), (*cpus).into());
            d.insert("salt".into(), salt.as_str().into());
            d
        }
        Kdf::Other(map) => map.clone(),
    };
    m.insert("kdf".into(), Value::Object(kdf));
    if let Some(p) = k.priority {
        m.insert("priority".into(), p.as_number().into());
    }
    Value::Object(m)
}

fn segment_value(s: &Segment) -> Value {
    let mut m = JsonMap::new();
    let type_name = match &s.kind {
        SegmentKind::Crypt { .. } => "crypt",
        SegmentKind::Other { type_name, .. } => type_name.as_str(),
    };
    m.insert("type".into(), type_name.into());
    m.insert("offset".into(), u64_str(s.offset));
    m.insert(
        "size".into(),
        match s.size {
            SegmentSize::Dynamic => "dynamic".into(),
            SegmentSize::Bytes(b) => u64_str(b),
        },
    );
    match &s.kind {
        SegmentKind::Crypt {
            iv_tweak,
            encryption,
            sector_size,
            integrity,
        } => {
            m.insert("iv_tweak".into(), u64_str(*iv_tweak));
            m.insert("encryption".into(), encryption.clone().into());
            m.insert("sector_size".into(), (*sector_size).into());
            if let Some(i) = integrity {
                m.insert("integrity".into(), Value::Object(i.clone()));
            }
        }
        SegmentKind::Other { fields, .. } => {
            for (k, v) in fields {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(flags) = &s.flags {
        m.insert(
            "flags".into(),
            Value::Array(flags.iter().map(|f| f.clone().into()).collect()),
        );
    }
    Value::Object(m)
}

fn digest_value(d: &Digest) -> Value {
    let mut m = JsonMap::new();
    let type_name = match &d.kind {
        DigestKind::Pbkdf2(_) => "pbkdf2",
        DigestKind::Other { type_name, .. } => type_name.as_str(),
    };
    m.insert("type".into(), type_name.into());
    m.insert("keyslots".into(), id_array(&d.keyslots));
    m.insert("segments".into(), id_array(&d.segments));
    match &d.kind {
        DigestKind::Pbkdf2(p) => {
            m.insert("hash".into(), p.hash.clone().into());
            m.insert("iterations".into(), p.iterations.into());
            m.insert("salt".into(), p.salt.as_str().into());
            m.insert("digest".into(), p.digest.as_str().into());
        }
        DigestKind::Other { fields, .. } => {
            for (k, v) in fields {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(m)
}

fn config_value(c: &Config) -> Value {
    let mut m = JsonMap::new();
    m.insert("json_size".into(), u64_str(c.json_size));
    m.insert("keyslots_size".into(), u64_str(c.keyslots_size));
    if let Some(flags) = &c.flags {
        m.insert(
            "flags".into(),
            Value::Array(flags.iter().map(|f| f.clone().into()).collect()),
        );
    }
    if let Some(r) = &c.requirements {
        let mut rm = JsonMap::new();
        if let Some(mand) = &r.mandatory {
            rm.insert(
                "mandatory".into(),
                Value::Array(mand.iter().map(|f| f.clone().into()).collect()),
            );
        }
        for (k, v) in &r.fields {
            rm.insert(k.clone(), v.clone());
        }
        m.insert("requirements".into(), Value::Object(rm));
    }
    Value::Object(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
