//! The native transport (feature `http-client`): HTTP to an annals server with reqwest, and
//! a tokio timer, so that Rust apps and tests sync like browsers do.

use std::cell::RefCell;
use std::time::Duration;

use crate::json::{self, JsonResult, Reader};
use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::sync::client::{Credentials, Timer, Transport, TransportError};

#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    base_url: String,
    store: String,
    credentials: RefCell<Credentials>,
}

impl HttpTransport {
    pub fn new(base_url: &str, store: &str, token: &str) -> Self {
        HttpTransport {
            client: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            store: store.to_owned(),
            credentials: RefCell::new(Credentials::bearer(token)),
        }
    }

    /// Sends the next requests with other credentials (tell the client:
    /// [`crate::sync::client::SyncClient::credentials_changed`]).
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.borrow_mut() = credentials;
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/stores/{}/{tail}", self.base_url, self.store)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<String, TransportError> {
        let mut request = request.timeout(timeout);
        {
            let credentials = self.credentials.borrow();
            for (name, value) in &credentials.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            request = request.bearer_auth(&credentials.token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                TransportError::server_down(&self.base_url, "connection refused")
            } else {
                TransportError::Unreachable(e.to_string())
            }
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        TransportError::check_answer(&self.base_url, status, content_type.as_deref(), text)
    }
}

fn parse<T>(
    text: &str,
    read: impl FnOnce(&mut Reader<'_>) -> JsonResult<T>,
) -> Result<T, TransportError> {
    json::parse(text, read).map_err(|e| TransportError::Protocol(e.to_string()))
}

impl Transport for HttpTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        let body =
            serde_json::to_string(request).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let builder = self
            .client
            .post(self.url("push"))
            .header("content-type", "application/json")
            .body(body);
        parse(
            &self.send(builder, Duration::from_secs(30)).await?,
            PushResponse::read,
        )
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        let url = self.url(&format!(
            "pull?after={after}&limit={limit}&wait={wait_seconds}"
        ));
        let timeout = Duration::from_secs(u64::from(wait_seconds) + 30);
        parse(
            &self.send(self.client.get(url), timeout).await?,
            PullResponse::read,
        )
    }
}

/// Sleeps on the tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
