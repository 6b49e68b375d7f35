//! Group commit: posts queue here, and each turn of the loop stores everything queued (up to
//! `max_batch`) in one transaction, then publishes the messages in id order and answers the
//! posters. One commit's fsync is shared by the whole batch, so acks stay fast under load, and a
//! single committer is what keeps each room's broadcast order equal to its id order.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::PostError;
use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::store::{NewMessage, Store, StoredMessage};

/// One queued post and where its outcome goes.
pub(super) struct PostJob {
    pub message: NewMessage,
    pub reply: oneshot::Sender<Result<StoredMessage, PostError>>,
}

/// Runs until `stop` is cancelled, then stores whatever is still queued and returns.
pub(super) async fn run(
    mut queue: mpsc::Receiver<PostJob>,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    metrics: Metrics,
    max_batch: usize,
    stop: CancellationToken,
) {
    let mut jobs = Vec::with_capacity(max_batch);
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
            return;
        }
        commit(&mut jobs, store.as_ref(), broker.as_ref(), &metrics).await;
    }
}

async fn commit(
    jobs: &mut Vec<PostJob>,
    store: &dyn Store,
    broker: &dyn Broker,
    metrics: &Metrics,
) {
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
            metrics.messages_in.inc_by(stored.len() as u64);
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
        Err(err) => {
            error!(cause = %err, posts = batch.len(), "group commit failed");
            metrics.store_errors.inc_by(batch.len() as u64);
            let reason = err.to_string();
            for reply in replies {
                let _ = reply.send(Err(PostError::Store(
                    crate::store::StoreError::Unavailable(reason.clone()),
                )));
            }
        }
    }
}
