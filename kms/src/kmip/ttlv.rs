//! KMIP TTLV encoding (KMIP 1.x §9.1): 3-byte tag, 1-byte type, 4-byte big-endian length,
//! value padded with zeros to a multiple of 8 bytes.
//!
//! The decoder is total: it reads through a bounds-checked cursor, limits nesting depth and
//! total length, and names the offending field in its error. Byte strings are zeroized on drop
//! (they carry key material); `Debug` prints only their length.

use std::fmt;

use zeroize::Zeroizing;

/// Deepest structure nesting accepted by [`decode`].
pub const MAX_DEPTH: usize = 16;
/// Largest input accepted by [`decode`] (a KMIP message for one key is a few hundred bytes).
pub const MAX_LEN: usize = 1 << 20;

/// A TTLV tag (24 bits, e.g. `0x420078` Request Message).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(pub u32);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:#08X})", self.0)
    }
}

/// A TTLV value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// 0x01: a sequence of items.
    Structure(Vec<Item>),
    /// 0x02: 32-bit signed.
    Integer(i32),
    /// 0x03: 64-bit signed.
    LongInteger(i64),
    /// 0x04: big-endian two's complement, length a multiple of 8.
    BigInteger(Vec<u8>),
    /// 0x05: 32-bit enumeration.
    Enumeration(u32),
    /// 0x06: 64-bit 0 or 1.
    Boolean(bool),
    /// 0x07: UTF-8.
    TextString(String),
    /// 0x08: bytes (zeroized on drop).
    ByteString(Zeroizing<Vec<u8>>),
    /// 0x09: seconds since the epoch.
    DateTime(i64),
    /// 0x0A: 32-bit seconds.
    Interval(u32),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(items) => f.debug_list().entries(items).finish(),
            Self::Integer(v) => write!(f, "Integer({v})"),
            Self::LongInteger(v) => write!(f, "LongInteger({v})"),
            Self::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Self::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::TextString(v) => write!(f, "TextString({v:?})"),
            Self::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Self::DateTime(v) => write!(f, "DateTime({v})"),
            Self::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

impl Value {
    fn type_byte(&self) -> u8 {
        match self {
            Self::Structure(_) => 0x01,
            Self::Integer(_) => 0x02,
            Self::LongInteger(_) => 0x03,
            Self::BigInteger(_) => 0x04,
            Self::Enumeration(_) => 0x05,
            Self::Boolean(_) => 0x06,
            Self::TextString(_) => 0x07,
            Self::ByteString(_) => 0x08,
            Self::DateTime(_) => 0x09,
            Self::Interval(_) => 0x0A,
        }
    }
}

/// A tagged value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The tag.
    pub tag: Tag,
    /// The value.
    pub value: Value,
}

impl Item {
    /// A new item.
    pub fn new(tag: u32, value: Value) -> Self {
        Self {
            tag: Tag(tag),
            value,
        }
    }
    /// A structure.
    pub fn structure(tag: u32, items: Vec<Item>) -> Self {
        Self::new(tag, Value::Structure(items))
    }
    /// The children of a structure (empty for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }
    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag.0 == tag)
    }
    /// All children with `tag`.
    pub fn children_with(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag.0 == tag)
    }
}

/// Why a byte string is not a valid TTLV item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TTLV: {what} at offset {offset}")]
pub struct DecodeError {
    /// What was wrong.
    pub what: &'static str,
    /// Byte offset in the input.
    pub offset: usize,
}

/// Encodes an item. The buffer is zeroized on drop (it may hold key material).
pub fn encode(item: &Item) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(256));
    encode_into(item, &mut out);
    out
}

fn encode_into(item: &Item, out: &mut Vec<u8>) {
    out.extend_from_slice(&item.tag.0.to_be_bytes()[1..]);
    out.push(item.value.type_byte());
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    match &item.value {
        Value::Structure(items) => items.iter().for_each(|i| encode_into(i, out)),
        Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::BigInteger(v) => out.extend_from_slice(v),
        Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
        Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
        Value::ByteString(v) => out.extend_from_slice(v),
    }
    let len = out.len() - start;
    // Our messages are far below 4 GiB; saturate rather than wrap if a caller builds one.
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    out[len_at..start].copy_from_slice(&len32.to_be_bytes());
    out.resize(start + padded(len), 0);
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// A bounds-checked cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError {
            what,
            offset: self.pos,
        })?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError {
            what,
            offset: self.pos,
        })?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let at = self.pos;
        self.take(N, what)?
            .try_into()
            .map_err(|_| DecodeError { what, offset: at })
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes exactly one item spanning the whole input.
pub fn decode(input: &[u8]) -> Result<Item, DecodeError> {
    if input.len() > MAX_LEN {
        return Err(DecodeError {
            what: "message longer than the limit",
            offset: 0,
        });
    }
    let mut r = Reader { buf: input, pos: 0 };
    let item = read_item(&mut r, 0)?;
    if !r.done() {
        return Err(DecodeError {
            what: "trailing bytes after the message",
            offset: r.pos,
        });
    }
    Ok(item)
}

