//! Coalescing of identical reads: when a node dies, its thousands of clients reconnect to the
//! others at once and each resumes with `since`, so the same `last_id(room)`, `after(room, since,
//! limit)` and `before(room, None, limit)` queries arrive by the thousand within milliseconds.
//! [`Coalescing`] wraps any [`Store`] so that concurrent identical reads share one query, and
//! counts the queries that reach the database (`hubbub_store_reads_total{kind}`) and the reads
//! that shared one (`hubbub_store_reads_joined_total{kind}`).
//!
//! # Fresh reads only: why a read never joins a query already running
//!
//! The usual single-flight hands every caller the result of whatever identical query is in
//! flight. Here that would break the join's "no gap, no duplicate" argument (hub/session.rs):
//! a join first adds the member (from then on every message the hub delivers to the room is
//! held for it) and only *then* reads `last_id` and the replay, so that every message is either
//! in what it reads or held. A query that started before the member was added may have read the
//! store before message N+1 was committed, while N+1 was delivered to the room before the member
//! was in it: the member would get neither. Its `last_id` would also be one too low, so a
//! client whose `since` is N+1 would have `since` clamped to N and get N+1 a second time.
//!
//! So a read here only ever shares a query that *starts after the read was called*. Per key
//! there is at most one query running and at most one waiting: a read that finds a query
//! waiting joins it (it has not started, so it will see everything committed before the read
//! was called); otherwise, if a query is running, the read creates the waiting one, which starts
//! when the running one ends; otherwise it starts its own query at once. Every read therefore
//! answers with a snapshot taken after it was called: to its caller it is exactly a direct query
//! that took a little longer, so every argument made about [`Store`] reads (the join's, the
//! broker gap fill's) holds unchanged. Under a storm each key costs one query running plus one
//! for everyone who arrived meanwhile, instead of one per caller.
//!
//! A query's future is shared ([`Shared`]) by its callers: whichever of them is polled drives
//! it, so a caller that goes away (its connection closed) does not stall the others, and a query
//! nobody waits for any more is dropped. The table keeps only weak handles, and a query takes
//! itself out of it when it ends or is dropped, so the table holds only keys being read.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use super::{ImportOutcome, NewMessage, Page, RoomSummary, Store, StoreError, StoredMessage};
use crate::metrics::Metrics;
use crate::protocol::RoomName;

/// A [`Store`] whose identical concurrent reads share one query started after each of them
/// (see the module doc for why not before); writes and `ping` pass straight through.
pub(crate) struct Coalescing {
    inner: Arc<dyn Store>,
    last_ids: Flights<RoomName, u64>,
    afters: Flights<(RoomName, u64, u32), Vec<StoredMessage>>,
    befores: Flights<(RoomName, Option<u64>, u32), Page>,
    room_lists: Counter,
}

impl Coalescing {
    /// Wraps `inner`, counting its reads in `metrics` (`hubbub_store_reads_total{kind}`).
    pub fn new(inner: Arc<dyn Store>, metrics: &Metrics) -> Coalescing {
        Coalescing {
            inner,
            last_ids: Flights::new(ReadCounters::new(metrics, "last_id")),
            afters: Flights::new(ReadCounters::new(metrics, "after")),
            befores: Flights::new(ReadCounters::new(metrics, "before")),
            room_lists: ReadCounters::new(metrics, "rooms").queries,
        }
    }
}

#[async_trait]
impl Store for Coalescing {
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.append(batch).await
    }

    async fn import(&self, batch: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
        self.inner.import(batch).await
    }

    async fn after(
        &self,
        room: &RoomName,
        since: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let (inner, owned) = (self.inner.clone(), room.clone());
        let query = move || async move { inner.after(&owned, since, limit).await }.boxed();
        self.afters.read((room.clone(), since, limit), query).await
    }

    async fn before(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let (inner, owned) = (self.inner.clone(), room.clone());
        let query = move || async move { inner.before(&owned, before, limit).await }.boxed();
        self.befores
            .read((room.clone(), before, limit), query)
            .await
    }

    async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError> {
        let (inner, owned) = (self.inner.clone(), room.clone());
        let query = move || async move { inner.last_id(&owned).await }.boxed();
        self.last_ids.read(room.clone(), query).await
    }

    /// Not coalesced (the room list is asked for rarely), only counted.
    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        self.room_lists.inc();
        self.inner.rooms().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// The counters of one kind of read.
#[derive(Clone)]
struct ReadCounters {
    /// Queries that reached the database.
    queries: Counter,
    /// Reads answered by a query another read had already asked for.
    joined: Counter,
}

