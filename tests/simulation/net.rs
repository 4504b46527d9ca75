//! The simulated network: every request and every answer is a message in one queue that
//! the simulator delivers when, in what order, and how many times it likes. A client's
//! transport call waits on its own slot until an answer (or a timeout, or a reset) fills it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use annals::protocol::{PullResponse, PushRequest, PushResponse};
use annals::sync::client::{Transport, TransportError};

#[derive(Debug, Clone)]
pub enum Request {
    Push(PushRequest),
    Pull { after: u64, limit: usize },
}

#[derive(Debug, Clone)]
pub enum Reply {
    Push(PushResponse),
    Pull(PullResponse),
}

/// Where one request's answer goes. Closed once answered, timed out, reset, or abandoned
/// by a client that crashed; later answers are discarded.
#[derive(Debug)]
pub struct Slot {
    pub client: usize,
    answer: RefCell<Option<Result<Reply, TransportError>>>,
    closed: Cell<bool>,
}

#[derive(Debug)]
pub enum Payload {
    Request(Request),
    Reply(Reply),
}

#[derive(Debug)]
pub struct Message {
    pub slot: Rc<Slot>,
    pub payload: Payload,
}

#[derive(Debug, Default)]
pub struct Net {
    pub queue: RefCell<Vec<Message>>,
    waiting: RefCell<Vec<Rc<Slot>>>,
    /// Clients whose platform says offline: requests fail at once.
    offline: RefCell<Vec<bool>>,
}

impl Net {
    pub fn new(clients: usize) -> Self {
        Net {
            offline: RefCell::new(vec![false; clients]),
            ..Net::default()
        }
    }

    pub fn set_offline(&self, client: usize, offline: bool) {
        self.offline.borrow_mut()[client] = offline;
    }

    pub fn is_offline(&self, client: usize) -> bool {
        self.offline.borrow()[client]
    }

    fn send(&self, client: usize, request: Request) -> Rc<Slot> {
        let slot = Rc::new(Slot {
            client,
            answer: RefCell::new(None),
            closed: Cell::new(false),
        });
        self.queue.borrow_mut().push(Message {
            slot: slot.clone(),
            payload: Payload::Request(request),
        });
        self.waiting.borrow_mut().push(slot.clone());
        slot
    }

    /// Fills an open slot; `false` if it was closed already (the answer is discarded).
    pub fn answer(&self, slot: &Rc<Slot>, result: Result<Reply, TransportError>) -> bool {
        if slot.closed.get() {
            return false;
        }
        *slot.answer.borrow_mut() = Some(result);
        slot.closed.set(true);
        self.waiting.borrow_mut().retain(|s| !Rc::ptr_eq(s, slot));
        true
    }

    /// Slots of clients still waiting for an answer, oldest first.
    pub fn waiting(&self) -> Vec<Rc<Slot>> {
        self.waiting.borrow().clone()
    }

    /// A crashed client waits for nothing any more.
    pub fn abandon(&self, client: usize) {
        self.waiting.borrow_mut().retain(|s| {
            if s.client == client {
                s.closed.set(true);
                false
            } else {
                true
            }
        });
    }
}

struct Answer(Rc<Slot>);

impl Future for Answer {
    type Output = Result<Reply, TransportError>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.answer.borrow_mut().take() {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

/// One client's transport over the simulated network.
pub struct SimTransport {
    pub net: Rc<Net>,
    pub client: usize,
}

impl SimTransport {
    async fn exchange(&self, request: Request) -> Result<Reply, TransportError> {
        if self.net.is_offline(self.client) {
            return Err(TransportError::Unreachable("offline".into()));
        }
        let slot = self.net.send(self.client, request);
        Answer(slot).await
    }
}

impl Transport for SimTransport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError> {
        match self.exchange(Request::Push(request.clone())).await? {
            Reply::Push(response) => Ok(response),
            Reply::Pull(_) => Err(TransportError::Protocol("a pull answer to a push".into())),
        }
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        _wait_seconds: u32,
    ) -> Result<PullResponse, TransportError> {
        match self.exchange(Request::Pull { after, limit }).await? {
            Reply::Pull(response) => Ok(response),
            Reply::Push(_) => Err(TransportError::Protocol("a push answer to a pull".into())),
        }
    }
}
