//! The ordering gate of a node in a cluster: whatever reaches it (this node's own commits, other
//! nodes' batches from the bus, reads from the store) leaves it once per message, in id order per
//! room, with no id skipped.
//!
//! Why it is needed: each node commits on its own, so two nodes posting to one room at once can
//! publish ids 7 and 8 in either order, and a node can hear 8 first. Why it is enough: per room,
//! ids are gapless in the store and commit order is id order (the PostgreSQL store allocates them
//! from a counter row locked in the commit), so when 8 is here, 7 is already committed: it is
//! either still on its way over the bus or can be read from the store. The gate keeps, per room,
//! the last id it delivered; a message above `last + 1` is held; when `last + 1` arrives the run
//! behind it is released; when it has not arrived after `gap_wait` the gap is read from the store;
//! anything at or below `last` is a duplicate and dropped.
//!
//! Where it lives: in the broker, which holds an `Arc<dyn Store>` for the gap reads (`broker →
//! store` is allowed; `store` and `broker` never import `hub`). The hub stays unchanged: it still
//! receives `deliver_messages` batches in id order per room, as from the local broker.
//!
//! One task owns the state (no lock): inputs come through one channel, and a gap read or a
//! catch-up runs inside that task, so nothing is delivered while it reads. Such reads are rare
//! (a gap that outlives `gap_wait`, a Redis reconnect). A line is kept for every room the store
//! had at start or the gate has seen since (an id and an empty map each); rooms are not
//! forgotten while the node runs.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Deliver;
use crate::protocol::RoomName;
use crate::store::{RoomSummary, Store, StoreError, StoredMessage};

/// Most messages one gap read or catch-up read asks the store for at a time.
const READ_PAGE: u32 = 1000;

/// What the gate task is handed.
pub(crate) enum Input {
    /// This node's own commit. `done` is answered once every message of it has been delivered
    /// (or was already), so the broadcaster's acks still follow their messages.
    Local {
        /// The committed batch, in id order per room.
        messages: Vec<StoredMessage>,
        /// Answered when the batch is out.
        done: oneshot::Sender<()>,
    },
    /// Another node's commit, from the bus.
    Remote(Vec<StoredMessage>),
    /// The bus subscription is (again) active: read from the store whatever went by while it was
    /// not, for every room this node has members in.
    Resubscribed,
    /// The bus connection is lost: until [`Input::Resubscribed`], a gap cannot be closed by the
    /// bus, so it is read from the store at once instead of after the wait.
    BusLost,
}

/// One room's line: the last id delivered and what waits behind a gap.
#[derive(Debug, Default)]
struct Line {
    last: u64,
    held: BTreeMap<u64, StoredMessage>,
    /// When the oldest gap was noticed; `None` while nothing is held.
    gap_since: Option<Instant>,
}

/// A gap that has waited long enough to be read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueGap {
    /// The room.
    pub room: String,
    /// Its last delivered id: the read starts after it.
    pub last: u64,
    /// The lowest id held: the read need not go past it.
    pub first_held: u64,
}

/// Every room's line; pure state, so the ordering rules are tested without I/O.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    rooms: HashMap<String, Line>,
}

impl Lines {
    /// Lines that start at each room's newest stored id: everything up to it is history, which a
    /// joining member reads from the store.
    pub fn starting_at(rooms: Vec<RoomSummary>) -> Self {
        let rooms = rooms
            .into_iter()
            .map(|summary| {
                let line = Line {
                    last: summary.last_id,
                    ..Line::default()
                };
                (summary.room, line)
            })
            .collect();
        Self { rooms }
    }