impl ReadCounters {
    fn new(metrics: &Metrics, kind: &'static str) -> ReadCounters {
        ReadCounters {
            queries: metrics.store_reads(kind),
            joined: metrics.store_reads_joined(kind),
        }
    }
}

/// What a shared query ends with: the error is shared too, so it is behind an `Arc`.
type Outcome<V> = Result<V, Arc<StoreError>>;

/// One query, shared by the reads that wait for it.
type Query<V> = Shared<BoxFuture<'static, Outcome<V>>>;

/// The queries of one kind of read, by key.
struct Flights<K, V: Clone> {
    table: Arc<Mutex<Table<K, V>>>,
    counters: ReadCounters,
}

/// Per key, the query running and the query waiting to start after it.
///
/// No strong handle to a query may be dropped while the table is locked: dropping the last one
/// drops the query, whose [`Flight`] then locks the table to take itself out.
struct Table<K, V: Clone> {
    slots: HashMap<K, Slot<V>>,
    next_id: u64,
}

struct Slot<V: Clone> {
    /// The query reading the store now: never joined (it may have read before a new caller
    /// was called).
    running: Option<Entry<V>>,
    /// The query that starts when `running` ends: joined by every read that arrives meanwhile.
    waiting: Option<Entry<V>>,
}

impl<V: Clone> Default for Slot<V> {
    fn default() -> Self {
        Slot {
            running: None,
            waiting: None,
        }
    }
}

/// A query in the table: its id (to find it again), a weak handle (the table never keeps a
/// query alive that no reader waits for) and what tells that it has ended.
struct Entry<V: Clone> {
    id: u64,
    query: WeakShared<BoxFuture<'static, Outcome<V>>>,
    /// Closed when the query's [`Flight`] is dropped: it ended, or nobody waits for it.
    ended: watch::Receiver<()>,
}

impl<V: Clone> Entry<V> {
    /// A handle to the query, unless every reader of it is gone (it is being dropped).
    fn upgrade(&self) -> Option<Query<V>> {
        self.query.upgrade()
    }

    /// What a query to run after this one waits on, unless this one has already ended.
    fn end(&self) -> Option<watch::Receiver<()>> {
        self.ended.has_changed().is_ok().then(|| self.ended.clone())
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(counters: ReadCounters) -> Self {
        Flights {
            table: Arc::new(Mutex::new(Table {
                slots: HashMap::new(),
                next_id: 0,
            })),
            counters,
        }
    }

    /// Answers with the outcome of a `query` for `key` that starts after this call: the waiting
    /// one if there is one, else a new one (waiting for the running one, or started at once).
    async fn read<F>(&self, key: K, query: F) -> Result<V, StoreError>
    where
        F: FnOnce() -> BoxFuture<'static, Result<V, StoreError>> + Send + 'static,
    {
        let shared = self.join_or_start(key, query);
        // The trait's error is not `Clone`: every reader gets a copy of the shared one.
        shared.await.map_err(|err| err.shared())
    }

    fn join_or_start<F>(&self, key: K, query: F) -> Query<V>
    where
        F: FnOnce() -> BoxFuture<'static, Result<V, StoreError>> + Send + 'static,
    {
        let mut table = lock(&self.table);
        let id = table.next_id;
        table.next_id += 1;
        let slot = table.slots.entry(key.clone()).or_default();
        if let Some(waiting) = slot.waiting.as_ref().and_then(Entry::upgrade) {
            self.counters.joined.inc();
            return waiting;
        }
        let after = slot.running.as_ref().and_then(Entry::end);
        let waits = after.is_some();
        let (ended, end) = watch::channel(());
        let flight = Flight {
            table: self.table.clone(),
            key,
            id,
            _ended: ended,
        };
        let shared = flight
            .run(after, query, self.counters.queries.clone())
            .boxed()
            .shared();
        if let Some(weak) = shared.downgrade() {
            let entry = Some(Entry {
                id,
                query: weak,
                ended: end,
            });
            if waits {
                slot.waiting = entry;
            } else {
                slot.running = entry;
            }
        }
        shared
    }
}

/// One query's place in the table, which it keeps true as it moves from waiting to running to
/// gone (also when it is dropped unfinished).
struct Flight<K: Eq + Hash, V: Clone> {
    table: Arc<Mutex<Table<K, V>>>,
    key: K,
    id: u64,
    /// Dropped with the flight, after `Drop` took it out of the table: the query waiting for
    /// this one starts then.
    _ended: watch::Sender<()>,
}

impl<K: Eq + Hash, V: Clone> Flight<K, V> {
    /// Waits until the query running before it has ended, moves from waiting to running, then
    /// reads the store.
    ///
    /// It waits for the end without driving the earlier query or taking its result (older than
    /// this query's readers): the earlier one's own reader drives it and goes on in the same
    /// poll to use its result (a join puts the page into the room's memory at once, so the
    /// room's later joiners read nothing).
    async fn run<F>(
        self,
        after: Option<watch::Receiver<()>>,
        query: F,
        queries: Counter,
    ) -> Outcome<V>
    where
        F: FnOnce() -> BoxFuture<'static, Result<V, StoreError>>,
    {
        if let Some(mut previous) = after {
            // Nothing is ever sent: `changed` fails once the earlier flight is dropped.
            while previous.changed().await.is_ok() {}
            self.start();
        }
        queries.inc();
        query().await.map_err(Arc::new)
        // `self` drops here (or wherever this future is dropped): see `Drop`.
    }

