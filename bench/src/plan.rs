//! The plan of a run: its [`Size`] and every number the scenarios and the floor use at that
//! size, in one place so that the smoke, quick and full plans can be read side by side.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// The test suite's smoke run: a few dozen connections, one short phase per step, one echo
    /// round, no warm-up or settling pauses, and fan-out phases that end as soon as every post
    /// has been delivered. It checks that every scenario runs end to end; its numbers mean
    /// nothing. (`tiny` is its former name.)
    #[value(alias = "tiny")]
    #[serde(alias = "tiny")]
    Smoke,
    /// Up to 2,000 connections, a few seconds per phase.
    Quick,
    /// Up to 19,000 connections, 10 s per phase.
    Full,
}

/// Every number a run uses, derived from its [`Size`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub size: Size,
    /// Idle: connection counts measured one after the other on one server.
    pub idle_stages: Vec<usize>,
    /// Members per room in the idle scenario.
    pub idle_room_size: usize,
    /// Fan-out: (members, total posts per second) per stage, growing on one server.
    pub fanout_stages: Vec<(usize, f64)>,
    pub fanout_senders: usize,
    pub phase_ms: u64,
    pub drain_ms: u64,
    /// Saturation: members, senders, first total rate, growth factor, max steps.
    pub sat_members: usize,
    pub sat_senders: usize,
    pub sat_start_rate: f64,
    pub sat_factor: f64,
    pub sat_steps: usize,
    pub sat_phase_ms: u64,
    /// Many rooms: members, rooms, total posts per second, one sender per `rooms_stride`.
    pub rooms_members: usize,
    pub rooms_rooms: usize,
    pub rooms_rate: f64,
    pub rooms_stride: usize,
    /// Acks: members, senders, total posts per second.
    pub acks_members: usize,
    pub acks_senders: usize,
    pub acks_rate: f64,
    /// Cluster: members of the one room, spread round-robin over a configuration's nodes (a
    /// multiple of 6 spreads evenly over 1, 2 and 3 nodes).
    pub cluster_members: usize,
    /// Cluster: members that post (spread over the nodes like the rest); enough of them that
    /// the highest saturation step stays under hubbub's per-connection rate limit (10/s).
    pub cluster_senders: usize,
    /// Cluster: the moderate fixed load (total posts per second) at which latency, acks and
    /// CPU per delivery are compared.
    pub cluster_moderate_rate: f64,
    /// Cluster: an unmeasured phase at the moderate load before the measured ones (connection
    /// pools, prepared statements, the Redis subscription), in ms; 0 for none.
    pub cluster_warmup_ms: u64,
    /// Cluster: rounds of the moderate load, each over every configuration in turn.
    pub cluster_rounds: usize,
    /// Cluster saturation: first total post rate, growth factor and step budget.
    pub cluster_sat_start_rate: f64,
    pub cluster_sat_factor: f64,
    pub cluster_sat_steps: usize,
    /// Echo: connections doing back-to-back round trips.
    pub echo_conns: usize,
    pub echo_ms: u64,
    /// Echo rounds, each over every server in turn: the verdict is the median, since one
    /// 10-second round on a shared machine moves by a fifth.
    pub echo_rounds: usize,
    /// Bytes of text per post (the marker plus padding).
    pub text_len: usize,
    pub connect_timeout: Duration,
    /// How long a freshly started server is left alone before its baseline is read (JIT, GC
    /// heaps).
    pub server_warmup: Duration,
    /// How long the idle scenario lets the server settle after a stage connects, before reading
    /// its memory: idle memory is what an idle server holds, not the connect burst's garbage.
    /// 12 s covers jemalloc's decay (freed pages go back to the kernel within 10 s, hubbub's
    /// background thread doing it while nothing allocates) and gives Node's collector time.
    pub idle_settle: Duration,
    /// Rounds of the woken-reader floor (each pauses 20 ms for the readers to fall asleep);
    /// `None`: the floor's own default, about 100,000 writes.
    pub floor_woken_rounds: Option<usize>,
    /// End a fan-out phase's drain as soon as every expected delivery (and hubbub ack) has
    /// arrived; `drain_ms` is then only the deadline. Off in the measured plans, whose full
    /// drain also catches late duplicates.
    pub drain_until_delivered: bool,
}

