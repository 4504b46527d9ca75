//! The browser transport: `fetch` against an annals server, and a `setTimeout` timer.
//! Works in windows and workers.

use std::cell::RefCell;

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Headers, Request, RequestInit, Response};

use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::sync::client::{Timer, Transport, TransportError};

/// Where and as whom to sync.
#[derive(Debug, Clone)]
pub struct FetchTransport {
    base_url: String,
    store: String,
    token: RefCell<String>,
}

impl FetchTransport {
    pub fn new(base_url: &str, store: &str, token: &str) -> Self {
        FetchTransport {
            base_url: base_url.trim_end_matches('/').to_owned(),
            store: store.to_owned(),
            token: RefCell::new(token.to_owned()),
        }
    }

    pub fn set_token(&self, token: &str) {
        *self.token.borrow_mut() = token.to_owned();
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
        headers
            .set("Authorization", &format!("Bearer {}", self.token.borrow()))
            .map_err(unreachable)?;
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
        let response: Response = JsFuture::from(global_fetch(&request)?)
            .await
            .map_err(unreachable)?
            .dyn_into()
            .map_err(|_| TransportError::Protocol("fetch did not return a Response".into()))?;
        // The body as bytes: one copy into wasm memory (a string argument would be
        // re-encoded character by character).
        let body = JsFuture::from(response.array_buffer().map_err(unreachable)?)
            .await
            .map_err(unreachable)?;
        let body = js_sys::Uint8Array::new(&body).to_vec();
        let status = response.status();
        TransportError::check_status(status, body)
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

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TransportError> {
    serde_json::from_slice(body).map_err(|e| TransportError::Protocol(e.to_string()))
}

impl Transport for FetchTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        let body =
            serde_json::to_string(request).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let text = self.send("POST", &self.url("push"), Some(body)).await?;
        parse(&text)
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
        parse(&text)
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