    /// From here on, new readers of this key wait for a next query instead of joining this one.
    fn start(&self) {
        let mut table = lock(&self.table);
        if let Some(slot) = table.slots.get_mut(&self.key)
            && slot.waiting.as_ref().is_some_and(|e| e.id == self.id)
        {
            slot.running = slot.waiting.take();
        }
    }
}

impl<K: Eq + Hash, V: Clone> Drop for Flight<K, V> {
    /// Takes the query out of the table when it ends, or is dropped because nobody waits for
    /// it any more, so the key's next reader starts a query at once.
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        let Some(slot) = table.slots.get_mut(&self.key) else {
            return;
        };
        let id = self.id;
        for place in [&mut slot.running, &mut slot.waiting] {
            if place.as_ref().is_some_and(|e| e.id == id) {
                *place = None;
            }
        }
        if slot.running.is_none() && slot.waiting.is_none() {
            table.slots.remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The table holds plain data that each critical section leaves consistent: a panic
    // elsewhere cannot leave it half-changed, so a poisoned lock is safe to take.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Semaphore;

    /// A store whose `last_id` reads the current value, then waits for a permit before
    /// answering: a test holds a query "in flight" after it has read, as long as it likes.
    struct HeldStore {
        last: AtomicU64,
        started: AtomicU64,
        gate: Semaphore,
        fail: bool,
    }

    impl HeldStore {
        fn new(fail: bool) -> Arc<HeldStore> {
            Arc::new(HeldStore {
                last: AtomicU64::new(1),
                started: AtomicU64::new(0),
                gate: Semaphore::new(0),
                fail,
            })
        }
    }

    #[async_trait]
    impl Store for HeldStore {
        async fn append(&self, _: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
            Ok(Vec::new())
        }

        async fn import(&self, _: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
            Ok(ImportOutcome::default())
        }

        async fn after(
            &self,
            _: &RoomName,
            _: u64,
            _: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            Ok(Vec::new())
        }

        async fn before(&self, _: &RoomName, _: Option<u64>, _: u32) -> Result<Page, StoreError> {
            Ok(Page::default())
        }

        async fn last_id(&self, _: &RoomName) -> Result<u64, StoreError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            let read = self.last.load(Ordering::SeqCst);
            self.gate.acquire().await.expect("gate open").forget();
            if self.fail {
                return Err(StoreError::Unavailable("disk on fire".into()));
            }
            Ok(read)
        }

        async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
            Ok(Vec::new())
        }

        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn coalescing(inner: &Arc<HeldStore>) -> (Arc<Coalescing>, Metrics) {
        let metrics = Metrics::new();
        let store = Arc::new(Coalescing::new(inner.clone(), &metrics));
        (store, metrics)
    }

    fn spawn_last_id(
        store: &Arc<Coalescing>,
        room: &str,
    ) -> tokio::task::JoinHandle<Result<u64, StoreError>> {
        let store = store.clone();
        let room = RoomName::parse(room).expect("room name");
        tokio::spawn(async move { store.last_id(&room).await })
    }

    /// Lets the spawned tasks run (the test runtime has one thread) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened: {what}");
    }

    /// Until `started` queries have reached the store.
    async fn until_started(inner: &HeldStore, started: u64) {
        let reached = || inner.started.load(Ordering::SeqCst) >= started;
        until("queries started", reached).await;
    }

    /// Until `joined` reads of `last_id` wait for a query another read asked for.
    async fn until_joined(store: &Coalescing, joined: u64) {
        let reached = || store.last_ids.counters.joined.get() >= joined;
        until("reads joined", reached).await;
    }

