//! Read markers are never written once per message (issue 19): a `read` frame only raises the
//! account's marker for the room in an in-memory map (the highest id per account and room), and
//! one task writes the whole map in one transaction every [`FLUSH_EVERY`], or as soon as it holds
//! [`FLUSH_AT`] entries, and once more at shutdown (before the committer closes the store). A
//! client that marks every message it shows read costs one map update per frame and, per flush,
//! one row per account and room it read in.
//!
//! While an entry waits, [`ReadMarkers::pending`] answers for it, so `joined` and the sidebar
//! count unread from the newest marker even before it is stored. A flush that fails keeps its
//! entries (merged with newer ones) for the next. A crash loses at most the last second of
//! marker moves: the client's badge then shows a few messages unread that were read.
//!
//! The other connections of the account learn of a move at once through the cross-node control
//! event (`Hub::read_moved`), not through the database. Every node where the account is
//! connected also notes the move in its own map, so a `joined` or sidebar it serves next
//! (another device, or a page reloaded onto this node) counts from the new marker before the
//! node it moved on has written it; that node's flush writes the same row again, which changes
//! nothing (the store keeps the greater). A node where the account has no connection learns of
//! it from the store, up to a second late.
//!
//! **Written markers stay answerable for a few seconds.** A flush takes the pending markers out
//! of the map, but [`ReadMarkers::pending`] keeps answering for each for [`WRITTEN_KEPT`] after
//! it was taken: while its write is in flight (a `joined` meanwhile would find it neither here
//! nor in the store), and for the joins a signed-in connection makes in its first moments, which
//! count from the markers its sidebar read (accounts.rs, [`super::accounts::SIDEBAR_MARKERS_SERVE`])
//! plus what moved since, here or in this map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::RoomDirectory;
use crate::store::accounts::AccountId;
use crate::store::directory::ReadMarker;

/// How often pending markers are written.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Pending entries at which a flush starts at once.
pub(super) const FLUSH_AT: usize = 512;
/// How long the last flush at shutdown may take before it gives up (the store may be down).
const FINAL_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// How long a marker taken for writing is still answered from memory (see the module doc):
/// longer than a connection's sidebar markers serve its joins, by a flush period, so a move
/// made after the connection linked is here or in the store for as long as they do.
const WRITTEN_KEPT: Duration = Duration::from_secs(3);
const _: () = assert!(
    WRITTEN_KEPT.as_millis()
        >= super::accounts::SIDEBAR_MARKERS_SERVE.as_millis() + FLUSH_EVERY.as_millis()
);

/// Markers not yet written: the highest id read per (account, room); and those taken for
/// writing in the last [`WRITTEN_KEPT`].
#[derive(Default)]
pub(super) struct ReadMarkers {
    pending: Mutex<HashMap<(AccountId, String), u64>>,
    written: Mutex<HashMap<(AccountId, String), (u64, Instant)>>,
    full: Notify,
}

impl ReadMarkers {
    fn lock(&self) -> MutexGuard<'_, HashMap<(AccountId, String), u64>> {
        // Plain data behind the lock: nothing is left half-done by a panic elsewhere.
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Raises the account's marker in the room to `id`; `false` when it was already there or
    /// beyond (nothing to tell the account's other connections).
    pub(super) fn note(&self, account: AccountId, room: &str, id: u64, stored: u64) -> bool {
        if id <= stored {
            return false;
        }
        let mut pending = self.lock();
        let entry = pending.entry((account, room.to_owned())).or_insert(stored);
        if id <= *entry {
            return false;
        }
        *entry = id;
        let full = pending.len() >= FLUSH_AT;
        drop(pending);
        if full {
            self.full.notify_one();
        }
        true
    }

    fn lock_written(&self) -> MutexGuard<'_, HashMap<(AccountId, String), (u64, Instant)>> {
        self.written
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The marker waiting to be written for the account and room, or taken for writing in the
    /// last [`WRITTEN_KEPT`], if any.
    pub(super) fn pending(&self, account: AccountId, room: &str) -> Option<u64> {
        let key = (account, room.to_owned());
        let waiting = self.lock().get(&key).copied();
        let written = self.lock_written().get(&key).map(|(id, _)| *id);
        waiting.max(written)
    }

