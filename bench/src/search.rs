//! The search benchmark (issue 20: "search answers in under 50 ms at the p99 over 1,000,000
//! stored messages on this machine"): `hubbub-bench search --size full`.
//!
//! 1. **Fill.** A seeded generator writes a `hubbub-history` JSON Lines file (docs/deploy.md):
//!    messages over 100 rooms (room popularity Zipf-like), 3 to 30 words each drawn from a
//!    Zipf distribution (exponent 1) over a 30,000-word vocabulary (a list of common English
//!    words first, then made-up words of two to four syllables), plus a few rare marker words
//!    each in about one message in 50,000. The same seed always gives the same file. It is kept
//!    under `target/bench-search/`, and so is the SQLite database `hubbub import` fills from it
//!    (reused while its `complete` marker is there), so a second run starts at once.
//! 2. **Serve.** The real `hubbub serve` on that database (`--rate-limit 0`: the benchmark is one
//!    client asking as fast as answers come; a token caller with no `rooms` claim, so it may read
//!    every room). With `--postgres`, the same file is also imported into a private PostgreSQL
//!    (scripts/pg.sh) and searched there.
//! 3. **Ask.** `queries` GET /api/search requests, one at a time over one keep-alive connection,
//!    cycling through the query kinds (a common word, a mid-frequency word, a rare word, two
//!    words, a common and a rare word; the common, rare and two-word ones also with `room=`),
//!    each answer read whole and checked (200, JSON with `results`).
//! 4. **Report.** p50, p99 and max latency (request written to last byte read) per kind and
//!    overall, as JSON (`--out`, default docs/bench/search.json).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hist::{Percentiles, new_histogram, record};
use crate::plan::Size;
use crate::report::Machine;
use crate::servers::{Server, ServerPaths};
use crate::services::{Kind, Service};

/// The secret the benchmark's hubbub takes tokens signed with.
const SECRET: &str = "hubbub-bench-search-secret";
/// Bumped whenever the generator changes, so a cached fill of another shape is never reused.
const GENERATOR_VERSION: u32 = 1;
/// Rooms the fill spreads over.
const ROOMS: usize = 100;
/// Distinct words in the vocabulary.
const VOCABULARY: usize = 30_000;
/// One message in this many carries one rare marker word.
const RARE_EVERY: u64 = 50_000;
/// The rare marker words.
const RARE_WORDS: [&str; 8] = [
    "zephyrine",
    "quokkalith",
    "brindlewump",
    "xylomancer",
    "glimmerfen",
    "marrowquill",
    "tessaract",
    "vorpalina",
];

/// Common English words, most frequent first: the head of the Zipf distribution.
const COMMON: &str = "the be to of and a in that have i it for not on with he as you do at \
this but his by from they we say her she or an will my one all would there their what so up \
out if about who get which go me when make can like time no just him know take people into \
year your good some could them see other than then now look only come its over think also \
back after use two how our work first well way even new want because any these give day most \
us is are was were been has had did said went got made deploy server build test release \
merge branch commit review patch bug fix issue ticket meeting lunch coffee today tomorrow \
yesterday morning afternoon evening night week month team project plan design idea question \
answer problem error log crash restart database query index cache memory disk network latency \
cpu load traffic user account password login session token room channel message reply thread \
search file image photo screenshot link doc docs readme spec draft version update upgrade \
rollback config flag option setting default value number string list map key table row column \
schema migration backup restore monitor alert page oncall incident outage status green red \
yellow ship done blocked waiting ready pending approved rejected thanks please sorry hello hi \
hey ok okay yes sure maybe great nice cool awesome weird strange odd funny happy sad tired \
busy free early late soon later again still already almost never always often sometimes";

/// Syllables of the made-up words of the vocabulary's tail.
const SYLLABLES: [&str; 24] = [
    "ka", "ro", "mi", "te", "sul", "van", "dor", "pel", "qui", "bra", "nos", "lit", "gar", "fen",
    "zo", "hul", "tra", "mek", "sio", "pla", "dru", "wen", "cor", "bix",
];

/// How many messages and queries a size means.
fn sizes(size: Size) -> (u64, usize) {
    match size {
        Size::Smoke => (5_000, 100),
        Size::Quick => (50_000, 500),
        Size::Full => (1_000_000, 2_000),
    }
}

