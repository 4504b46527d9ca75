//! Fingerprints of projection states, for time-travel debugging: equal states give equal
//! fingerprints on every replica (browser or native), and a state that differs in any
//! value gives another one. The state is taken as JSON, put in canonical form (object keys
//! sorted, no white space, numbers as serde_json writes them) and hashed with SHA-256; the
//! first 8 bytes, as 16 hex digits, are short enough to show and compare at a glance.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hex digits in a fingerprint.
pub const FINGERPRINT_LEN: usize = 16;

/// The canonical form of a JSON text: keys sorted at every level, no white space.
pub fn canonical_json(json: &str) -> Result<String> {
    // serde_json's map is a BTreeMap here (no `preserve_order`): parsing sorts the keys.
    let value = crate::json::value(json)
        .map_err(|e| Error::InvalidArgument(format!("a state to fingerprint must be JSON: {e}")))?;
    Ok(value.to_string())
}

/// The fingerprint of a state given as JSON (see the module docs).
pub fn fingerprint(json: &str) -> Result<String> {
    let digest = Sha256::digest(canonical_json(json)?.as_bytes());
    let mut out = String::with_capacity(FINGERPRINT_LEN);
    for byte in &digest[..FINGERPRINT_LEN / 2] {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_white_space_do_not_matter() {
        let a = fingerprint(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).unwrap();
        let b = fingerprint("{ \"a\": { \"x\": null, \"y\": [1, 2] },\n \"b\": 1 }").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), FINGERPRINT_LEN);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn any_changed_value_changes_it() {
        let base = fingerprint(r#"{"cards":{"c1":{"title":"milk","done":false}}}"#).unwrap();
        for other in [
            r#"{"cards":{"c1":{"title":"milk","done":true}}}"#,
            r#"{"cards":{"c1":{"title":"milk "}}}"#,
            r#"{"cards":{"c2":{"title":"milk","done":false}}}"#,
            r#"{"cards":[{"title":"milk","done":false}]}"#,
        ] {
            assert_ne!(fingerprint(other).unwrap(), base, "{other}");
        }
        // Array order is part of the state.
        assert_ne!(fingerprint("[1,2]").unwrap(), fingerprint("[2,1]").unwrap());
    }

    #[test]
    fn a_known_state_has_a_known_fingerprint() {
        // Pinned: every replica and every release must agree on it.
        assert_eq!(
            canonical_json(r#"{"b":2,"a":1}"#).unwrap(),
            r#"{"a":1,"b":2}"#
        );
        let expected: String = Sha256::digest(br#"{"a":1,"b":2}"#)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fingerprint(r#"{"b":2,"a":1}"#).unwrap(), expected);
    }

    #[test]
    fn not_json_is_an_invalid_argument() {
        let err = fingerprint("{nope").unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
    }
}