    /// Until a query of `room`'s last id waits for the running one to end.
    async fn until_waiting(store: &Coalescing, room: &str) {
        let room = RoomName::parse(room).expect("room name");
        let waiting = || {
            lock(&store.last_ids.table)
                .slots
                .get(&room)
                .is_some_and(|slot| slot.waiting.is_some())
        };
        until("a query waits", waiting).await;
    }

    #[tokio::test]
    async fn reads_arriving_during_a_query_share_one_query_after_it() {
        let inner = HeldStore::new(false);
        let (store, metrics) = coalescing(&inner);
        let first = spawn_last_id(&store, "lobby");
        until_started(&inner, 1).await;
        let later: Vec<_> = (0..100).map(|_| spawn_last_id(&store, "lobby")).collect();
        until_joined(&store, 99).await;
        assert_eq!(
            inner.started.load(Ordering::SeqCst),
            1,
            "they wait, not query"
        );
        inner.gate.add_permits(1);
        until_started(&inner, 2).await;
        inner.gate.add_permits(1);
        assert_eq!(first.await.expect("task").expect("read"), 1);
        for read in later {
            assert_eq!(read.await.expect("task").expect("read"), 1);
        }
        assert_eq!(inner.started.load(Ordering::SeqCst), 2);
        let text = metrics.render();
        assert!(
            text.contains("hubbub_store_reads_total{kind=\"last_id\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hubbub_store_reads_joined_total{kind=\"last_id\"} 99"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_read_never_gets_a_query_that_started_before_it() {
        let inner = HeldStore::new(false);
        let (store, _metrics) = coalescing(&inner);
        let early = spawn_last_id(&store, "lobby");
        until_started(&inner, 1).await; // it has read 1 and is held
        inner.last.store(2, Ordering::SeqCst); // a message is committed meanwhile
        let late = spawn_last_id(&store, "lobby");
        until_waiting(&store, "lobby").await;
        inner.gate.add_permits(2);
        assert_eq!(early.await.expect("task").expect("read"), 1);
        assert_eq!(
            late.await.expect("task").expect("read"),
            2,
            "saw the commit"
        );
    }

    #[tokio::test]
    async fn reads_of_different_keys_do_not_wait_for_each_other() {
        let inner = HeldStore::new(false);
        let (store, _metrics) = coalescing(&inner);
        let one = spawn_last_id(&store, "one");
        let two = spawn_last_id(&store, "two");
        until_started(&inner, 2).await;
        inner.gate.add_permits(2);
        assert_eq!(one.await.expect("task").expect("read"), 1);
        assert_eq!(two.await.expect("task").expect("read"), 1);
    }

    #[tokio::test]
    async fn every_reader_of_a_failed_query_gets_its_error() {
        let inner = HeldStore::new(true);
        let (store, _metrics) = coalescing(&inner);
        let first = spawn_last_id(&store, "lobby");
        until_started(&inner, 1).await;
        let later: Vec<_> = (0..3).map(|_| spawn_last_id(&store, "lobby")).collect();
        until_joined(&store, 2).await;
        inner.gate.add_permits(2);
        let err = first.await.expect("task").expect_err("failed");
        assert_eq!(err.to_string(), "disk on fire");
        for read in later {
            let err = read.await.expect("task").expect_err("failed");
            assert_eq!(err.to_string(), "disk on fire");
        }
    }

    #[tokio::test]
    async fn a_waiting_query_starts_when_the_running_one_is_abandoned() {
        let inner = HeldStore::new(false);
        let (store, _metrics) = coalescing(&inner);
        let abandoned = spawn_last_id(&store, "lobby");
        until_started(&inner, 1).await;
        let waiting = spawn_last_id(&store, "lobby");
        until_waiting(&store, "lobby").await;
        abandoned.abort();
        let _ = abandoned.await;
        until_started(&inner, 2).await;
        inner.gate.add_permits(1);
        assert_eq!(waiting.await.expect("task").expect("read"), 1);
    }

    #[tokio::test]
    async fn a_query_whose_readers_went_away_does_not_hold_up_the_next_reader() {
        let inner = HeldStore::new(false);
        let (store, _metrics) = coalescing(&inner);
        let abandoned = spawn_last_id(&store, "lobby");
        until_started(&inner, 1).await;
        abandoned.abort();
        let _ = abandoned.await;
        let next = spawn_last_id(&store, "lobby");
        until_started(&inner, 2).await;
        inner.gate.add_permits(1);
        assert_eq!(next.await.expect("task").expect("read"), 1);
        assert!(lock(&store.last_ids.table).slots.is_empty(), "nothing left");
    }
}
