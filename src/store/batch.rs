//! Batched point reads: many callers each asking for one key are answered by one query for all
//! their keys (`WHERE key IN (...)`), DataLoader-style.
//!
//! Every signed-in connection reads its account and its sidebar when it connects. One at a time
//! that is cheap, but a reconnect storm or a room filling up brings thousands within a second,
//! and on SQLite each read is a hand-off to the pool's worker thread and back (two thread
//! wake-ups), which cost more than the query itself (docs/benchmarks.md, round 15). A
//! [`Batcher`] runs one query at a time per kind of read; the requests that arrive while it runs
//! wait and go into the next one together. An idle server answers a lone request at once with a
//! batch of one; under load the batches grow by themselves, with no timer and no tuning.
//!
//! # Fresh reads only
//!
//! A request is answered by a query that *starts after the request was made*: the batch is
//! taken from the queue before its query starts, and a request that arrives while a query runs
//! waits for the next one. So to its caller a batched read is exactly a direct read that took a
//! little longer: a `hubbub user disable` committed before a token's connection asked for its
//! account is seen, as it would be without batching (the same rule as `coalesce.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Keys one query asks for at most; more requests wait for the next query.
const MAX_BATCH: usize = 512;

/// One query for a batch of keys: what it found, by key (a key it did not find is absent).
pub(crate) type LoadMany<K, V> =
    Arc<dyn Fn(Vec<K>) -> BoxFuture<'static, Result<HashMap<K, V>, StoreError>> + Send + Sync>;

/// What a request is answered with: the value if found; a failed query's error is shared by its
/// whole batch, so it is behind an `Arc`.
type Answer<V> = Result<Option<V>, Arc<StoreError>>;

/// One caller's key and where its answer goes.
struct Request<K, V> {
    key: K,
    answer: oneshot::Sender<Answer<V>>,
}

/// Answers point reads of one kind in batches (see the module doc).
pub(crate) struct Batcher<K, V> {
    load: LoadMany<K, V>,
    /// The queue to the task that runs the queries, started by the first request (so that a
    /// batcher can be made outside a runtime, as the operator CLI does).
    requests: OnceLock<mpsc::UnboundedSender<Request<K, V>>>,
}

impl<K, V> Batcher<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// A batcher whose queries are `load`.
    pub fn new(load: LoadMany<K, V>) -> Self {
        Batcher {
            load,
            requests: OnceLock::new(),
        }
    }

    /// The value for `key`, read by a query that started after this call (`None`: not found).
    pub async fn load(&self, key: K) -> Result<Option<V>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let requests = self.requests.get_or_init(|| {
            let (requests, queue) = mpsc::unbounded_channel();
            tokio::spawn(run(queue, self.load.clone()));
            requests
        });
        if requests.send(Request { key, answer }).is_err() {
            return Err(StoreError::Unavailable(
                "the batched reads have stopped".into(),
            ));
        }
        match answered.await {
            Ok(answer) => answer.map_err(|err| err.shared()),
            Err(_) => Err(StoreError::Unavailable(
                "a batched read was dropped unanswered".into(),
            )),
        }
    }
}

/// Takes what is queued (up to [`MAX_BATCH`]), reads it with one query, answers every request,
/// and again, until the batcher is dropped. A request whose caller has gone is still read (it
/// is in the batch already) and its answer dropped.
async fn run<K, V>(mut queue: mpsc::UnboundedReceiver<Request<K, V>>, load: LoadMany<K, V>)
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut keys: Vec<K> = batch.iter().map(|request| request.key.clone()).collect();
        dedup(&mut keys);
        let outcome = load(keys).await.map_err(Arc::new);
        for request in batch.drain(..) {
            let answer = match &outcome {
                Ok(found) => Ok(found.get(&request.key).cloned()),
                Err(err) => Err(err.clone()),
            };
            let _ = request.answer.send(answer);
        }
    }
}

/// Drops repeated keys, keeping the first of each (two devices of one account connecting at
/// once ask for the same account).
fn dedup<K: Eq + Hash + Clone>(keys: &mut Vec<K>) {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.retain(|key| seen.insert(key.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use tokio::sync::Semaphore;

    /// A load that reports each batch's keys on `taken` and waits for a permit of `gate` before
    /// answering (even keys are found), so a test holds a query running as long as it likes.
    fn held_load(
        taken: mpsc::UnboundedSender<Vec<u32>>,
        gate: Arc<Semaphore>,
        fail: bool,
    ) -> LoadMany<u32, String> {
        Arc::new(move |keys: Vec<u32>| {
            let (taken, gate) = (taken.clone(), gate.clone());
            Box::pin(async move {
                taken.send(keys.clone()).expect("the test listens");
                gate.acquire().await.expect("gate open").forget();
                if fail {
                    return Err(StoreError::Unavailable("disk on fire".into()));
                }
                Ok(keys
                    .into_iter()
                    .filter(|key| key % 2 == 0)
                    .map(|key| (key, format!("value {key}")))
                    .collect())
            })
        })
    }

    type Pending<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, StoreError>> + 'a>>;

    /// Starts a read of each key: polled once, each has made its request.
    async fn requested<'a>(batcher: &'a Batcher<u32, String>, keys: &[u32]) -> Vec<Pending<'a>> {
        let mut reads: Vec<Pending<'a>> = Vec::new();
        for &key in keys {
            let mut read: Pending<'a> = Box::pin(batcher.load(key));
            assert!(futures_util::poll!(read.as_mut()).is_pending());
            reads.push(read);
        }
        reads
    }

    #[tokio::test]
    async fn requests_made_while_a_query_runs_share_the_next_query() {
        let (taken, mut batches) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let batcher = Batcher::new(held_load(taken, gate.clone(), false));
        let first = requested(&batcher, &[2]).await;
        assert_eq!(batches.recv().await, Some(vec![2]));
        // The first query is running: these three wait, and then go in one query together.
        let later = requested(&batcher, &[4, 5, 4]).await;
        assert!(batches.try_recv().is_err(), "nothing joins a running query");
        gate.add_permits(2);
        for read in first {
            assert_eq!(read.await.unwrap(), Some("value 2".into()));
        }
        let mut answers = Vec::new();
        for read in later {
            answers.push(read.await.unwrap());
        }
        assert_eq!(
            answers,
            [Some("value 4".into()), None, Some("value 4".into())]
        );
        assert_eq!(
            batches.recv().await,
            Some(vec![4, 5]),
            "repeated keys are read once"
        );
    }

    #[tokio::test]
    async fn a_failed_query_fails_every_request_in_its_batch() {
        let (taken, mut batches) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let batcher = Batcher::new(held_load(taken, gate.clone(), true));
        let reads = requested(&batcher, &[1, 2]).await;
        assert_eq!(batches.recv().await, Some(vec![1, 2]));
        gate.add_permits(1);
        for read in reads {
            let err = read.await.unwrap_err();
            assert!(err.to_string().contains("disk on fire"), "{err}");
        }
    }
}
