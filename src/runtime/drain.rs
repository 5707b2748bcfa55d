//! The worker-local drain signal: set once when the worker stops accepting, observed by every
//! connection waiting between requests so idle keep-alive connections close at once while
//! in-flight requests finish.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    on: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Drain {
    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    pub fn start(&self) {
        self.on.set(true);
        for (_, waker) in self.waiters.borrow_mut().drain() {
            waker.wake();
        }
    }

    /// Resolves when draining starts. Dropping it unregisters, so waiting costs nothing after.
    pub fn wait(&self) -> Wait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Wait { drain: self, id }
    }
}

pub struct Wait<'a> {
    drain: &'a Drain,
    id: u64,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.is_on() {
            return Poll::Ready(());
        }
        self.drain
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.drain.waiters.borrow_mut().remove(&self.id);
    }
}
