//! The outbox's synchronisation primitives, named in one place so that its model tests
//! (`model.rs`, built with `--features loom-model`) can put loom's in their place.
//!
//! The normal build re-exports exactly the types the outbox always used (std's `Mutex` and
//! `AtomicBool`, futures' `AtomicWaker`, tokio's `Notify`): its layout, its size (192 bytes per
//! connection, docs/benchmarks.md) and its behaviour are the same as without this module.
//!
//! Under `cfg(all(test, feature = "loom-model"))` the mutex and the flags are loom's, and the two primitives loom
//! has no faithful stand-in for are written here on loom's mutex, with the contract the outbox
//! relies on and nothing more:
//! - [`AtomicWaker`]: `register` replaces the stored waker, `wake` takes it and wakes it; a
//!   `wake` with none stored is lost (futures' `AtomicWaker` behaves the same), so a waiter that
//!   does not check its condition again after registering misses it.
//! - [`Notify`]: only what the outbox uses, `notify_waiters` and a `Notified` future that hears
//!   every `notify_waiters` after its creation, even one before its first poll (tokio documents
//!   this for `Notified`). tokio's permit for `notify_one` is not modelled, nor is its intrusive
//!   waiter list: the model checks the outbox's use of the contract, not tokio's implementation.

#[cfg(not(all(test, feature = "loom-model")))]
pub(super) use futures_util::task::AtomicWaker;
#[cfg(not(all(test, feature = "loom-model")))]
pub(super) use std::sync::atomic::AtomicBool;
#[cfg(not(all(test, feature = "loom-model")))]
pub(super) use std::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, feature = "loom-model")))]
pub(super) use tokio::sync::Notify;

#[cfg(all(test, feature = "loom-model"))]
pub(super) use loom::sync::atomic::AtomicBool;
#[cfg(all(test, feature = "loom-model"))]
pub(super) use loom::sync::{Mutex, MutexGuard};
#[cfg(all(test, feature = "loom-model"))]
pub(super) use modelled::{AtomicWaker, Notify};

#[cfg(all(test, feature = "loom-model"))]
mod modelled {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::Mutex;

    /// futures' `AtomicWaker` contract on a loom mutex (see the module comment).
    #[derive(Default)]
    pub(in crate::transport::outbox) struct AtomicWaker {
        waker: Mutex<Option<Waker>>,
    }

    impl AtomicWaker {
        /// Stores `waker` for the next [`AtomicWaker::wake`], replacing the one stored.
        pub(in crate::transport::outbox) fn register(&self, waker: &Waker) {
            *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
        }

        /// Wakes the stored waker, if any, and forgets it.
        pub(in crate::transport::outbox) fn wake(&self) {
            let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// tokio's `Notify` as far as the outbox uses it (see the module comment).
    pub(in crate::transport::outbox) struct Notify {
        state: Mutex<Waiters>,
    }

    #[derive(Default)]
    struct Waiters {
        /// How many times `notify_waiters` ran: a `Notified` is ready once this moved on.
        calls: u64,
        /// The wakers of pending `Notified`s, by their id.
        wakers: Vec<(u64, Waker)>,
        next_id: u64,
    }

    impl Notify {
        pub(in crate::transport::outbox) fn new() -> Notify {
            Notify {
                state: Mutex::new(Waiters::default()),
            }
        }

        fn lock(&self) -> loom::sync::MutexGuard<'_, Waiters> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// A future that resolves at the next [`Notify::notify_waiters`] after this call.
        pub(in crate::transport::outbox) fn notified(&self) -> Notified<'_> {
            let mut waiters = self.lock();
            let id = waiters.next_id;
            waiters.next_id += 1;
            Notified {
                notify: self,
                calls_at_creation: waiters.calls,
                id,
            }
        }

        /// Wakes every `Notified` created before this call.
        pub(in crate::transport::outbox) fn notify_waiters(&self) {
            let wakers = {
                let mut waiters = self.lock();
                waiters.calls += 1;
                std::mem::take(&mut waiters.wakers)
            };
            for (_, waker) in wakers {
                waker.wake();
            }
        }
    }

    /// [`Notify::notified`]'s future.
    pub(in crate::transport::outbox) struct Notified<'a> {
        notify: &'a Notify,
        calls_at_creation: u64,
        id: u64,
    }

    impl Notified<'_> {
        /// tokio's `enable` registers for `notify_one`; for `notify_waiters` a `Notified` is
        /// registered from its creation, so there is nothing to do (and the outbox ignores the
        /// answer, so this does not take the lock: one step less for loom to interleave).
        pub(in crate::transport::outbox) fn enable(self: Pin<&mut Self>) -> bool {
            false
        }
    }

    impl Future for Notified<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut waiters = self.notify.lock();
            if waiters.calls != self.calls_at_creation {
                return Poll::Ready(());
            }
            let id = self.id;
            waiters.wakers.retain(|(other, _)| *other != id);
            waiters.wakers.push((id, cx.waker().clone()));
            Poll::Pending
        }
    }

    impl Drop for Notified<'_> {
        fn drop(&mut self) {
            let id = self.id;
            self.notify.lock().wakers.retain(|(other, _)| *other != id);
        }
    }
}