    /// The last id delivered in `room` (0 for a room never seen: it had no messages at start).
    pub fn last(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, |line| line.last)
    }

    /// Takes `messages` in; appends to `out` those that can go now, in id order per room, and
    /// drops duplicates. Returns the rooms left with a gap.
    pub fn offer(
        &mut self,
        messages: Vec<StoredMessage>,
        now: Instant,
        out: &mut Vec<StoredMessage>,
    ) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        for message in messages {
            let line = match self.rooms.entry(message.room.as_str().to_owned()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(Line::default()),
            };
            if message.id <= line.last || line.held.contains_key(&message.id) {
                debug!(room = %message.room, id = message.id, "duplicate dropped");
                continue;
            }
            if !touched.iter().any(|room| message.room == room.as_str()) {
                touched.push(message.room.as_str().to_owned());
            }
            line.held.insert(message.id, message);
        }
        touched
            .into_iter()
            .filter(|room| self.release(room, now, out))
            .collect()
    }

    /// Moves `room`'s line on to `id` without delivering what lies between (nobody here needs
    /// it, or the store has no such messages), then releases what follows. Returns whether a gap
    /// remains.
    pub fn advance_to(
        &mut self,
        room: &str,
        id: u64,
        now: Instant,
        out: &mut Vec<StoredMessage>,
    ) -> bool {
        let line = self.rooms.entry(room.to_owned()).or_default();
        if id <= line.last {
            return !line.held.is_empty();
        }
        line.last = id;
        line.held = line.held.split_off(&(id + 1));
        self.release(room, now, out)
    }

    /// The gaps that have waited `wait` by `now`.
    pub fn due(&self, now: Instant, wait: Duration) -> Vec<DueGap> {
        self.rooms
            .iter()
            .filter(|(_, line)| line.gap_since.is_some_and(|since| since + wait <= now))
            .filter_map(|(room, line)| {
                let first_held = *line.held.keys().next()?;
                Some(DueGap {
                    room: room.clone(),
                    last: line.last,
                    first_held,
                })
            })
            .collect()
    }

    /// When the oldest gap is due.
    pub fn next_due(&self, wait: Duration) -> Option<Instant> {
        self.rooms
            .values()
            .filter_map(|line| line.gap_since)
            .min()
            .map(|since| since + wait)
    }

    /// The lowest held id of `room`, if it has a gap.
    pub fn first_held(&self, room: &str) -> Option<u64> {
        self.rooms
            .get(room)
            .and_then(|line| line.held.keys().next().copied())
    }

    /// Restarts `room`'s gap clock (a store read failed or came back short: try again later).
    pub fn retry_later(&mut self, room: &str, now: Instant) {
        if let Some(line) = self.rooms.get_mut(room)
            && !line.held.is_empty()
        {
            line.gap_since = Some(now);
        }
    }

    /// Releases the run that follows `room`'s last id; returns whether a gap remains.
    fn release(&mut self, room: &str, now: Instant, out: &mut Vec<StoredMessage>) -> bool {
        let Some(line) = self.rooms.get_mut(room) else {
            return false;
        };
        while let Some(entry) = line.held.first_entry() {
            if *entry.key() != line.last + 1 {
                break;
            }
            line.last += 1;
            out.push(entry.remove());
        }
        if line.held.is_empty() {
            line.gap_since = None;
            false
        } else {
            line.gap_since.get_or_insert(now);
            true
        }
    }
}

/// A local batch waiting to be out: per room its highest id, and whom to tell.
type Waiter = (Vec<(String, u64)>, oneshot::Sender<()>);

/// The gate task's state: the lines, where gaps are read from and where messages go.
pub(crate) struct Gate {
    lines: Lines,
    store: Arc<dyn Store>,
    receiver: Arc<OnceLock<Weak<dyn Deliver>>>,
    wait: Duration,
    /// Local batches not yet fully delivered.
    waiters: Vec<Waiter>,
    /// A catch-up that failed (the store was unreachable) and is tried again at this time.
    catch_up_due: Option<Instant>,
    /// Whether the bus subscription is active (a gap may still close by itself).
    bus_up: bool,
}

impl Gate {
    /// A gate whose lines start at each room's newest stored id (read before the node serves,
    /// so no member can have joined in between).
    pub async fn start(
        store: Arc<dyn Store>,
        receiver: Arc<OnceLock<Weak<dyn Deliver>>>,
        wait: Duration,
    ) -> Result<Self, StoreError> {
        let rooms = store.rooms().await?;
        Ok(Self {
            lines: Lines::starting_at(rooms),
            store,
            receiver,
            wait,
            waiters: Vec::new(),
            catch_up_due: None,
            bus_up: false,
        })
    }

