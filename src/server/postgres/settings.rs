//! PostgreSQL backend: the `--database postgres://...` URL (our `schema=` and `pool_size=`
//! options taken out, the rest for tokio-postgres) and how a connection is set up.

use std::str::FromStr;

use tokio_postgres::{Client, Config, NoTls};

use crate::server::store::StoreError;

const DEFAULT_POOL_SIZE: usize = 16;

/// A parsed `--database postgres://...`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub config: Config,
    pub schema: Option<String>,
    pub pool_size: usize,
}

impl PgSettings {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "schema" => {
                    let decoded = percent_decode(value)
                        .filter(|s| is_valid_schema(s))
                        .ok_or_else(|| {
                            StoreError::BadUrl(format!(
                                "schema={value:?}: use 1 to 63 of a-z A-Z 0-9 _, not starting with a digit"
                            ))
                        })?;
                    schema = Some(decoded);
                }
                "pool_size" => {
                    pool_size = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| {
                            StoreError::BadUrl(format!("pool_size={value:?}: use 1 to 1024"))
                        })?;
                }
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let config = Config::from_str(&rebuilt).map_err(|e| StoreError::BadUrl(e.to_string()))?;
        Ok(PgSettings {
            config,
            schema,
            pool_size,
        })
    }

    /// A plain connection (search path set), its connection task spawned.
    pub(super) async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        // Durable before acknowledged: a database whose default is `synchronous_commit =
        // off` would answer COMMIT before the WAL is flushed; stronger settings are kept.
        let mut setup = String::from(
            "SELECT set_config('synchronous_commit', 'on', false) \
             WHERE current_setting('synchronous_commit') = 'off';",
        );
        if let Some(schema) = &self.schema {
            setup.push_str(&format!("SET search_path TO {};", quote_ident(schema)));
        }
        client.batch_execute(&setup).await?;
        Ok(client)
    }
}

fn is_valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn urls_take_our_options_out() {
        let s = PgSettings::from_url(
            "postgres://postgres@127.0.0.1:5432/test?schema=my_schema&pool_size=4&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(s.schema.as_deref(), Some("my_schema"));
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.config.get_dbname(), Some("test"));
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        let s = PgSettings::from_url(
            "postgres://postgres@127.0.0.1/test?options=-csearch_path%3Dother",
        )
        .unwrap();
        assert_eq!(s.schema, None);
        assert_eq!(s.config.get_options(), Some("-csearch_path=other"));
        for bad in [
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=1a",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?nonsense=1",
        ] {
            assert!(PgSettings::from_url(bad).is_err(), "{bad}");
        }
    }
}
