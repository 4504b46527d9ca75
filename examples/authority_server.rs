//! An annals server that holds authority over bank accounts: it re-checks every pushed
//! event of an `account-*` stream against the balance folded from the stored events, and
//! rejects withdrawals that would overdraw. Clients report such rejections like conflicts
//! (`store.on("rejected", ...)` in TypeScript, `SyncClient::on_rejected` in Rust).
//!
//! ```text
//! cargo run --features server --example authority_server -- 127.0.0.1:8080
//! ```

use std::sync::Arc;

use annals::codec::EventRef;
use annals::command::{Decider, Decision};
use annals::push::authority::{Authorities, DeciderAuthority};
use annals::server::{serve, Auth, ServerConfig};

/// The write model of an account: its balance, and the one rule that matters.
struct Account;

impl Account {
    fn allow(balance: i64, amount: i64) -> Result<(), String> {
        if balance + amount < 0 {
            return Err(format!(
                "insufficient funds: balance {balance}, amount {amount}"
            ));
        }
        Ok(())
    }
}

impl Decider for Account {
    type State = i64;
    type Command = i64;

    fn initial(&self) -> i64 {
        0
    }

    fn evolve(&self, balance: &mut i64, event: &EventRef<'_>) {
        *balance += event.data_as::<i64>().unwrap_or(0);
    }

    /// Clients (Rust apps) decide on their optimistic state...
    fn decide(&self, amount: &i64, balance: &i64) -> Result<Vec<Decision>, String> {
        Account::allow(*balance, *amount)?;
        Ok(vec![
            Decision::new("Moved", amount).map_err(|e| e.to_string())?
        ])
    }

    /// ...and the server re-checks against the authoritative state.
    fn check(&self, balance: &i64, event: &EventRef<'_>) -> Result<(), String> {
        Account::allow(*balance, event.data_as::<i64>().map_err(|e| e.to_string())?)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let accounts = DeciderAuthority::new(Account, |stream: &str| stream.starts_with("account-"));
    let config = ServerConfig {
        listen: listen.parse()?,
        database: "sqlite://data/accounts.db".into(),
        auth: Auth::new().with_dev_token("dev")?,
        authorities: Authorities::new(vec![Arc::new(accounts)]),
        ..ServerConfig::default()
    };
    let server = serve(config).await?;
    println!("accounts server on {} (token: dev)", server.url());
    server.wait().await?;
    Ok(())
}
