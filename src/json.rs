//! Core: a small JSON reader for the shapes annals decodes itself (the binding's inputs,
//! the sync protocol's answers, the records it keeps in `meta`).
//!
//! Why not serde's derived `Deserialize`: in the wasm, every derived struct brings its own
//! copy of serde_json's generic machinery, its error formatting and float formatting, a
//! fifth of the package's size. This reader is one non-generic pull parser; each decoder
//! is a loop over the fields it knows. It is strict like serde_json (RFC 8259, no
//! trailing commas, nesting bounded) and its errors say what is wrong and where, like
//! serde_json's: "unknown field `x` at line 1 column 12". Serialising stays with serde.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// How deep arrays and objects may nest (serde_json's limit too): deeper input is refused
/// rather than overflowing the stack.
const MAX_DEPTH: u32 = 128;

/// What is wrong with a JSON text, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line} column {column}")]
pub struct JsonError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

pub type JsonResult<T> = std::result::Result<T, JsonError>;

/// A pull parser over one JSON text. Decoders call the method for the value they expect
/// next; each checks the grammar as it goes.
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

/// Decodes `text` with `decode`, which must read exactly one value; only whitespace may
/// follow it.
pub fn parse<'a, T>(
    text: &'a str,
    decode: impl FnOnce(&mut Reader<'a>) -> JsonResult<T>,
) -> JsonResult<T> {
    let mut reader = Reader::new(text);
    let value = decode(&mut reader)?;
    reader.end()?;
    Ok(value)
}