/// The flags of `hubbub-bench search`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// smoke (5,000 messages, 100 queries), quick (50,000, 500) or full (1,000,000, 2,000).
    #[arg(long, value_enum, default_value = "quick")]
    size: Size,
    /// Queries to send (default: the size's).
    #[arg(long)]
    queries: Option<usize>,
    #[arg(long, default_value = "target/release/hubbub")]
    hubbub_bin: PathBuf,
    /// Core the server is pinned to; `none` to not pin.
    #[arg(long, default_value = "0")]
    pin: String,
    /// Also import the fill into a private PostgreSQL (scripts/pg.sh) and search there.
    #[arg(long)]
    postgres: bool,
    /// The project's scripts directory (for pg.sh).
    #[arg(long, default_value = "scripts")]
    scripts_dir: PathBuf,
    /// Where the fill and the SQLite database are cached.
    #[arg(long, default_value = "target/bench-search")]
    cache_dir: PathBuf,
    /// Results file.
    #[arg(long, default_value = "docs/bench/search.json")]
    out: PathBuf,
    /// Directory for server logs.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
}

/// What one backend's run measured.
#[derive(Debug, Serialize)]
struct BackendResult {
    backend: String,
    /// Seconds `hubbub import` took (0 when the cached database was reused).
    import_secs: f64,
    /// Per query kind, and `overall`.
    latency: BTreeMap<String, KindResult>,
}

#[derive(Debug, Serialize)]
struct KindResult {
    #[serde(flatten)]
    percentiles: Percentiles,
    /// Mean number of results per answer (at most the page size, 20).
    mean_results: f64,
    /// One query of the kind, as sent.
    example: String,
}

/// The results file.
#[derive(Debug, Serialize)]
struct SearchResults {
    machine: Machine,
    command: String,
    hubbub_bin: String,
    size: Size,
    messages: u64,
    rooms: usize,
    vocabulary: usize,
    queries: usize,
    started: String,
    finished: String,
    backends: Vec<BackendResult>,
}

/// Runs the benchmark (module doc).
pub async fn run(args: SearchArgs, command: String) -> Result<()> {
    let (messages, default_queries) = sizes(args.size);
    let queries = args.queries.unwrap_or(default_queries);
    let pin_core = match args.pin.as_str() {
        "none" => None,
        c => Some(c.parse().context("--pin takes a core number or none")?),
    };
    let paths = ServerPaths {
        hubbub_bin: args.hubbub_bin.clone(),
        peers_dir: PathBuf::from("bench/peers"),
        go_bin: PathBuf::new(),
        pin_core,
        log_dir: args.log_dir.clone(),
        nice: None,
        hubbub_args: Vec::new(),
        scripts_dir: args.scripts_dir.clone(),
    };
    let started = crate::suite::date();
    std::fs::create_dir_all(&args.cache_dir)
        .with_context(|| format!("create {}", args.cache_dir.display()))?;
    let tag = format!("v{GENERATOR_VERSION}-{messages}");
    let fill = args.cache_dir.join(format!("fill-{tag}.jsonl"));
    let vocabulary = Vocabulary::new();
    if !fill.exists() {
        eprintln!(
            "[search] generating {messages} messages into {}",
            fill.display()
        );
        write_fill(&fill, messages, &vocabulary)?;
    }
    let mut backends = Vec::new();

    let sqlite_dir = args.cache_dir.join(format!("sqlite-{tag}"));
    let db = sqlite_dir.join("hubbub.db");
    let marker = sqlite_dir.join("complete");
    let mut import_secs = 0.0;
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&sqlite_dir);
        std::fs::create_dir_all(&sqlite_dir)?;
        import_secs = import(
            &args.hubbub_bin,
            &format!("sqlite://{}", db.display()),
            &fill,
        )?;
        std::fs::write(&marker, b"")?;
    }
    let latency = measure(
        &paths,
        &format!("sqlite://{}", db.display()),
        "sqlite",
        queries,
        &vocabulary,
    )
    .await?;
    backends.push(BackendResult {
        backend: "sqlite".into(),
        import_secs,
        latency,
    });

    if args.postgres {
        let work = std::env::temp_dir().join(format!("hubbub-bench-search-{}", std::process::id()));
        let mut pg = Service::start(Kind::Postgres, &paths, &args.scripts_dir, &work)?;
        let result = async {
            let url = pg.fresh_database("search")?;
            let import_secs = import(&args.hubbub_bin, &url, &fill)?;
            let latency = measure(&paths, &url, "postgres", queries, &vocabulary).await?;
            Ok::<_, anyhow::Error>(BackendResult {
                backend: "postgres".into(),
                import_secs,
                latency,
            })
        }
        .await;
        pg.stop();
        let _ = std::fs::remove_dir_all(&work);
        backends.push(result?);
    }

    let results = SearchResults {
        machine: Machine::read(),
        command,
        hubbub_bin: args.hubbub_bin.display().to_string(),
        size: args.size,
        messages,
        rooms: ROOMS,
        vocabulary: VOCABULARY,
        queries,
        started,
        finished: crate::suite::date(),
        backends,
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    eprintln!("[search] results in {}", args.out.display());
    Ok(())
}

