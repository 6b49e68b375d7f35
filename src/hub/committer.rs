//! Group commit: posts queue here, and each turn of the loop stores everything queued (up to
//! `max_batch`) in one transaction and hands the stored batch to the broadcaster, which publishes
//! the messages in id order and then answers the posters. One commit's fsync is shared by the
//! whole batch, so acks stay fast under load; one committer feeding one broadcaster is what keeps
//! each room's broadcast order equal to its id order.
//!
//! The two are separate tasks so that a commit never waits for the previous broadcast: a fan-out
//! to 19,000 members takes a quarter of a second, and a post that arrives meanwhile is stored
//! during it and goes out the moment it ends, not a commit (and an fsync) later. Whatever was
//! committed while a fan-out ran leaves in the next one, each member's share in one write.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::PostError;
use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::store::{NewMessage, Store, StoredMessage};

/// One queued post and where its outcome goes.
pub(super) struct PostJob {
    pub message: NewMessage,
    pub reply: oneshot::Sender<Result<StoredMessage, PostError>>,
}

/// A stored batch on its way to the broadcaster, with the posters still waiting for their acks.
pub(super) struct Committed {
    stored: Vec<StoredMessage>,
    replies: Vec<oneshot::Sender<Result<StoredMessage, PostError>>>,
}

/// Stored batches the broadcaster may fall behind by before the committer waits for it (and, the
/// post queue filling, the posters wait too).
pub(super) const BROADCAST_QUEUE: usize = 8;

/// Runs until `stop` is cancelled, then stores whatever is still queued, closes the store and
/// returns; dropping `broadcast` then lets the broadcaster finish what it was handed.
pub(super) async fn run(
    mut queue: mpsc::Receiver<PostJob>,
    store: Arc<dyn Store>,
    broadcast: mpsc::Sender<Committed>,
    metrics: Metrics,
    max_batch: usize,
    stop: CancellationToken,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut outage = Outage::default();
    loop {
        let received = tokio::select! {
            n = queue.recv_many(&mut jobs, max_batch) => n,
            () = stop.cancelled() => {
                // Refuse new posts, then drain what was already accepted.
                queue.close();
                queue.recv_many(&mut jobs, max_batch).await
            }
        };
        if received == 0 {
            info!("committer drained, stopping");
            store.close().await;
            return;
        }
        if let Some(committed) = commit(&mut jobs, store.as_ref(), &metrics, &mut outage).await
            && broadcast.send(committed).await.is_err()
        {
            // The broadcaster only stops once this sender is gone; nothing to do but log.
            error!("broadcaster gone, stored posts not broadcast");
        }
    }
}

/// Publishes each stored batch, merged with any that queued up behind it, then acks its posters.
/// Ends when the committer has stopped and everything it handed over is out.
pub(super) async fn broadcast(mut queue: mpsc::Receiver<Committed>, broker: Arc<dyn Broker>) {
    let mut batches = Vec::with_capacity(BROADCAST_QUEUE);
    while queue.recv_many(&mut batches, BROADCAST_QUEUE).await > 0 {
        let mut stored = Vec::new();
        let mut replies = Vec::new();
        for batch in batches.drain(..) {
            stored.extend(batch.stored);
            replies.extend(batch.replies);
        }
        // The whole batch is broadcast before any ack, so each ack still follows its own
        // message, and a busy room's members get the batch in one write each.
        if let Err(err) = broker.publish_messages(&stored).await {
            // Stored but not broadcast: members catch up with `since` on resume.
            error!(posts = stored.len(), cause = %err, "broadcast failed");
        }
        for (message, reply) in stored.into_iter().zip(replies) {
            // The poster may have gone; the message is stored either way.
            let _ = reply.send(Ok(message));
        }
    }
}

/// A run of failed commits: the committer logs when the store stops taking posts and when it
/// takes them again, with what the outage cost, so an operator sees its start and end among the
/// per-batch errors.
#[derive(Debug, Default)]
struct Outage {
    /// When the first batch of the run failed; `None` while commits succeed.
    since: Option<Instant>,
    /// Batches and posts refused since then.
    batches: u64,
    posts: u64,
}

impl Outage {
    fn failed(&mut self, posts: usize, cause: &str) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            error!(
                cause,
                "store unavailable: posts are refused with store_unavailable until a commit succeeds"
            );
        }
        self.batches += 1;
        self.posts += posts as u64;
    }

    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            warn!(
                refused_batches = self.batches,
                refused_posts = self.posts,
                outage_secs = since.elapsed().as_secs_f64(),
                "store recovered: posts are stored again"
            );
            self.batches = 0;
            self.posts = 0;
        }
    }
}

/// Stores one batch. A store failure is answered here; a success goes on to the broadcaster.
async fn commit(
    jobs: &mut Vec<PostJob>,
    store: &dyn Store,
    metrics: &Metrics,
    outage: &mut Outage,
) -> Option<Committed> {
    let (batch, replies): (Vec<NewMessage>, Vec<_>) =
        jobs.drain(..).map(|job| (job.message, job.reply)).unzip();
    let started = Instant::now();
    let outcome = store.append(&batch).await;
    metrics
        .store_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.store_batch_size.observe(batch.len() as f64);
    match outcome {
        Ok(stored) => {
            outage.succeeded();
            metrics.messages_in.inc_by(stored.len() as u64);
            Some(Committed { stored, replies })
        }
        Err(err) => {
            let reason = err.to_string();
            outage.failed(batch.len(), &reason);
            error!(cause = %reason, posts = batch.len(), "group commit failed");
            metrics.store_errors.inc_by(batch.len() as u64);
            for reply in replies {
                let _ = reply.send(Err(PostError::Store(err.shared())));
            }
            None
        }
    }
}
