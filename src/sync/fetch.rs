//! The browser transport: `fetch` against an annals server, and a `setTimeout` timer.
//! Works in windows and workers.

use std::cell::RefCell;

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, Request, RequestInit, RequestMode, Response};

use crate::json::{self, JsonResult, Reader};
use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::sync::client::{Credentials, Timer, Transport, TransportError};

/// Where and as whom to sync.
#[derive(Debug, Clone)]
pub struct FetchTransport {
    base_url: String,
    store: String,
    credentials: RefCell<Credentials>,
}

impl FetchTransport {
    pub fn new(base_url: &str, store: &str, credentials: Credentials) -> Self {
        FetchTransport {
            base_url: base_url.trim_end_matches('/').to_owned(),
            store: store.to_owned(),
            credentials: RefCell::new(credentials),
        }
    }

    /// Sends the next requests with other credentials (tell the client:
    /// [`crate::sync::client::SyncClient::credentials_changed`]).
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.borrow_mut() = credentials;
    }

    /// Why a fetch failed without an answer. `fetch` says only "Failed to fetch" for an
    /// offline device, a server that is down and a CORS refusal alike. The platform's online
    /// flag, then two simple requests to `/health` tell them apart: a `no-cors` one (CORS
    /// does not block it; an opaque answer proves something listens) and a CORS one (fails
    /// if the server does not allow this origin).
    async fn explain_failure(&self, error: &JsValue) -> TransportError {
        if !platform_online() {
            return TransportError::platform_offline();
        }
        if !self.health_answers(RequestMode::NoCors).await {
            return TransportError::server_down(&self.base_url, &describe(error));
        }
        if !self.health_answers(RequestMode::Cors).await {
            return TransportError::CorsRefused {
                url: self.base_url.clone(),
                origin: page_origin(),
            };
        }
        // The server answers this origin: the request failed on the way (a dropped
        // connection), or its preflight was refused for a header of `sync.headers`.
        let detail = if self.credentials.borrow().headers.is_empty() {
            describe(error)
        } else {
            format!(
                "{}; if it keeps failing, the server may not allow the headers of \
                 sync.headers in CORS preflights",
                describe(error)
            )
        };
        TransportError::Unreachable(detail)
    }

    async fn health_answers(&self, mode: RequestMode) -> bool {
        let init = RequestInit::new();
        init.set_method("GET");
        init.set_mode(mode);
        let probe = Request::new_with_str_and_init(&format!("{}/health", self.base_url), &init)
            .ok()
            .and_then(|request| global_fetch(&request).ok());
        match probe {
            Some(promise) => JsFuture::from(promise).await.is_ok(),
            None => false,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/stores/{}/{tail}",
            self.base_url,
            encode_component(&self.store)
        )
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<String>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |e: JsValue| TransportError::Unreachable(describe(&e));
        let init = RequestInit::new();
        init.set_method(method);
        let headers = Headers::new().map_err(unreachable)?;
        {
            let credentials = self.credentials.borrow();
            for (name, value) in &credentials.headers {
                headers
                    .set(name, value)
                    .map_err(|e| TransportError::Refused {
                        status: 0,
                        code: "INVALID_ARGUMENT".into(),
                        message: format!("sync.headers[{name:?}]: {}", describe(&e)),
                    })?;
            }
            headers
                .set("Authorization", &format!("Bearer {}", credentials.token))
                .map_err(unreachable)?;
        }
        if let Some(body) = &body {
            headers
                .set("Content-Type", "application/json")
                .map_err(unreachable)?;
            init.set_body(&JsValue::from_str(body));
        }
        init.set_headers(&headers);
        // Dropping the future (a long poll interrupted by a local append) aborts the request.
        let abort = AbortController::new().map_err(unreachable)?;
        init.set_signal(Some(&abort.signal()));
        let _abort_on_drop = AbortOnDrop(abort);
        let request = Request::new_with_str_and_init(url, &init).map_err(unreachable)?;
        let answer = match JsFuture::from(global_fetch(&request)?).await {
            Ok(answer) => answer,
            Err(e) => return Err(self.explain_failure(&e).await),
        };
        let response: Response = answer
            .dyn_into()
            .map_err(|_| TransportError::Protocol("fetch did not return a Response".into()))?;
        // The body as bytes: one copy into wasm memory (a string argument would be
        // re-encoded character by character).
        let body = JsFuture::from(response.array_buffer().map_err(unreachable)?)
            .await
            .map_err(unreachable)?;
        let body = js_sys::Uint8Array::new(&body).to_vec();
        let content_type = response.headers().get("content-type").ok().flatten();
        TransportError::check_answer(
            &self.base_url,
            response.status(),
            content_type.as_deref(),
            body,
        )
    }
}

struct AbortOnDrop(AbortController);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn global_fetch(request: &Request) -> Result<Promise, TransportError> {
    let global = js_sys::global();
    let fetch: Function = Reflect::get(&global, &JsValue::from_str("fetch"))
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| TransportError::Unreachable("this environment has no fetch".into()))?;
    fetch
        .call1(&global, request)
        .map_err(|e| TransportError::Unreachable(describe(&e)))?
        .dyn_into()
        .map_err(|_| TransportError::Protocol("fetch did not return a promise".into()))
}

/// `navigator.onLine` where there is one (windows and workers); true elsewhere.
fn platform_online() -> bool {
    Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
        .ok()
        .filter(|n| n.is_object())
        .and_then(|n| Reflect::get(&n, &JsValue::from_str("onLine")).ok())
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// The page's origin as a server's `--cors-origin` names it (windows and workers have
/// `origin`).
fn page_origin() -> String {
    Reflect::get(&js_sys::global(), &JsValue::from_str("origin"))
        .ok()
        .and_then(|o| o.as_string())
        .unwrap_or_else(|| "this page's origin".into())
}

fn describe(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| "network error".into())
}

fn encode_component(text: &str) -> String {
    String::from(js_sys::encode_uri_component(text))
}

fn parse<T>(
    body: &[u8],
    read: impl FnOnce(&mut Reader<'_>) -> JsonResult<T>,
) -> Result<T, TransportError> {
    let text = std::str::from_utf8(body).map_err(|e| TransportError::Protocol(e.to_string()))?;
    json::parse(text, read).map_err(|e| TransportError::Protocol(e.to_string()))
}

impl Transport for FetchTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        let body =
            serde_json::to_string(request).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let text = self.send("POST", &self.url("push"), Some(body)).await?;
        parse(&text, PushResponse::read)
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
        let text = self.send("GET", &url, None).await?;
        parse(&text, PullResponse::read)
    }
}

/// Sleeps with `setTimeout`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutTimer;

impl Timer for TimeoutTimer {
    async fn sleep(&self, ms: u64) {
        let promise = Promise::new(&mut |resolve, _reject| {
            let global = js_sys::global();
            let set_timeout = Reflect::get(&global, &JsValue::from_str("setTimeout"))
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok());
            match set_timeout {
                Some(set_timeout) => {
                    let _ = set_timeout.call2(&global, &resolve, &JsValue::from_f64(ms as f64));
                }
                None => {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
            }
        });
        let _ = JsFuture::from(promise).await;
    }
}
