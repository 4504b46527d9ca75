//! Test rig: a transport wrapper that fails on purpose, the ways networks do: offline, a request
//! lost on the way, an answer lost on the way back. For tests and simulations.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::protocol::{PullResponse, PushRequest, PushResponse};
use crate::sync::client::{Transport, TransportError};

/// A failure to inject into a coming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches the server.
    LoseRequest,
    /// The server handles the request, but its answer never arrives.
    LoseResponse,
    /// Nothing goes wrong (to schedule a fault for a later request).
    None,
}

/// Wraps a transport; clones share the switches.
#[derive(Clone)]
pub struct Faulty<T> {
    inner: T,
    online: Rc<Cell<bool>>,
    faults: Rc<RefCell<VecDeque<Fault>>>,
}

impl<T: Transport> Faulty<T> {
    pub fn new(inner: T) -> Self {
        Faulty {
            inner,
            online: Rc::new(Cell::new(true)),
            faults: Rc::default(),
        }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Offline: every request fails as unreachable, and none reaches the server.
    pub fn set_online(&self, online: bool) {
        self.online.set(online);
    }

    /// Queues a failure for the next request.
    pub fn inject(&self, fault: Fault) {
        self.faults.borrow_mut().push_back(fault);
    }

    /// Lets the next request through, then fails the one after it.
    pub fn inject_after_one(&self, fault: Fault) {
        self.inject(Fault::None);
        self.inject(fault);
    }

    fn next_fault(&self) -> Result<Fault, TransportError> {
        if !self.online.get() {
            return Err(TransportError::Unreachable("offline".into()));
        }
        Ok(self.faults.borrow_mut().pop_front().unwrap_or(Fault::None))
    }
}

impl<T: Transport> Transport for Faulty<T> {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        match self.next_fault()? {
            Fault::LoseRequest => Err(TransportError::Unreachable("request lost".into())),
            Fault::LoseResponse => {
                let _ = self.inner.push(request).await;
                Err(TransportError::Unreachable("response lost".into()))
            }
            Fault::None => self.inner.push(request).await,
        }
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        match self.next_fault()? {
            Fault::LoseRequest => Err(TransportError::Unreachable("request lost".into())),
            Fault::LoseResponse => {
                let _ = self.inner.pull(after, limit, wait_seconds).await;
                Err(TransportError::Unreachable("response lost".into()))
            }
            Fault::None => self.inner.pull(after, limit, wait_seconds).await,
        }
    }
}
