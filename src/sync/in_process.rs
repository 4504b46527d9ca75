//! A transport that calls a [`MemoryServer`] directly, with switches for the failures a
//! network causes: offline, a request lost on the way, a response lost on the way back.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::sync::client::{Transport, TransportError};
use crate::sync::memory_server::MemoryServer;
use crate::sync::protocol::{PullResponse, PushRequest, PushResponse};

/// A failure to inject into the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches the server.
    LoseRequest,
    /// The server handles the request, but its answer never arrives.
    LoseResponse,
    /// Nothing goes wrong (to schedule a fault for a later request).
    None,
}

#[derive(Clone)]
pub struct InProcessTransport {
    server: Rc<MemoryServer>,
    store: String,
    online: Rc<Cell<bool>>,
    faults: Rc<RefCell<VecDeque<Fault>>>,
}

impl InProcessTransport {
    pub fn new(server: Rc<MemoryServer>, store: impl Into<String>) -> Self {
        InProcessTransport {
            server,
            store: store.into(),
            online: Rc::new(Cell::new(true)),
            faults: Rc::default(),
        }
    }

    pub fn set_online(&self, online: bool) {
        self.online.set(online);
    }

    /// Queues a failure for the next request(s).
    pub fn inject(&self, fault: Fault) {
        self.faults.borrow_mut().push_back(fault);
    }

    /// Lets the next request through, then fails the one after it.
    pub fn inject_after_one(&self, fault: Fault) {
        self.faults.borrow_mut().push_back(Fault::None);
        self.faults.borrow_mut().push_back(fault);
    }

    fn deliver<R>(&self, handle: impl FnOnce() -> R) -> Result<R, TransportError> {
        if !self.online.get() {
            return Err(TransportError::Unreachable("offline".into()));
        }
        match self.faults.borrow_mut().pop_front() {
            Some(Fault::LoseRequest) => Err(TransportError::Unreachable("request lost".into())),
            Some(Fault::LoseResponse) => {
                handle();
                Err(TransportError::Unreachable("response lost".into()))
            }
            Some(Fault::None) | None => Ok(handle()),
        }
    }
}

impl Transport for InProcessTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        self.deliver(|| self.server.push(&self.store, request))
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        _wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        self.deliver(|| self.server.pull(&self.store, after, limit))
    }
}