impl Plan {
    pub fn new(size: Size) -> Plan {
        let base = Plan {
            size,
            idle_stages: vec![1_000, 5_000, 10_000, 19_000],
            idle_room_size: 100,
            fanout_stages: vec![
                (1_000, 20.0),
                (2_000, 20.0),
                (5_000, 8.0),
                (10_000, 4.0),
                (19_000, 2.0),
            ],
            fanout_senders: 10,
            phase_ms: 10_000,
            drain_ms: 3_000,
            sat_members: 1_000,
            sat_senders: 50,
            sat_start_rate: 20.0,
            sat_factor: 1.5,
            sat_steps: 12,
            sat_phase_ms: 5_000,
            rooms_members: 5_000,
            rooms_rooms: 100,
            rooms_rate: 100.0,
            rooms_stride: 20,
            acks_members: 200,
            acks_senders: 20,
            acks_rate: 200.0,
            cluster_members: 1_002,
            cluster_senders: 200,
            cluster_moderate_rate: 40.0,
            cluster_warmup_ms: 2_000,
            cluster_rounds: 3,
            cluster_sat_start_rate: 40.0,
            cluster_sat_factor: 1.5,
            cluster_sat_steps: 10,
            echo_conns: 50,
            echo_ms: 10_000,
            echo_rounds: 3,
            text_len: 120,
            connect_timeout: Duration::from_secs(300),
            server_warmup: Duration::from_millis(500),
            idle_settle: Duration::from_secs(12),
            floor_woken_rounds: None,
            drain_until_delivered: false,
        };
        match size {
            Size::Full => base,
            Size::Quick => Plan {
                idle_stages: vec![500, 2_000],
                fanout_stages: vec![(200, 20.0), (1_000, 20.0), (2_000, 20.0)],
                phase_ms: 4_000,
                drain_ms: 2_000,
                sat_members: 500,
                sat_factor: 2.0,
                sat_steps: 7,
                sat_phase_ms: 3_000,
                rooms_members: 1_000,
                rooms_rooms: 20,
                rooms_rate: 50.0,
                acks_members: 200,
                cluster_members: 204,
                cluster_senders: 204,
                cluster_moderate_rate: 100.0,
                cluster_warmup_ms: 1_000,
                cluster_sat_start_rate: 100.0,
                cluster_sat_steps: 8,
                echo_conns: 20,
                echo_ms: 3_000,
                connect_timeout: Duration::from_secs(120),
                ..base
            },
            Size::Smoke => Plan {
                idle_stages: vec![20],
                idle_room_size: 10,
                // Two stages, so that growth and the floor's growth are measured too.
                fanout_stages: vec![(10, 10.0), (20, 10.0)],
                fanout_senders: 2,
                phase_ms: 500,
                // Only a deadline: the drain ends once everything has arrived.
                drain_ms: 10_000,
                sat_members: 20,
                sat_senders: 2,
                sat_start_rate: 10.0,
                sat_factor: 2.0,
                sat_steps: 2,
                sat_phase_ms: 500,
                rooms_members: 30,
                rooms_rooms: 3,
                rooms_rate: 10.0,
                rooms_stride: 5,
                acks_members: 10,
                acks_senders: 2,
                acks_rate: 20.0,
                cluster_members: 12,
                cluster_senders: 6,
                cluster_moderate_rate: 12.0,
                cluster_warmup_ms: 0,
                cluster_rounds: 1,
                cluster_sat_start_rate: 12.0,
                cluster_sat_factor: 2.0,
                cluster_sat_steps: 2,
                echo_conns: 4,
                echo_ms: 300,
                echo_rounds: 1,
                connect_timeout: Duration::from_secs(30),
                server_warmup: Duration::ZERO,
                idle_settle: Duration::ZERO,
                // 25 rounds of 50 sockets: enough writes for the thread's CPU clock to move.
                floor_woken_rounds: Some(25),
                drain_until_delivered: true,
                ..base
            },
        }
    }
}