/// Checks that `text` is one JSON value and nothing else.
pub fn validate(text: &str) -> JsonResult<()> {
    parse(text, |r| r.raw().map(|_| ()))
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            pos: 0,
            depth: 0,
        }
    }

    /// An error at the reader's position (line and column 1-based, as serde_json counts).
    pub fn error(&self, message: impl Into<String>) -> JsonError {
        self.error_at(self.pos, message.into())
    }

    fn error_at(&self, pos: usize, message: String) -> JsonError {
        let before = &self.text.as_bytes()[..pos.min(self.text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + pos
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        JsonError {
            message,
            line,
            column,
        }
    }

    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The next value is `null`.
    pub fn peek_null(&mut self) -> bool {
        self.peek() == Some(b'n')
    }

    /// What the next value is, for error messages ("expected a string, found a number").
    fn found(&mut self) -> &'static str {
        match self.peek() {
            None => "the end of the input",
            Some(b'"') => "a string",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(_) => "an unexpected character",
        }
    }

    fn expected(&mut self, what: &str) -> JsonError {
        let found = self.found();
        self.error(format!("invalid type: expected {what}, found {found}"))
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> JsonResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    fn literal(&mut self, word: &str) -> JsonResult<()> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected value"))
        }
    }

    /// Consumes a `null` if one is next; whether it did.
    pub fn null(&mut self) -> JsonResult<bool> {
        if self.peek_null() {
            self.literal("null")?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn bool(&mut self) -> JsonResult<bool> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.expected("a boolean")),
        }
    }

    /// A boolean, or `null` for none.
    pub fn opt_bool(&mut self) -> JsonResult<Option<bool>> {
        if self.null()? {
            return Ok(None);
        }
        self.bool().map(Some)
    }

    /// A whole number from 0 to `u64::MAX`, written without fraction or exponent (as
    /// serde_json reads a `u64`).
    pub fn u64(&mut self) -> JsonResult<u64> {
        let start = match self.peek() {
            Some(b'0'..=b'9') => self.pos,
            Some(b'-') => return Err(self.error("invalid value: expected a non-negative integer")),
            _ => return Err(self.expected("a non-negative integer")),
        };
        let raw = self.number()?;
        if raw.bytes().any(|b| !b.is_ascii_digit()) {
            return Err(self.error_at(
                start,
                "invalid type: expected an integer, found a fraction".into(),
            ));
        }
        raw.parse()
            .map_err(|_| self.error_at(start, "number out of range".into()))
    }

    /// A whole number that fits `T` (a `u32`, a `usize`).
    pub fn uint<T: TryFrom<u64>>(&mut self) -> JsonResult<T> {
        let start = self.pos;
        let value = self.u64()?;
        T::try_from(value).map_err(|_| self.error_at(start, format!("number {value} out of range")))
    }

    /// A whole number, or `null` for none.
    pub fn opt_uint<T: TryFrom<u64>>(&mut self) -> JsonResult<Option<T>> {
        if self.null()? {
            return Ok(None);
        }
        self.uint().map(Some)
    }

    /// A number's text, checked against JSON's grammar.
    fn number(&mut self) -> JsonResult<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        let mut pos = self.pos;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        let int_start = pos;
        let int = digits(&mut pos);
        if int == 0 || (int > 1 && bytes[int_start] == b'0') {
            self.pos = int_start;
            return Err(self.error("invalid number"));
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.error("invalid number"));
            }
        }
        self.pos = pos;
        Ok(&self.text[start..pos])
    }

    /// A string, unescaped (borrowed when it holds no escape).
    pub fn string(&mut self) -> JsonResult<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(self.expected("a string"));
        }
        let (raw, escaped) = self.string_span()?;
        let inner = &raw[1..raw.len() - 1];
        if !escaped {
            return Ok(Cow::Borrowed(inner));
        }
        let mut out = String::with_capacity(inner.len());
        let mut rest = inner;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let b = rest.as_bytes()[at + 1];
            rest = &rest[at + 2..];
            let c = match b {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                // `u`: string_span checked the four hex digits (and a low surrogate after
                // a high one); a lone surrogate is refused here, as serde_json does.
                _ => {
                    let unit = hex4(rest);
                    rest = &rest[4..];
                    let code = if (0xD800..0xDC00).contains(&unit) {
                        let low = rest
                            .strip_prefix("\\u")
                            .map(hex4)
                            .filter(|low| (0xDC00..0xE000).contains(low));
                        match low {
                            Some(low) => {
                                rest = &rest[6..];
                                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                            }
                            None => return Err(self.error("lone leading surrogate in hex escape")),
                        }
                    } else {
                        unit
                    };
                    char::from_u32(code)
                        .ok_or_else(|| self.error("lone trailing surrogate in hex escape"))?
                }
            };
            out.push(c);
        }
        out.push_str(rest);
        Ok(Cow::Owned(out))
    }

    /// A string, owned.
    pub fn owned_string(&mut self) -> JsonResult<String> {
        self.string().map(Cow::into_owned)
    }

    /// A string, or `null` for none.
    pub fn opt_string(&mut self) -> JsonResult<Option<String>> {
        if self.null()? {
            return Ok(None);
        }
        self.owned_string().map(Some)
    }

    /// The text of the string at the reader (quotes included), checked; whether it holds
    /// an escape.
    fn string_span(&mut self) -> JsonResult<(&'a str, bool)> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut pos = start + 1;
        let mut escaped = false;
        loop {
            // Most of a string is plain text: skip it in one tight loop.
            pos += bytes[pos.min(bytes.len())..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len().saturating_sub(pos));
            match bytes.get(pos) {
                None => {
                    self.pos = pos;
                    return Err(self.error("EOF while parsing a string"));
                }
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match bytes.get(pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => pos += 2,
                        Some(b'u')
                            if bytes.len() >= pos + 6
                                && bytes[pos + 2..pos + 6].iter().all(u8::is_ascii_hexdigit) =>
                        {
                            pos += 6
                        }
                        _ => {
                            self.pos = pos;
                            return Err(self.error("invalid escape"));
                        }
                    }
                }
                Some(&b) if b < 0x20 => {
                    self.pos = pos;
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
                Some(_) => pos += 1,
            }
        }
        self.pos = pos + 1;
        Ok((&self.text[start..=pos], escaped))
    }

    /// The text of the next value, whatever it is, checked against JSON's grammar.
    pub fn raw(&mut self) -> JsonResult<&'a str> {
        self.skip_ws();
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.text[start..self.pos])
    }

    /// The next value as a [`RawValue`], copied verbatim.
    pub fn raw_value(&mut self) -> JsonResult<Box<RawValue>> {
        let start = self.pos;
        let text = self.raw()?;
        checked_raw(text).map_err(|e| self.error_at(start, e.to_string()))
    }

    /// The next value as a [`Value`] (objects with sorted keys: serde_json's map without
    /// `preserve_order`; numbers as serde_json reads them).
    pub fn value(&mut self) -> JsonResult<Value> {
        match self.peek() {
            Some(b'"') => self.owned_string().map(Value::String),
            Some(b'{') => {
                let mut map = Map::new();
                self.object(&mut |r, key| {
                    let value = r.value()?;
                    map.insert(key.to_owned(), value);
                    Ok(())
                })?;
                Ok(Value::Object(map))
            }
            Some(b'[') => self.list(Reader::value).map(Value::Array),
            Some(b't' | b'f') => self.bool().map(Value::Bool),
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let raw = self.number()?;
                let whole = !raw.contains(['.', 'e', 'E']);
                // Whole numbers that fit 64 bits stay exact; others are read as `f64`.
                let exact = match whole {
                    true if raw.starts_with('-') => raw.parse::<i64>().ok().map(Number::from),
                    true => raw.parse::<u64>().ok().map(Number::from),
                    false => None,
                };
                exact
                    .or_else(|| raw.parse::<f64>().ok().and_then(Number::from_f64))
                    .map(Value::Number)
                    .ok_or_else(|| self.error_at(start, "number out of range".into()))
            }
            None => Err(self.error("EOF while parsing a value")),
            Some(_) => Err(self.error("expected value")),
        }
    }

    /// A JSON object's text (for `meta`), or `null` for none.
    pub fn opt_raw_object(&mut self, name: &str) -> JsonResult<Option<Box<RawValue>>> {
        match self.peek() {
            Some(b'n') => self.null().map(|_| None),
            Some(b'{') => self.raw_value().map(Some),
            _ => {
                let found = self.found();
                Err(self.error(format!("`{name}` must be an object, found {found}")))
            }
        }
    }

    fn skip_value(&mut self) -> JsonResult<()> {
        match self.peek() {
            Some(b'"') => self.string_span().map(|_| ()),
            Some(b'{') => self.object(&mut |r, _| r.skip_value()),
            Some(b'[') => self.array(&mut |r| r.skip_value()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            None => Err(self.error("EOF while parsing a value")),
            Some(_) => Err(self.error("expected value")),
        }
    }

    fn enter(&mut self) -> JsonResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Reads an object, calling `field` with each key; `field` must read the value.
    /// (`dyn`: one copy of the loop serves every decoder.)
    pub fn object(
        &mut self,
        field: &mut dyn FnMut(&mut Self, &str) -> JsonResult<()>,
    ) -> JsonResult<()> {
        if self.peek() != Some(b'{') {
            return Err(self.expected("an object"));
        }
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("key must be a string"));
            }
            let key = self.string()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.pos += 1;
            field(self, &key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// Reads an array, calling `item` for each element; `item` must read it.
    pub fn array(&mut self, item: &mut dyn FnMut(&mut Self) -> JsonResult<()>) -> JsonResult<()> {
        if self.peek() != Some(b'[') {
            return Err(self.expected("an array"));
        }
        self.enter()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                None => return Err(self.error("EOF while parsing a list")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// Reads an array of values that `item` decodes.
    pub fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> JsonResult<T>,
    ) -> JsonResult<Vec<T>> {
        let mut out = Vec::new();
        self.array(&mut |r| {
            out.push(item(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The error for a key that the shape being read does not have.
    pub fn unknown_field(&self, key: &str) -> JsonError {
        self.error(format!("unknown field `{key}`"))
    }

    /// The error for a key given twice.
    pub fn duplicate_field(&self, key: &str) -> JsonError {
        self.error(format!("duplicate field `{key}`"))
    }

    /// Reads a field's value into `slot` with `read`, refusing a key given twice.
    pub fn once<T>(
        &mut self,
        slot: &mut Option<T>,
        key: &str,
        read: impl FnOnce(&mut Self) -> JsonResult<T>,
    ) -> JsonResult<()> {
        if slot.is_some() {
            return Err(self.duplicate_field(key));
        }
        *slot = Some(read(self)?);
        Ok(())
    }

    /// The error for a required key left out.
    pub fn missing_field(&self, key: &str) -> JsonError {
        self.error(format!("missing field `{key}`"))
    }
}

/// A required field's value.
pub fn required<T>(reader: &Reader<'_>, slot: Option<T>, key: &str) -> JsonResult<T> {
    slot.ok_or_else(|| reader.missing_field(key))
}

/// A [`RawValue`] of `text`, which must be one JSON value that was checked already (by
/// this reader, or written by annals): copied, not parsed again. Through serde_json's
/// raw-value channel, the way `RawValue` itself is serialised.
pub(crate) fn checked_raw(text: &str) -> serde_json::Result<Box<RawValue>> {
    /// serde_json writes a struct of this name verbatim.
    const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";
    struct Verbatim<'a>(&'a str);
    impl Serialize for Verbatim<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
            s.serialize_field(RAW_VALUE_TOKEN, self.0)?;
            s.end()
        }
    }
    serde_json::value::to_raw_value(&Verbatim(text))
}

/// `text` as a [`RawValue`] if it is one JSON value (parsed once, by this reader).
pub fn raw_value(text: &str) -> JsonResult<Box<RawValue>> {
    parse(text, Reader::raw_value)
}

/// `text` as a [`Value`] if it is one JSON value.
pub fn value(text: &str) -> JsonResult<Value> {
    parse(text, Reader::value)
}

/// The string field `name` of an object (`None` when absent or `null`), the other fields
/// skipped: `meta.correlationId` and the like.
pub fn string_field(r: &mut Reader<'_>, name: &str) -> JsonResult<Option<String>> {
    let mut found = None;
    r.object(&mut |r, key| {
        if key == name {
            r.once(&mut found, key, Reader::opt_string)
        } else {
            r.raw().map(|_| ())
        }
    })?;
    Ok(found.flatten())
}

/// The value of four hex digits that the string scan checked.
fn hex4(s: &str) -> u32 {
    s.as_bytes()[..4].iter().fold(0, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (acc << 4) | u32::from(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_serde_json_accepts() {
        for text in [
            "null",
            " true ",
            "0",
            "-0.5e+10",
            "1E3",
            r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
            r#"{"a":[1,{"b":null}],"c":{}}"#,
            "[]",
            "[[[]]]",
        ] {
            assert!(validate(text).is_ok(), "{text}");
            assert!(serde_json::from_str::<&RawValue>(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            "nul",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "[1 2]",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "1 2",
            "NaN",
            "[",
            "{\"a\":",
        ] {
            assert!(validate(text).is_err(), "{text:?}");
            assert!(serde_json::from_str::<&RawValue>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(100_000);
        assert!(validate(&deep)
            .unwrap_err()
            .message
            .contains("recursion limit"));
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(validate(&ok).is_ok());
    }

    #[test]
    fn strings_unescape() {
        let read = |t: &str| parse(t, |r| r.owned_string());
        assert_eq!(read(r#""plain""#).unwrap(), "plain");
        assert_eq!(read(r#""a\nb\u00e9\ud83d\ude00""#).unwrap(), "a\nbé😀");
        assert!(read(r#""\ud83d""#).is_err());
        assert!(read(r#""\ude00""#).is_err());
        assert!(read("5")
            .unwrap_err()
            .message
            .contains("expected a string, found a number"));
    }

    #[test]
    fn whole_numbers_are_whole() {
        let read = |t: &str| parse(t, |r| r.u64());
        assert_eq!(read("0").unwrap(), 0);
        assert_eq!(read("18446744073709551615").unwrap(), u64::MAX);
        assert!(read("18446744073709551616").is_err());
        assert!(read("1.5").is_err());
        assert!(read("1e3").is_err());
        assert!(read("-1").is_err());
        assert!(parse("4294967296", |r| r.uint::<u32>()).is_err());
    }

    #[test]
    fn raw_values_are_verbatim_and_values_match_serde_json() {
        let text = r#"{"b":[1,-2,1.5,1e400000000,18446744073709551616,-9223372036854775809],"a":"\u00e9"}"#;
        assert!(value(text).is_err()); // 1e400000000 is out of range, as for serde_json
        assert!(serde_json::from_str::<Value>(text).is_err());
        let text = r#"{"b":[1,-2,1.5,1e3,18446744073709551616,-9223372036854775809,0.1],"a":"\u00e9","c":{}}"#;
        assert_eq!(
            value(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(
            value(text).unwrap().to_string(),
            serde_json::from_str::<Value>(text).unwrap().to_string()
        );
        assert_eq!(raw_value(text).unwrap().get(), text);
        assert!(raw_value("[1,").is_err());
    }

    #[test]
    fn errors_say_where() {
        let err = parse("{\n  \"a\": 1,\n  \"b\" 2}", |r| r.raw()).unwrap_err();
        assert_eq!((err.line, err.column), (3, 7));
        assert_eq!(err.to_string(), "expected `:` at line 3 column 7");
        let err = parse("{\"a\":1}", |r| {
            r.object(&mut |r, key| Err(r.unknown_field(key)))
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("unknown field `a` at line 1"),
            "{err}"
        );
    }
}