    /// Runs until `stop` or until every sender of `inputs` is gone.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, stop: CancellationToken) {
        loop {
            let due = [self.lines.next_due(self.wait), self.catch_up_due]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input).await,
                    None => return,
                },
                () = sleep_until(due) => self.on_timer().await,
            }
        }
    }

    /// Takes one input in and delivers what it lets out.
    pub async fn handle(&mut self, input: Input) {
        match input {
            Input::Local { messages, done } => {
                let needs = highest_per_room(&messages);
                self.take(messages).await;
                self.waiters.push((needs, done));
                self.answer_waiters();
            }
            Input::Remote(messages) => {
                self.take(messages).await;
                self.answer_waiters();
            }
            Input::Resubscribed => {
                self.bus_up = true;
                self.catch_up().await;
            }
            Input::BusLost => self.bus_up = false,
        }
    }

    /// Reads the gaps that are due, and retries a failed catch-up.
    pub async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.catch_up_due.is_some_and(|at| at <= now) {
            self.catch_up().await;
        }
        for gap in self.lines.due(now, self.wait) {
            self.fill(gap).await;
        }
        self.answer_waiters();
    }

    /// The last id delivered in `room`.
    #[cfg(test)]
    pub fn last(&self, room: &str) -> u64 {
        self.lines.last(room)
    }

    /// Offers messages, lets a gap in a room without members here go at once (see
    /// [`Gate::skip_unwatched`]), and delivers. While the bus is down, a gap in a room with
    /// members here is read from the store at once: nothing else could close it.
    async fn take(&mut self, messages: Vec<StoredMessage>) {
        let mut out = Vec::new();
        let gaps = self.lines.offer(messages, Instant::now(), &mut out);
        let mut read_now = Vec::new();
        for room in gaps {
            if self.watched(&room) {
                read_now.push(room);
            } else {
                self.skip_unwatched(&room, &mut out);
            }
        }
        self.deliver(out).await;
        if self.bus_up {
            return;
        }
        for room in read_now {
            if let Some(first_held) = self.lines.first_held(&room) {
                let last = self.lines.last(&room);
                self.fill(DueGap {
                    room,
                    last,
                    first_held,
                })
                .await;
            }
        }
    }

    /// A room with no member on this node needs no wait and no store read: the ids below the
    /// held one are committed (ids are gapless and committed in order), so a member who joins
    /// later reads them in its replay, which starts after it was added; no member here can be
    /// waiting for them live.
    fn skip_unwatched(&mut self, room: &str, out: &mut Vec<StoredMessage>) {
        if let Some(first) = self.lines.first_held(room) {
            self.lines.advance_to(room, first - 1, Instant::now(), out);
        }
    }

    /// Whether this node has members in `room` (no receiver: nobody to deliver to).
    fn watched(&self, room: &str) -> bool {
        self.receiver
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|receiver| receiver.has_room(room))
    }

    /// Closes one gap from the store, page by page up to the first held id.
    async fn fill(&mut self, gap: DueGap) {
        let mut out = Vec::new();
        if !self.watched(&gap.room) {
            self.skip_unwatched(&gap.room, &mut out);
            self.deliver(out).await;
            return;
        }
        let Ok(room) = RoomName::parse(&gap.room) else {
            // Names on the bus are checked when decoded; nothing to read for one that is not.
            self.lines
                .advance_to(&gap.room, gap.first_held - 1, Instant::now(), &mut out);
            self.deliver(out).await;
            return;
        };
        let mut last = gap.last;
        while last + 1 < gap.first_held {
            let limit = u32::try_from(gap.first_held - last - 1)
                .unwrap_or(READ_PAGE)
                .min(READ_PAGE);
            let page = match self.store.after(&room, last, limit).await {
                Ok(page) => page,
                Err(err) => {
                    warn!(room = %gap.room, after = last, cause = %err, "gap read failed; retrying");
                    self.lines.retry_later(&gap.room, Instant::now());
                    break;
                }
            };
            let Some(first) = page.first().map(|m| m.id) else {
                warn!(room = %gap.room, after = last, "the store has no message after the gap yet; retrying");
                self.lines.retry_later(&gap.room, Instant::now());
                break;
            };
            if first > last + 1 {
                // The store is the truth: ids it does not have were never committed.
                warn!(room = %gap.room, from = last + 1, to = first - 1, "ids missing from the store skipped");
                self.lines
                    .advance_to(&gap.room, first - 1, Instant::now(), &mut out);
            }
            last = page.last().map_or(last, |m| m.id);
            info!(room = %gap.room, read = page.len(), "gap filled from the store");
            self.lines.offer(page, Instant::now(), &mut out);
        }
        self.deliver(out).await;
    }

    /// After a (re)subscription: for every room whose stored newest id is past the line, reads
    /// what this node missed (rooms with members here) or moves the line on (rooms without).
    async fn catch_up(&mut self) {
        self.catch_up_due = None;
        let rooms = match self.store.rooms().await {
            Ok(rooms) => rooms,
            Err(err) => {
                warn!(cause = %err, "catch-up could not list rooms; retrying");
                self.catch_up_due = Some(Instant::now() + self.wait);
                return;
            }
        };
        let mut caught_up = 0usize;
        for summary in rooms {
            if summary.last_id <= self.lines.last(&summary.room) {
                continue;
            }
            if self.watched(&summary.room) {
                caught_up += self.catch_up_room(&summary).await;
            } else {
                let mut out = Vec::new();
                self.lines
                    .advance_to(&summary.room, summary.last_id, Instant::now(), &mut out);
                self.deliver(out).await;
            }
        }
        info!(messages = caught_up, "caught up from the store");
        self.answer_waiters();
    }

    /// Reads one room from its line to `summary.last_id` and delivers it; returns how many.
    async fn catch_up_room(&mut self, summary: &RoomSummary) -> usize {
        let Ok(room) = RoomName::parse(&summary.room) else {
            return 0;
        };
        let mut read = 0;
        loop {
            let last = self.lines.last(&summary.room);
            if last >= summary.last_id {
                return read;
            }
            let page = match self.store.after(&room, last, READ_PAGE).await {
                Ok(page) if !page.is_empty() => page,
                Ok(_) => return read,
                Err(err) => {
                    warn!(room = %summary.room, cause = %err, "catch-up read failed; retrying");
                    self.catch_up_due = Some(Instant::now() + self.wait);
                    return read;
                }
            };
            read += page.len();
            let mut out = Vec::new();
            if let Some(first) = page.first().map(|m| m.id)
                && first > last + 1
            {
                self.lines
                    .advance_to(&summary.room, first - 1, Instant::now(), &mut out);
            }
            self.lines.offer(page, Instant::now(), &mut out);
            self.deliver(out).await;
        }
    }

    /// Hands released messages to this node's hub in one batch.
    async fn deliver(&self, out: Vec<StoredMessage>) {
        if out.is_empty() {
            return;
        }
        if let Some(receiver) = self.receiver.get().and_then(Weak::upgrade) {
            receiver.deliver_messages(&out).await;
        }
    }

    /// Tells every local batch that is now fully out.
    fn answer_waiters(&mut self) {
        let lines = &self.lines;
        let (out, waiting): (Vec<_>, Vec<_>) = self
            .waiters
            .drain(..)
            .partition(|(needs, _)| needs.iter().all(|(room, id)| lines.last(room) >= *id));
        self.waiters = waiting;
        for (_, done) in out {
            let _ = done.send(());
        }
    }
}

