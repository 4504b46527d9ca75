//! Bearer tokens, each granting named stores for reading and writing.
//!
//! Tokens file: `{ "<token>": { "read": ["store-a"], "write": ["store-a"] } }`, where
//! `"*"` stands for every store. A dev token (`--dev-token`, `ANNALS_DEV_TOKEN`) grants
//! every store both ways.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use axum::http::{header, HeaderMap};
use serde::Deserialize;

use crate::server::error::ApiError;
use crate::server::limits::is_valid_store_name;

/// What a request wants to do with a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The stores one token may read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

impl Grant {
    /// Every store, both ways.
    pub fn all() -> Self {
        Grant {
            read: vec!["*".into()],
            write: vec!["*".into()],
        }
    }

    pub fn allows(&self, store: &str, access: Access) -> bool {
        let list = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        list.iter().any(|s| s == "*" || s == store)
    }

    /// 403 unless this grant allows `access` to `store`.
    pub fn require(&self, store: &str, access: Access) -> Result<(), ApiError> {
        if self.allows(store, access) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                store: store.to_owned(),
                access: access.as_str(),
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the tokens file is not of the form {{\"<token>\": {{\"read\": [...], \"write\": [...]}}}}: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The token table. Its `Debug` output never shows the tokens.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, Grant>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Auth({} tokens)", self.tokens.len())
    }
}

impl Auth {
    /// No tokens: every request is 401.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_json(text: &str) -> Result<Self, AuthConfigError> {
        let tokens: HashMap<String, Grant> = serde_json::from_str(text)?;
        let mut auth = Auth::new();
        for (token, grant) in tokens {
            auth = auth.with_token(token, grant)?;
        }
        Ok(auth)
    }

    pub fn from_file(path: &Path) -> Result<Self, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Adds (or replaces) one token.
    pub fn with_token(
        mut self,
        token: impl Into<String>,
        grant: Grant,
    ) -> Result<Self, AuthConfigError> {
        let token = token.into();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AuthConfigError::Invalid(
                "tokens must be non-empty and contain no spaces or control characters".into(),
            ));
        }
        if let Some(bad) = grant
            .read
            .iter()
            .chain(&grant.write)
            .find(|s| *s != "*" && !is_valid_store_name(s))
        {
            return Err(AuthConfigError::Invalid(format!(
                "{bad:?} is not a valid store name (A-Z a-z 0-9 . _ -, at most 128) nor \"*\""
            )));
        }
        self.tokens.insert(token, grant);
        Ok(self)
    }

    /// A token that grants every store both ways.
    pub fn with_dev_token(self, token: impl Into<String>) -> Result<Self, AuthConfigError> {
        self.with_token(token, Grant::all())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The grant of the request's bearer token: 401 without a known one.
    pub fn grant(&self, headers: &HeaderMap) -> Result<&Grant, ApiError> {
        self.authenticate(headers).map(|(_, grant)| grant)
    }

    /// The request's bearer token (as configured) and its grant: 401 without a known one.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<(&str, &Grant), ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingToken)?
            .to_str()
            .map_err(|_| ApiError::UnknownToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingToken);
        }
        self.tokens
            .get_key_value(token.trim())
            .map(|(token, grant)| (token.as_str(), grant))
            .ok_or(ApiError::UnknownToken)
    }

    /// 401 without a known token, 403 when it does not grant `access` to `store`.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        store: &str,
        access: Access,
    ) -> Result<(), ApiError> {
        self.grant(headers)?.require(store, access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn tokens_grant_named_stores_only() {
        let auth = Auth::from_json(
            r#"{"t1": {"read": ["a", "b"], "write": ["a"]}, "t2": {"read": ["*"]}}"#,
        )
        .unwrap()
        .with_dev_token("dev")
        .unwrap();
        let code = |h: &HeaderMap, s, a| auth.authorize(h, s, a).err().map(|e| e.status().as_u16());
        assert_eq!(code(&headers("Bearer t1"), "a", Access::Write), None);
        assert_eq!(code(&headers("bearer t1"), "b", Access::Read), None);
        assert_eq!(code(&headers("Bearer t1"), "b", Access::Write), Some(403));
        assert_eq!(code(&headers("Bearer t1"), "c", Access::Read), Some(403));
        assert_eq!(code(&headers("Bearer t2"), "zz", Access::Read), None);
        assert_eq!(code(&headers("Bearer t2"), "zz", Access::Write), Some(403));
        assert_eq!(code(&headers("Bearer dev"), "zz", Access::Write), None);
        assert_eq!(code(&headers("Bearer nope"), "a", Access::Read), Some(401));
        assert_eq!(code(&headers("Basic t1"), "a", Access::Read), Some(401));
        assert_eq!(code(&HeaderMap::new(), "a", Access::Read), Some(401));
    }

    #[test]
    fn bad_token_files_are_refused() {
        assert!(Auth::from_json("[]").is_err());
        assert!(Auth::from_json(r#"{"t": {"read": ["a/b"]}}"#).is_err());
        assert!(Auth::from_json(r#"{"t": {"reed": ["a"]}}"#).is_err());
        assert!(Auth::from_json(r#"{"": {"read": ["a"]}}"#).is_err());
        assert_eq!(
            format!("{:?}", Auth::from_json(r#"{"secret": {}}"#).unwrap()),
            "Auth(1 tokens)"
        );
    }
}