/// The total length (header + padded value) of the item whose 8-byte header is `header`, for
/// reading a message off a stream. Errors if that exceeds [`MAX_LEN`].
pub fn message_len(header: &[u8; 8]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let len = usize::try_from(len).map_err(|_| DecodeError {
        what: "length",
        offset: 4,
    })?;
    let total = padded(len).checked_add(8).ok_or(DecodeError {
        what: "length",
        offset: 4,
    })?;
    if total > MAX_LEN {
        return Err(DecodeError {
            what: "message longer than the limit",
            offset: 4,
        });
    }
    Ok(total)
}

fn read_item(r: &mut Reader<'_>, depth: usize) -> Result<Item, DecodeError> {
    let at = r.pos;
    let [t0, t1, t2] = r.array::<3>("tag")?;
    let tag = Tag(u32::from_be_bytes([0, t0, t1, t2]));
    let [ty] = r.array::<1>("type")?;
    let len = u32::from_be_bytes(r.array::<4>("length")?);
    let len = usize::try_from(len).map_err(|_| DecodeError {
        what: "length",
        offset: at + 4,
    })?;
    let vstart = r.pos;
    let fixed = |want: usize, what: &'static str| {
        if len == want {
            Ok(())
        } else {
            Err(DecodeError {
                what,
                offset: at + 4,
            })
        }
    };
    let value = match ty {
        0x01 => {
            if depth >= MAX_DEPTH {
                return Err(DecodeError {
                    what: "structure nested too deeply",
                    offset: at,
                });
            }
            let body = r.take(len, "structure value")?;
            let mut inner = Reader { buf: body, pos: 0 };
            let mut items = Vec::new();
            while !inner.done() {
                items.push(read_item(&mut inner, depth + 1).map_err(|mut e| {
                    e.offset = e.offset.saturating_add(vstart);
                    e
                })?);
            }
            Value::Structure(items)
        }
        0x02 => {
            fixed(4, "integer length is not 4")?;
            Value::Integer(i32::from_be_bytes(r.array("integer value")?))
        }
        0x03 => {
            fixed(8, "long integer length is not 8")?;
            Value::LongInteger(i64::from_be_bytes(r.array("long integer value")?))
        }
        0x04 => {
            if len % 8 != 0 {
                return Err(DecodeError {
                    what: "big integer length is not a multiple of 8",
                    offset: at + 4,
                });
            }
            Value::BigInteger(r.take(len, "big integer value")?.to_vec())
        }
        0x05 => {
            fixed(4, "enumeration length is not 4")?;
            Value::Enumeration(u32::from_be_bytes(r.array("enumeration value")?))
        }
        0x06 => {
            fixed(8, "boolean length is not 8")?;
            match u64::from_be_bytes(r.array("boolean value")?) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => {
                    return Err(DecodeError {
                        what: "boolean is neither 0 nor 1",
                        offset: vstart,
                    });
                }
            }
        }
        0x07 => {
            let s = r.take(len, "text string value")?;
            let s = std::str::from_utf8(s).map_err(|_| DecodeError {
                what: "text string is not UTF-8",
                offset: vstart,
            })?;
            Value::TextString(s.to_owned())
        }
        0x08 => Value::ByteString(Zeroizing::new(r.take(len, "byte string value")?.to_vec())),
        0x09 => {
            fixed(8, "date-time length is not 8")?;
            Value::DateTime(i64::from_be_bytes(r.array("date-time value")?))
        }
        0x0A => {
            fixed(4, "interval length is not 4")?;
            Value::Interval(u32::from_be_bytes(r.array("interval value")?))
        }
        _ => {
            return Err(DecodeError {
                what: "unknown item type",
                offset: at + 3,
            });
        }
    };
    // Padding: present up to the next multiple of 8 (contents not checked, as PyKMIP does not).
    let pad = padded(len) - len;
    if pad > 0 {
        r.take(pad, "padding")?;
    }
    Ok(Item { tag, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Item {
        Item::structure(
            0x420078,
            vec![
                Item::structure(
                    0x420077,
                    vec![
                        Item::structure(
                            0x420069,
                            vec![
                                Item::new(0x42006A, Value::Integer(1)),
                                Item::new(0x42006B, Value::Integer(4)),
                            ],
                        ),
                        Item::new(0x42000D, Value::Integer(1)),
                    ],
                ),
                Item::new(0x420094, Value::TextString("key-1".into())),
                Item::new(0x4200C2, Value::ByteString(Zeroizing::new(vec![7; 13]))),
                Item::new(0x420011, Value::Enumeration(9)),
                Item::new(0x420001, Value::Boolean(true)),
                Item::new(0x420002, Value::LongInteger(-5)),
                Item::new(0x420003, Value::BigInteger(vec![1; 16])),
                Item::new(0x420092, Value::DateTime(1_700_000_000)),
                Item::new(0x420004, Value::Interval(30)),
            ],
        )
    }

    /// KMIP 1.4 test cases §9.1.2 list these encodings (written here from the spec's rules).
    #[test]
    fn known_encodings() {
        let e = |i: Item| hex::encode(&*encode(&i));
        assert_eq!(
            e(Item::new(0x420020, Value::Integer(8))),
            "42002002000000040000000800000000"
        );
        assert_eq!(
            e(Item::new(0x420020, Value::TextString("Hello World".into()))),
            "420020070000000b48656c6c6f20576f726c640000000000"
        );
        assert_eq!(
            e(Item::new(
                0x420020,
                Value::ByteString(Zeroizing::new(vec![1, 2, 3]))
            )),
            "42002008000000030102030000000000"
        );
        assert_eq!(
            e(Item::new(0x420020, Value::Boolean(true))),
            "42002006000000080000000000000001"
        );
        assert_eq!(
            e(Item::structure(
                0x420020,
                vec![
                    Item::new(0x420004, Value::Enumeration(254)),
                    Item::new(0x420005, Value::Integer(255))
                ]
            )),
            "42002001000000204200040500000004000000fe000000004200050200000004000000ff00000000"
        );
    }

    #[test]
    fn round_trip() {
        let item = sample();
        let bytes = encode(&item);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes).unwrap(), item);
        let header: [u8; 8] = bytes[..8].try_into().unwrap();
        assert_eq!(message_len(&header).unwrap(), bytes.len());
    }

    #[test]
    fn every_truncation_fails() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&longer).unwrap_err().what,
            "trailing bytes after the message"
        );
    }

    #[test]
    fn rejects_bad_items() {
        let cases: [(&str, &str); 7] = [
            (
                "4200200200000005000000080000000000",
                "integer length is not 4",
            ),
            (
                "42002006000000080000000000000002",
                "boolean is neither 0 nor 1",
            ),
            (
                "420020070000000200ff000000000000",
                "text string is not UTF-8",
            ),
            ("420020ff000000000000000000000000", "unknown item type"),
            (
                "4200200100000010420021020000000400000001",
                "structure value",
            ),
            (
                "42002004000000040000000100000000",
                "big integer length is not a multiple of 8",
            ),
            ("420020080fffffff", "byte string value"),
        ];
        for (h, what) in cases {
            let err = decode(&hex::decode(h).unwrap()).unwrap_err();
            assert_eq!(err.what, what, "{h}");
        }
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut item = Item::new(0x420001, Value::Integer(1));
        for _ in 0..MAX_DEPTH {
            item = Item::structure(0x420002, vec![item]);
        }
        assert!(decode(&encode(&item)).is_ok());
        let deeper = Item::structure(0x420002, vec![item]);
        assert_eq!(
            decode(&encode(&deeper)).unwrap_err().what,
            "structure nested too deeply"
        );
        assert!(decode(&vec![0; MAX_LEN + 1]).is_err());
        assert!(message_len(&[0x42, 0, 0x7B, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    /// A cheap in-tree stand-in for the fuzz target: mutated messages never panic, and whatever
    /// decodes re-encodes to the same length and decodes to the same item.
    #[test]
    fn mutations_never_panic_and_round_trip() {
        let base = encode(&sample()).to_vec();
        let mut rnd = vec![0u8; 4 * 20_000];
        getrandom::fill(&mut rnd).unwrap();
        let mut decoded = 0;
        for r in rnd.chunks_exact(4) {
            let mut m = base.clone();
            let at = usize::from(u16::from_be_bytes([r[0], r[1]])) % m.len();
            match r[2] % 4 {
                0 => m[at] ^= 1 << (r[3] % 8),
                1 => m[at] = r[3],
                2 => m.truncate(at),
                _ => m.insert(at, r[3]),
            }
            if let Ok(item) = decode(&m) {
                decoded += 1;
                let again = encode(&item);
                assert_eq!(again.len(), m.len());
                assert_eq!(decode(&again).unwrap(), item);
            }
        }
        assert!(
            decoded > 0,
            "some mutations (e.g. of values) must still decode"
        );
    }

    #[test]
    fn debug_hides_bytes() {
        let i = Item::new(0x4200C2, Value::ByteString(Zeroizing::new(vec![0x41; 4])));
        assert_eq!(
            format!("{i:?}"),
            "Item { tag: Tag(0x4200C2), value: ByteString(4 bytes) }"
        );
    }
}