/// Per room, the highest id in `messages`.
fn highest_per_room(messages: &[StoredMessage]) -> Vec<(String, u64)> {
    let mut needs: Vec<(String, u64)> = Vec::new();
    for message in messages {
        match needs
            .iter_mut()
            .find(|(room, _)| message.room == room.as_str())
        {
            Some((_, id)) => *id = (*id).max(message.id),
            None => needs.push((message.room.as_str().to_owned(), message.id)),
        }
    }
    needs
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::broker::RoomEvent;
    use crate::config::Durability;
    use crate::store::{NewMessage, SqliteStore};

    const WAIT: Duration = Duration::from_millis(200);

    /// A node's hub as the gate sees it: records the ids it is handed, per room.
    struct Recorder {
        delivered: Mutex<Vec<u64>>,
        has_members: bool,
    }

    impl Deliver for Recorder {
        fn deliver(&self, _room: &str, event: RoomEvent) {
            if let RoomEvent::Message(message) = event {
                self.delivered.lock().unwrap().push(message.id);
            }
        }

        fn has_room(&self, _room: &str) -> bool {
            self.has_members
        }
    }

    struct Setup {
        gate: Gate,
        store: Arc<dyn Store>,
        recorder: Arc<Recorder>,
        _dir: tempfile::TempDir,
    }

    impl Setup {
        fn delivered(&self) -> Vec<u64> {
            self.recorder.delivered.lock().unwrap().clone()
        }

        /// Commits `n` messages to the lobby behind the gate's back (another node's commits
        /// whose publish has not arrived).
        async fn commit_elsewhere(&self, n: usize) -> Vec<StoredMessage> {
            let batch: Vec<NewMessage> = (0..n)
                .map(|i| NewMessage {
                    room: RoomName::lobby(),
                    from: "other-node".into(),
                    text: format!("m{i}"),
                    ts: 0,
                    author: None,
                    reply_to: None,
                    attachment: None,
                })
                .collect();
            self.store.append(&batch).await.unwrap()
        }
    }

    /// A gate on a real SQLite store with `history` lobby messages committed before it starts;
    /// its bus is up (subscribed) unless a test says otherwise.
    async fn setup(history: usize, has_members: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("gate.db"), WAIT * 25, Durability::Process)
                .await
                .unwrap(),
        );
        let recorder = Arc::new(Recorder {
            delivered: Mutex::new(Vec::new()),
            has_members,
        });
        let receiver: Arc<OnceLock<Weak<dyn Deliver>>> = Arc::new(OnceLock::new());
        let weak: Weak<dyn Deliver> = Arc::downgrade(&recorder) as Weak<dyn Deliver>;
        receiver.set(weak).ok();
        let mut setup = Setup {
            gate: Gate::start(store.clone(), receiver.clone(), WAIT)
                .await
                .unwrap(),
            store,
            recorder,
            _dir: dir,
        };
        if history > 0 {
            setup.commit_elsewhere(history).await;
            setup.gate = Gate::start(setup.store.clone(), receiver, WAIT)
                .await
                .unwrap();
        }
        setup.gate.handle(Input::Resubscribed).await;
        setup
    }

    fn lobby(id: u64) -> StoredMessage {
        StoredMessage {
            room: RoomName::lobby(),
            id,
            ts: 0,
            from: "x".into(),
            text: format!("m{id}"),
            author: None,
            reply_to: None,
            attachment: None,
        }
    }

    fn remote(ids: &[u64]) -> Input {
        Input::Remote(ids.iter().map(|id| lobby(*id)).collect())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_message_ahead_of_a_gap_is_held_until_the_gap_arrives() {
        let mut s = setup(0, true).await;
        tokio::time::pause();
        s.gate.handle(remote(&[2, 3])).await;
        assert_eq!(s.delivered(), Vec::<u64>::new());
        s.gate.handle(remote(&[1])).await;
        assert_eq!(s.delivered(), vec![1, 2, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_message_at_or_below_the_last_delivered_id_is_dropped() {
        let mut s = setup(0, true).await;
        tokio::time::pause();
        s.gate.handle(remote(&[1, 2])).await;
        s.gate.handle(remote(&[2, 1, 3])).await;
        s.gate.handle(remote(&[3])).await;
        assert_eq!(s.delivered(), vec![1, 2, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_duplicate_of_a_held_message_is_dropped() {
        let mut s = setup(0, true).await;
        tokio::time::pause();
        s.gate.handle(remote(&[3])).await;
        s.gate.handle(remote(&[3, 2])).await;
        s.gate.handle(remote(&[1])).await;
        assert_eq!(s.delivered(), vec![1, 2, 3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gap_is_read_from_the_store_once_the_wait_is_over() {
        let mut s = setup(0, true).await;
        let committed = s.commit_elsewhere(3).await;
        assert_eq!(committed.last().map(|m| m.id), Some(3));
        tokio::time::pause();
        s.gate
            .handle(Input::Remote(vec![committed[2].clone()]))
            .await;
        tokio::time::advance(WAIT - Duration::from_millis(1)).await;
        s.gate.on_timer().await;
        assert_eq!(s.delivered(), Vec::<u64>::new(), "read before the wait");
        tokio::time::advance(Duration::from_millis(1)).await;
        // The clock runs again for the read: paused, it would jump to sqlx's own timeouts
        // while the SQLite worker thread answers.
        tokio::time::resume();
        s.gate.on_timer().await;
        assert_eq!(s.delivered(), vec![1, 2, 3]);
        assert_eq!(s.gate.last("lobby"), 3);
    }

    /// The task on the real clock: the gap is read `WAIT` after it was noticed.
    #[tokio::test(flavor = "current_thread")]
    async fn the_gate_task_reads_a_gap_when_its_timer_fires() {
        let s = setup(0, true).await;
        let committed = s.commit_elsewhere(2).await;
        let gate = s.gate;
        let (inputs, queue) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let recorder = s.recorder.clone();
        let task = tokio::spawn(gate.run(queue, stop.clone()));
        inputs
            .send(Input::Remote(vec![committed[1].clone()]))
            .await
            .unwrap();
        let (done, delivered) = oneshot::channel();
        inputs
            .send(Input::Local {
                messages: vec![committed[1].clone()],
                done,
            })
            .await
            .unwrap();
        // Answered only once the gap (id 1) was read from the store and both went out.
        delivered.await.unwrap();
        assert_eq!(*recorder.delivered.lock().unwrap(), vec![1, 2]);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn while_the_bus_is_down_a_gap_is_read_from_the_store_at_once() {
        let mut s = setup(0, true).await;
        s.gate.handle(Input::BusLost).await;
        let committed = s.commit_elsewhere(3).await;
        let (done, delivered) = oneshot::channel();
        s.gate
            .handle(Input::Local {
                messages: vec![committed[2].clone()],
                done,
            })
            .await;
        assert_eq!(
            s.delivered(),
            vec![1, 2, 3],
            "no wait for a bus that is down"
        );
        delivered.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_local_batch_is_answered_only_once_it_is_delivered() {
        let mut s = setup(0, true).await;
        tokio::time::pause();
        let (done, mut delivered) = oneshot::channel();
        s.gate
            .handle(Input::Local {
                messages: vec![lobby(2)],
                done,
            })
            .await;
        assert!(delivered.try_recv().is_err(), "answered while held");
        s.gate.handle(remote(&[1])).await;
        assert!(delivered.try_recv().is_ok());
        assert_eq!(s.delivered(), vec![1, 2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gap_in_a_room_without_members_here_is_passed_without_waiting() {
        let mut s = setup(0, false).await;
        tokio::time::pause();
        s.gate.handle(remote(&[5])).await;
        assert_eq!(s.delivered(), vec![5]);
        s.gate.handle(remote(&[4])).await;
        assert_eq!(s.delivered(), vec![5], "a late earlier id is a duplicate");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_gate_starts_at_each_rooms_stored_history() {
        let mut s = setup(2, true).await;
        tokio::time::pause();
        s.gate.handle(remote(&[2])).await;
        s.gate.handle(remote(&[3])).await;
        assert_eq!(s.delivered(), vec![3]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_resubscription_catches_up_from_the_store_by_the_last_delivered_id() {
        let mut s = setup(0, true).await;
        s.gate.handle(remote(&[1])).await;
        // Committed on other nodes while this node was cut off from the bus.
        s.commit_elsewhere(4).await;
        s.gate.handle(Input::Resubscribed).await;
        assert_eq!(s.delivered(), vec![1, 2, 3, 4]);
    }
}