/// `hubbub import --db DB < fill`, timed.
fn import(bin: &Path, db: &str, fill: &Path) -> Result<f64> {
    eprintln!("[search] importing {} into {db}", fill.display());
    let input = std::fs::File::open(fill).with_context(|| format!("open {}", fill.display()))?;
    let began = Instant::now();
    let out = Command::new(bin)
        .args(["import", "--db", db])
        .env("HUBBUB_LOG", "warn")
        .stdin(Stdio::from(input))
        .output()
        .context("run hubbub import")?;
    if !out.status.success() {
        bail!(
            "hubbub import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "[search] imported in {secs:.1} s: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(secs)
}

/// Starts hubbub on `db`, sends the queries, stops it.
async fn measure(
    paths: &ServerPaths,
    db: &str,
    backend: &str,
    queries: usize,
    vocabulary: &Vocabulary,
) -> Result<BTreeMap<String, KindResult>> {
    let extra: Vec<String> = ["--db", db, "--auth-secret", SECRET, "--rate-limit", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut server = Server::start_node(
        paths,
        Duration::from_millis(500),
        &extra,
        &format!("search-{backend}"),
    )?;
    let token = crate::token::mint(SECRET, "searcher")?;
    let outcome = ask(server.addr, &token, queries, vocabulary).await;
    server.stop();
    outcome
}

/// One kind of query: its name and how to make the i-th one.
struct QueryKind {
    name: &'static str,
    make: fn(&Vocabulary, &mut Rng) -> String,
}

fn room_param(rng: &mut Rng) -> String {
    format!("&room={}", room_name(rng.below(ROOMS as u64) as usize))
}

const KINDS: [QueryKind; 8] = [
    QueryKind {
        name: "common",
        make: |v, r| format!("q={}", v.word(r.below(20) as usize)),
    },
    QueryKind {
        name: "common_in_room",
        make: |v, r| format!("q={}{}", v.word(r.below(20) as usize), room_param(r)),
    },
    QueryKind {
        name: "mid",
        make: |v, r| format!("q={}", v.word(200 + r.below(800) as usize)),
    },
    QueryKind {
        name: "rare",
        make: |_, r| {
            format!(
                "q={}",
                RARE_WORDS[r.below(RARE_WORDS.len() as u64) as usize]
            )
        },
    },
    QueryKind {
        name: "rare_in_room",
        make: |_, r| {
            let word = RARE_WORDS[r.below(RARE_WORDS.len() as u64) as usize];
            format!("q={word}{}", room_param(r))
        },
    },
    QueryKind {
        name: "two_words",
        make: |v, r| {
            let a = v.word(20 + r.below(200) as usize);
            let b = v.word(20 + r.below(200) as usize);
            format!("q={a}+{b}")
        },
    },
    QueryKind {
        name: "two_words_in_room",
        make: |v, r| {
            let a = v.word(20 + r.below(200) as usize);
            let b = v.word(20 + r.below(200) as usize);
            format!("q={a}+{b}{}", room_param(r))
        },
    },
    QueryKind {
        name: "common_and_rare",
        make: |v, r| {
            let a = v.word(r.below(20) as usize);
            let b = RARE_WORDS[r.below(RARE_WORDS.len() as u64) as usize];
            format!("q={a}+{b}")
        },
    },
];

/// Sends `queries` searches over one keep-alive connection, cycling through [`KINDS`].
async fn ask(
    addr: std::net::SocketAddr,
    token: &str,
    queries: usize,
    vocabulary: &Vocabulary,
) -> Result<BTreeMap<String, KindResult>> {
    let mut stream = TcpStream::connect(addr)
        .await
        .context("connect to hubbub")?;
    stream.set_nodelay(true)?;
    let mut rng = Rng::new(0x5EA2_C4ED);
    let mut per_kind: Vec<(hdrhistogram::Histogram<u64>, u64, String)> = KINDS
        .iter()
        .map(|_| (new_histogram(), 0, String::new()))
        .collect();
    let mut overall = new_histogram();
    let mut buffer = Vec::with_capacity(64 * 1024);
    for i in 0..queries {
        let index = i % KINDS.len();
        let query = (KINDS[index].make)(vocabulary, &mut rng);
        let request = format!(
            "GET /api/search?{query}&limit=20 HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        let began = Instant::now();
        stream.write_all(request.as_bytes()).await?;
        let body = read_response(&mut stream, &mut buffer).await?;
        let micros = began.elapsed().as_micros() as u64;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).context("search answer is not JSON")?;
        let results = answer["results"]
            .as_array()
            .with_context(|| format!("no results in the answer to {query}: {answer}"))?;
        let (hist, hits, example) = &mut per_kind[index];
        record(hist, micros);
        record(&mut overall, micros);
        *hits += results.len() as u64;
        if example.is_empty() {
            example.clone_from(&query);
        }
    }
    let mut out = BTreeMap::new();
    for (kind, (hist, hits, example)) in KINDS.iter().zip(per_kind) {
        let percentiles = Percentiles::of(&hist);
        let mean_results = if percentiles.count == 0 {
            0.0
        } else {
            hits as f64 / percentiles.count as f64
        };
        out.insert(
            kind.name.to_string(),
            KindResult {
                percentiles,
                mean_results,
                example,
            },
        );
    }
    out.insert(
        "overall".to_string(),
        KindResult {
            percentiles: Percentiles::of(&overall),
            mean_results: 0.0,
            example: String::new(),
        },
    );
    Ok(out)
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; fails on any status but 200.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Vec<u8>> {
    buffer.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("hubbub closed the connection");
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!(
            "search answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("search answer without Content-Length")?;
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("hubbub closed the connection mid-answer");
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(buffer[header_end..header_end + length].to_vec())
}

fn room_name(index: usize) -> String {
    format!("room-{index:03}")
}

/// A small, seeded PRNG (SplitMix64): the fill must be the same on every machine and run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf-like distribution over ranks `0..n`: weight 1 / (rank + 1)^exponent, drawn by binary
/// search over the cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = rng.unit() * total;
        self.cumulative
            .partition_point(|&c| c < target)
            .min(self.cumulative.len() - 1)
    }
}

/// The vocabulary, most frequent first: [`COMMON`], then made-up words.
struct Vocabulary {
    words: Vec<String>,
    zipf: Zipf,
}

impl Vocabulary {
    fn new() -> Vocabulary {
        let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
        let mut seen = std::collections::HashSet::new();
        for word in COMMON.split_whitespace() {
            if seen.insert(word.to_string()) {
                words.push(word.to_string());
            }
        }
        let mut rng = Rng::new(0x00C0_FFEE);
        while words.len() < VOCABULARY {
            let syllables = 2 + rng.below(3) as usize;
            let word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        Vocabulary {
            words,
            zipf: Zipf::new(VOCABULARY, 1.0),
        }
    }

    fn word(&self, rank: usize) -> &str {
        &self.words[rank.min(self.words.len() - 1)]
    }
}

/// Writes the fill (module doc) to `path`.
fn write_fill(path: &Path, messages: u64, vocabulary: &Vocabulary) -> Result<()> {
    let tmp = path.with_extension("partial");
    let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
    writeln!(out, r#"{{"format":"hubbub-history","version":1}}"#)?;
    let rooms = Zipf::new(ROOMS, 0.8);
    let mut next_id = [0u64; ROOMS];
    let mut rng = Rng::new(0x0005_EA2C);
    let mut text = String::with_capacity(256);
    for i in 0..messages {
        let room = rooms.draw(&mut rng);
        next_id[room] += 1;
        text.clear();
        let length = 3 + rng.below(28) as usize;
        let rare = (rng.below(RARE_EVERY) == 0)
            .then(|| RARE_WORDS[rng.below(RARE_WORDS.len() as u64) as usize]);
        let rare_at = rng.below(length as u64) as usize;
        for position in 0..length {
            if position > 0 {
                text.push(' ');
            }
            match rare {
                Some(word) if position == rare_at => text.push_str(word),
                _ => text.push_str(vocabulary.word(vocabulary.zipf.draw(&mut rng))),
            }
        }
        let line = serde_json::json!({
            "room": room_name(room),
            "id": next_id[room],
            "ts": 1_700_000_000_000u64 + i * 1_000,
            "from": format!("user-{}", rng.below(2_000)),
            "text": text,
        });
        writeln!(out, "{line}")?;
    }
    let used = next_id.iter().filter(|&&n| n > 0).count();
    writeln!(out, r#"{{"end":{{"messages":{messages},"rooms":{used}}}}}"#)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_the_same_every_time_and_has_distinct_words() {
        let (a, b) = (Vocabulary::new(), Vocabulary::new());
        assert_eq!(a.words, b.words);
        assert_eq!(a.words.len(), VOCABULARY);
        let distinct: std::collections::HashSet<_> = a.words.iter().collect();
        assert_eq!(distinct.len(), VOCABULARY);
        assert_eq!(a.word(0), "the");
    }

    #[test]
    fn zipf_draws_favour_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let draws: Vec<usize> = (0..10_000).map(|_| zipf.draw(&mut rng)).collect();
        let first = draws.iter().filter(|&&r| r == 0).count();
        let hundredth = draws.iter().filter(|&&r| r == 99).count();
        assert!(first > 10 * hundredth.max(1), "{first} vs {hundredth}");
        assert!(draws.iter().all(|&r| r < 1000));
    }
}
