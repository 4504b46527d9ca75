//! Test rig: a transport that calls a [`MemoryServer`] directly (wrap it in
//! [`crate::testing::faults::Faulty`] to make it fail like a network).

use std::rc::Rc;

use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::sync::client::{Transport, TransportError};
use crate::testing::memory_server::MemoryServer;

#[derive(Clone)]
pub struct InProcessTransport {
    server: Rc<MemoryServer>,
    store: String,
}

impl InProcessTransport {
    pub fn new(server: Rc<MemoryServer>, store: impl Into<String>) -> Self {
        InProcessTransport {
            server,
            store: store.into(),
        }
    }
}

impl Transport for InProcessTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        Ok(self.server.push(&self.store, request))
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        _wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        Ok(self.server.pull(&self.store, after, limit))
    }
}