    /// The account's markers as [`ReadMarkers::pending`] answers them, by room (a scan of the
    /// maps, which flushes keep small; read once per signed-in connection, for its sidebar).
    pub(super) fn pending_of(&self, account: AccountId) -> Vec<(String, u64)> {
        let mut of: HashMap<String, u64> = self
            .lock_written()
            .iter()
            .filter(|((owner, _), _)| *owner == account)
            .map(|((_, room), (last_read, _))| (room.clone(), *last_read))
            .collect();
        for ((owner, room), last_read) in self.lock().iter() {
            if *owner == account {
                let entry = of.entry(room.clone()).or_default();
                *entry = (*entry).max(*last_read);
            }
        }
        of.into_iter().collect()
    }

    /// Takes every pending marker, keeping it answerable for [`WRITTEN_KEPT`] and forgetting
    /// those taken longer ago.
    fn take(&self) -> Vec<ReadMarker> {
        let taken = std::mem::take(&mut *self.lock());
        let now = Instant::now();
        let mut written = self.lock_written();
        written.retain(|_, (_, at)| now.duration_since(*at) < WRITTEN_KEPT);
        for (key, last_read) in &taken {
            let entry = written.entry(key.clone()).or_insert((0, now));
            *entry = (entry.0.max(*last_read), now);
        }
        drop(written);
        taken
            .into_iter()
            .map(|((account, room), last_read)| ReadMarker {
                account,
                room,
                last_read,
            })
            .collect()
    }

    /// Puts back markers a failed flush could not write, unless newer ones came meanwhile.
    fn restore(&self, markers: Vec<ReadMarker>) {
        let mut pending = self.lock();
        for marker in markers {
            let entry = pending.entry((marker.account, marker.room)).or_default();
            *entry = (*entry).max(marker.last_read);
        }
    }

    /// Writes every pending marker in one transaction; on failure they stay pending.
    async fn flush(&self, directory: &dyn RoomDirectory) -> bool {
        let markers = self.take();
        if markers.is_empty() {
            return true;
        }
        match directory.save_read_markers(&markers).await {
            Ok(()) => {
                debug!(markers = markers.len(), "read markers written");
                true
            }
            Err(err) => {
                warn!(markers = markers.len(), cause = %err, "writing read markers failed; kept for the next flush");
                self.restore(markers);
                false
            }
        }
    }
}

/// Writes pending markers every [`FLUSH_EVERY`] or at [`FLUSH_AT`] entries until `stop`, then
/// once more, and then cancels `flushed` (the committer waits for it before it closes the
/// store).
pub(super) async fn run(
    markers: Arc<ReadMarkers>,
    directory: Arc<dyn RoomDirectory>,
    stop: CancellationToken,
    flushed: CancellationToken,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = markers.full.notified() => {}
            () = stop.cancelled() => break,
        }
        markers.flush(directory.as_ref()).await;
    }
    let last = tokio::time::timeout(FINAL_FLUSH_LIMIT, markers.flush(directory.as_ref())).await;
    if !matches!(last, Ok(true)) {
        warn!("read markers moved in the last second before shutdown were not written");
    }
    flushed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_only_moves_forward() {
        let markers = ReadMarkers::default();
        assert!(markers.note(AccountId(1), "a", 5, 0));
        assert!(!markers.note(AccountId(1), "a", 4, 0));
        assert!(!markers.note(AccountId(1), "a", 5, 0));
        assert!(
            !markers.note(AccountId(1), "b", 3, 3),
            "already stored there"
        );
        assert_eq!(markers.pending(AccountId(1), "a"), Some(5));
    }

    #[test]
    fn a_failed_flush_keeps_the_newest_marker() {
        let markers = ReadMarkers::default();
        markers.note(AccountId(1), "a", 5, 0);
        let taken = markers.take();
        markers.note(AccountId(1), "a", 7, 0);
        markers.restore(taken);
        assert_eq!(markers.pending(AccountId(1), "a"), Some(7));
    }

    #[test]
    fn a_marker_taken_for_writing_is_still_answered() {
        let markers = ReadMarkers::default();
        markers.note(AccountId(1), "a", 5, 0);
        let taken = markers.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(markers.pending(AccountId(1), "a"), Some(5));
        assert_eq!(markers.pending_of(AccountId(1)), [("a".to_owned(), 5)]);
        markers.note(AccountId(1), "a", 6, 0);
        assert_eq!(markers.pending(AccountId(1), "a"), Some(6));
        assert!(markers.take().len() == 1, "the newer one is still written");
    }

    #[test]
    fn the_map_holds_one_entry_per_account_and_room_however_many_reads() {
        let markers = ReadMarkers::default();
        for id in 1..=1000 {
            markers.note(AccountId(1), "a", id, 0);
        }
        let taken = markers.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].last_read, 1000);
    }
}
