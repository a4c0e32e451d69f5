//! A JSON reader that accepts what cryptsetup's JSON library (json-c 0.16, non-strict mode)
//! accepts, so that we load exactly the headers cryptsetup loads.
//!
//! Beyond RFC 8259 that means: `/* */` and `//` comments wherever whitespace may appear,
//! single-quoted strings and keys, a trailing comma before `]` or `}`, case-insensitive
//! `true`/`false`/`null`, `NaN` and `Infinity`, leading zeros (`032` is 32), integers that
//! overflow 64 bits saturate, raw control characters and arbitrary bytes (but NUL) inside
//! strings, a NUL ending a comment after the top-level value, and
//! a nesting limit of 32 levels (the value at the top counts as level 0; a child at level 32 is
//! an error). Whitespace is only space, tab, CR and LF.
//!
//! Mapping to [`serde_json::Value`]: strings that are not UTF-8 are decoded lossily, object keys
//! end at an embedded NUL (json-c copies them as C strings), non-finite numbers become `null`
//! (no check cryptsetup makes can tell a non-finite double from `null`), a repeated key keeps its
//! first position and its last value.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// json-c's default maximum depth.
const MAX_DEPTH: usize = 32;

/// A parsed value and facts about its text.
pub(super) struct Parsed {
    /// The value.
    pub(super) value: Value,
    /// Offset just past the value and the whitespace and comments after it.
    pub(super) end: usize,
    /// Bytes added by decoding invalid UTF-8 lossily (json-c would re-serialize the original
    /// bytes, so size checks subtract this).
    pub(super) lossy_extra: usize,
}

