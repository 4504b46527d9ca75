//! A [`WriterLock`] that the test hands from one handle to another by hand, instead of the
//! browser's Web Locks: what a handle may assume while it holds the lock, and what it must
//! read again after another held it, made visible step by step.

use std::cell::Cell;
use std::rc::Rc;

use crate::error::Error;
use crate::storage::{Entered, WriterLock};

/// The lock of one store, shared by its handles.
#[derive(Debug, Default)]
pub struct HandedLock {
    holder: Cell<Option<usize>>,
    lease: Cell<u64>,
}

impl HandedLock {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Handle `handle`'s view of the lock, to give its storage.
    pub fn handle(self: &Rc<Self>, handle: usize) -> Rc<dyn WriterLock> {
        Rc::new(HandleOfLock {
            lock: self.clone(),
            handle,
        })
    }

    /// Gives the lock to `handle` (a new lease).
    pub fn hand_to(&self, handle: usize) {
        self.holder.set(Some(handle));
        self.lease.set(self.lease.get() + 1);
    }
}

struct HandleOfLock {
    lock: Rc<HandedLock>,
    handle: usize,
}

impl WriterLock for HandleOfLock {
    fn enter(&self) -> Entered<'_> {
        if self.lock.holder.get() == Some(self.handle) {
            return Entered::Held(self.lock.lease.get());
        }
        let handle = self.handle;
        // A real lock would wait; a test that writes from a handle not holding it is wrong.
        Entered::Wait(Box::pin(async move {
            Err(Error::Storage(format!(
                "handle {handle} wrote without holding the writer lock"
            )))
        }))
    }

    fn leave(&self) {}
}