/// Parses one JSON value at the start of `input` and the whitespace and comments after it.
/// Reaching the end of `input` inside the value is an error.
pub(super) fn parse_prefix(input: &[u8]) -> Result<Parsed> {
    let mut p = Parser {
        s: input,
        pos: 0,
        lossy_extra: 0,
    };
    p.skip_ws(false)?;
    let v = p.value(0)?;
    // Whitespace and comments after the value are consumed too. json-c stops at the first NUL
    // byte; inside a trailing comment that ends the parse successfully, just past the NUL.
    p.skip_ws(true)?;
    Ok(Parsed {
        value: v,
        end: p.pos,
        lossy_extra: p.lossy_extra,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    lossy_extra: usize,
}

fn err(what: impl Into<String>) -> Error {
    Error::Json(what.into())
}

impl Parser<'_> {
    fn text(&mut self, bytes: &[u8]) -> String {
        let s = String::from_utf8_lossy(bytes).into_owned();
        self.lossy_extra += s.len().saturating_sub(bytes.len());
        s
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8> {
        let c = self.peek().ok_or_else(|| err("unexpected end of JSON"))?;
        self.pos += 1;
        Ok(c)
    }

    fn at(&self, what: &str) -> Error {
        err(format!("{what} at offset {}", self.pos))
    }

    /// Whitespace and comments; a malformed or unterminated comment is an error, except that
    /// after the top-level value (`after_value`) a NUL inside a comment ends the input.
    fn skip_ws(&mut self, after_value: bool) -> Result<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') => {
                    self.pos += 1;
                    let line = match self.next()? {
                        b'*' => false,
                        b'/' => true,
                        _ => return Err(self.at("malformed comment")),
                    };
                    loop {
                        let c = self.next()?;
                        if c == 0 {
                            if after_value {
                                return Ok(());
                            }
                            return Err(self.at("NUL inside a comment"));
                        }
                        if line && c == b'\n' {
                            break;
                        }
                        if !line && c == b'*' && self.peek() == Some(b'/') {
                            self.pos += 1;
                            break;
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let c = self.peek().ok_or_else(|| err("unexpected end of JSON"))?;
        match c {
            b'{' => {
                self.pos += 1;
                self.object(depth)
            }
            b'[' => {
                self.pos += 1;
                self.array(depth)
            }
            b'"' | b'\'' => {
                self.pos += 1;
                let bytes = self.string(c)?;
                Ok(Value::String(self.text(&bytes)))
            }
            b't' | b'T' => self.literal(b"true", Value::Bool(true)),
            b'f' | b'F' => self.literal(b"false", Value::Bool(false)),
            b'n' | b'N' => {
                if self
                    .s
                    .get(self.pos + 1)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b'a'))
                {
                    self.literal(b"nan", Value::Null)
                } else {
                    self.literal(b"null", Value::Null)
                }
            }
            b'i' | b'I' => self.infinity(),
            b'0'..=b'9' | b'-' => self.number(depth),
            _ => Err(self.at("unexpected character")),
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value> {
        for &w in word {
            let c = self.next()?;
            if !c.eq_ignore_ascii_case(&w) {
                return Err(self.at("invalid literal"));
            }
        }
        Ok(v)
    }

    /// `Infinity`, each letter in its own case or the inverted case (json-c's rule).
    fn infinity(&mut self) -> Result<Value> {
        for (&a, &b) in b"Infinity".iter().zip(b"iNFINITY") {
            let c = self.next()?;
            if c != a && c != b {
                return Err(self.at("invalid literal"));
            }
        }
        Ok(Value::Null)
    }

    fn object(&mut self, depth: usize) -> Result<Value> {
        let mut map = Map::new();
        self.skip_ws(false)?;
        loop {
            // Here: at the start, or after a comma (a trailing comma is fine).
            match self.next()? {
                b'}' => return Ok(Value::Object(map)),
                q @ (b'"' | b'\'') => {
                    let raw = self.string(q)?;
                    let key_bytes = raw.split(|&b| b == 0).next().unwrap_or_default();
                    let key = self.text(key_bytes);
                    self.skip_ws(false)?;
                    if self.next()? != b':' {
                        return Err(self.at("expected ':'"));
                    }
                    self.skip_ws(false)?;
                    if depth + 1 >= MAX_DEPTH {
                        return Err(self.at("JSON nested too deeply"));
                    }
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                    self.skip_ws(false)?;
                    match self.next()? {
                        b'}' => return Ok(Value::Object(map)),
                        b',' => self.skip_ws(false)?,
                        _ => return Err(self.at("expected ',' or '}'")),
                    }
                }
                _ => return Err(self.at("expected a key")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        let mut items = Vec::new();
        self.skip_ws(false)?;
        loop {
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            if depth + 1 >= MAX_DEPTH {
                return Err(self.at("JSON nested too deeply"));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws(false)?;
            match self.next()? {
                b']' => return Ok(Value::Array(items)),
                b',' => self.skip_ws(false)?,
                _ => return Err(self.at("expected ',' or ']'")),
            }
        }
    }

    /// The bytes of a string whose opening `quote` was consumed.
    fn string(&mut self, quote: u8) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut high: Option<u32> = None;
        loop {
            let c = self.next()?;
            if c == 0 {
                // json-c treats a NUL byte as the end of its input.
                return Err(self.at("NUL inside a string"));
            }
            if c == quote {
                if high.take().is_some() {
                    push_char(&mut out, char::REPLACEMENT_CHARACTER);
                }
                return Ok(out);
            }
            if c != b'\\' {
                if high.take().is_some() {
                    push_char(&mut out, char::REPLACEMENT_CHARACTER);
                }
                out.push(c);
                continue;
            }
            let e = self.next()?;
            if e != b'u' && high.take().is_some() {
                push_char(&mut out, char::REPLACEMENT_CHARACTER);
            }
            match e {
                b'"' | b'\\' | b'/' => out.push(e),
                b'b' => out.push(0x08),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'f' => out.push(0x0c),
                b'u' => {
                    let mut cp = 0u32;
                    for _ in 0..4 {
                        let h = self.next()?;
                        let d = char::from(h)
                            .to_digit(16)
                            .ok_or_else(|| self.at("invalid \\u escape"))?;
                        cp = cp << 4 | d;
                    }
                    if let Some(hi) = high.take() {
                        if (0xdc00..0xe000).contains(&cp) {
                            let full = 0x10000 + ((hi - 0xd800) << 10) + (cp - 0xdc00);
                            push_char(
                                &mut out,
                                char::from_u32(full).unwrap_or(char::REPLACEMENT_CHARACTER),
                            );
                            continue;
                        }
                        push_char(&mut out, char::REPLACEMENT_CHARACTER);
                    }
                    if (0xd800..0xdc00).contains(&cp) {
                        high = Some(cp);
                    } else {
                        // Lone low surrogates are not chars: replacement character.
                        push_char(
                            &mut out,
                            char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER),
                        );
                    }
                }
                _ => return Err(self.at("invalid escape")),
            }
        }
    }

    fn number(&mut self, depth: usize) -> Result<Value> {
        let start = self.pos;
        let (mut is_double, mut exponent) = (false, false);
        let (mut neg_ok, mut pos_ok) = (true, false);
        while let Some(c) = self.peek() {
            let accept = c.is_ascii_digit()
                || (!exponent && (c == b'e' || c == b'E'))
                || (neg_ok && c == b'-')
                || (pos_ok && c == b'+')
                || (!is_double && c == b'.');
            if !accept {
                break;
            }
            neg_ok = false;
            pos_ok = false;
            match c {
                b'.' => {
                    is_double = true;
                    neg_ok = true;
                    pos_ok = true;
                }
                b'e' | b'E' => {
                    exponent = true;
                    is_double = true;
                    neg_ok = true;
                    pos_ok = true;
                }
                _ => {}
            }
            self.pos += 1;
        }
        let Some(next) = self.peek() else {
            return Err(err("unexpected end of JSON in a number"));
        };
        let mut text = self.s.get(start..self.pos).unwrap_or_default();
        if text == b"-" && (next == b'i' || next == b'I') {
            self.infinity()?;
            return Ok(Value::Null);
        }
        if depth > 0
            && !matches!(
                next,
                b',' | b']' | b'}' | b'/' | b'I' | b'i' | b' ' | b'\t' | b'\n' | b'\r'
            )
        {
            return Err(self.at("invalid number"));
        }
        if is_double {
            while text.len() > 1 && matches!(text.last(), Some(b'e' | b'E' | b'-' | b'+')) {
                text = text.get(..text.len() - 1).unwrap_or_default();
            }
            let s = std::str::from_utf8(text).map_err(|_| self.at("invalid number"))?;
            // strtod accepts forms Rust's parser does not ("1.", "-.5", ".5e3"); normalize.
            let f = parse_c_double(s).ok_or_else(|| self.at("invalid number"))?;
            return Ok(Number::from_f64(f).map_or(Value::Null, Value::Number));
        }
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        if digits.is_empty() {
            return Err(self.at("invalid number"));
        }
        let mut v: u64 = 0;
        let mut overflow = false;
        for &d in digits {
            match v
                .checked_mul(10)
                .and_then(|x| x.checked_add(u64::from(d - b'0')))
            {
                Some(n) => v = n,
                None => overflow = true,
            }
        }
        if text.first() == Some(&b'-') {
            // strtoll saturates at i64::MIN.
            let magnitude = if overflow { u64::MAX } else { v };
            let n = if magnitude > i64::MAX as u64 {
                i64::MIN
            } else {
                -(magnitude as i64)
            };
            Ok(Value::Number(n.into()))
        } else {
            Ok(Value::Number(if overflow { u64::MAX } else { v }.into()))
        }
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// A decimal floating-point literal as C's `strtod` reads it, restricted to the characters the
/// number scanner collects (digits, one `.`, one exponent, signs). The whole text must be used.
fn parse_c_double(s: &str) -> Option<f64> {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
        None => (s, None),
    };
    let (neg, m) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int_part, frac_part) = match m.split_once('.') {
        Some((a, b)) => (a, b),
        None => (m, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let exp_text = match exp {
        None | Some("") => "0".to_owned(),
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            e.to_owned()
        }
    };
    let normalized = format!(
        "{}{}.{}e{}",
        if neg { "-" } else { "" },
        if int_part.is_empty() { "0" } else { int_part },
        if frac_part.is_empty() { "0" } else { frac_part },
        exp_text
    );
    normalized.parse::<f64>().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Value> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        parse_prefix(&bytes).map(|p| p.value)
    }

    #[test]
    fn standard_json_matches_serde() {
        let text =
            r#"{"a":[1,-2,3.5,true,false,null,"x\u00e9\n\/"],"b":{"c":18446744073709551615}}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn json_c_leniencies() {
        assert_eq!(
            parse("{/* c */'a':1,// x\n\"b\":[1,2,],}").unwrap(),
            json!({"a":1,"b":[1,2]})
        );
        assert_eq!(
            parse("{\"a\":TRUE,\"b\":Null,\"c\":fAlSe}").unwrap(),
            json!({"a":true,"b":null,"c":false})
        );
        assert_eq!(parse("{\"a\":032}").unwrap(), json!({"a":32}));
        assert_eq!(
            parse("{\"a\":99999999999999999999}").unwrap(),
            json!({"a":u64::MAX})
        );
        assert_eq!(
            parse("{\"a\":-99999999999999999999}").unwrap(),
            json!({"a":i64::MIN})
        );
        assert_eq!(
            parse("{\"a\":\"x\u{1}y\"}").unwrap(),
            json!({"a":"x\u{1}y"})
        );
        assert_eq!(
            parse("{\"a\":NaN,\"b\":-Infinity,\"c\":iNFINITY}").unwrap(),
            json!({"a":null,"b":null,"c":null})
        );
        assert_eq!(
            parse("{\"a\":1.,\"b\":-.5,\"c\":2e+}").unwrap(),
            json!({"a":1.0,"b":-0.5,"c":2.0})
        );
        assert_eq!(
            parse("{\"a\":1,\"a\":2,\"b\":3}").unwrap(),
            json!({"a":2,"b":3})
        );
        assert_eq!(
            parse("{\"\\ud83d\\ude00\":\"\\ud800x\"}").unwrap(),
            json!({"😀":"\u{fffd}x"})
        );
    }

    #[test]
    fn rejects_what_json_c_rejects() {
        for bad in [
            "{\"a\":1",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":\"\\x\"}",
            "{\"a\":01x}",
            "{\"a\":[1 2]}",
            "{\"a\":truth}",
            "{\"a\":-}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":/x/1}",
            "{,}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lossy_expansion_is_counted() {
        let p = parse_prefix(b"{\"a\xff\":\"\xff\xfe\"}\0").unwrap();
        assert_eq!(p.value, json!({"a\u{fffd}": "\u{fffd}\u{fffd}"}));
        assert_eq!(p.lossy_extra, 6);
    }

    #[test]
    fn depth_limit() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&format!("{{\"a\":{}}}", nest(30))).is_ok());
        assert!(parse(&format!("{{\"a\":{}}}", nest(31))).is_err());
        // An empty container may sit at the last level.
        assert!(parse(&format!("{{\"a\":{}}}", nest(30).replace("1", "[]"))).is_ok());
    }

    #[test]
    fn end_offset_includes_trailing_whitespace_and_comments() {
        let end = parse_prefix(b"{} /* x */ \n\0\0").unwrap().end;
        assert_eq!(end, 12);
        assert!(parse_prefix(b"{} /* never closed").is_err());
        let end = parse_prefix(b"{} /* closed by NUL\0\0").unwrap().end;
        assert_eq!(end, 20, "just past the NUL");
        assert!(parse_prefix(b"{\"a\":\"x\0y\"}\0").is_err());
        assert!(parse_prefix(b"{} /x").is_err());
        assert!(parse_prefix(b"{\"a\":1").is_err());
    }
}
