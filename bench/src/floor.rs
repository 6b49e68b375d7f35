//! The kernel floor: what one ~150-byte `write()` to a loopback TCP socket costs.
//!
//! Every server under test must at least write each delivery to its socket, and on loopback
//! that write also runs the receiving side's TCP input path in the writer's context. A plain
//! loop writing to N connected sockets, with nothing else around it, is therefore the lowest
//! CPU cost per delivery any server can reach on this machine; reports divide each server's
//! CPU per delivery by it.
//!
//! That loop's readers never sleep. A chat server's readers do: each delivery lands on a socket
//! whose reader waits in `epoll_wait`, and the write that makes it readable also pays for waking
//! it. [`measure_woken`] runs the same loop with the reading ends in a second process (pinned
//! like the load generator) that reads everything as it arrives, so the cost of the wake-up is
//! in the number: the least a server can spend per delivery when every delivery is one write.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::procfs;

/// The result of one floor measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloorReport {
    pub sockets: usize,
    pub writes: u64,
    pub bytes_per_write: usize,
    /// On-CPU time of the writing thread per write, microseconds (user + system).
    pub cpu_us_per_write: f64,
    /// System part of that (from the tick counters), microseconds.
    pub sys_us_per_write: f64,
    pub wall_us_per_write: f64,
    /// The same loop with a reader process woken by the writes (see [`measure_woken`]).
    #[serde(default)]
    pub woken: Option<WokenFloor>,
}

/// The woken-reader floor at the smallest and the largest room of the fan-out scenario: the
/// kernel's own growth, against which a server's growth is judged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloorGrowth {
    pub small_sockets: usize,
    pub small: WokenFloor,
    pub large_sockets: usize,
    pub large: WokenFloor,
}

impl FloorGrowth {
    /// The large floor over the small one.
    pub fn ratio(&self) -> f64 {
        if self.small.cpu_us_per_write > 0.0 {
            self.large.cpu_us_per_write / self.small.cpu_us_per_write
        } else {
            0.0
        }
    }
}

/// The floor with sleeping readers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WokenFloor {
    pub writes: u64,
    /// On-CPU time of the writing thread per write, microseconds.
    pub cpu_us_per_write: f64,
    /// CPUs the reader processes ran on.
    pub reader_cpus: String,
    /// How many reader processes held the reading ends.
    #[serde(default = "one")]
    pub readers: usize,
    #[serde(default)]
    pub order: WriteOrder,
}

fn one() -> usize {
    1
}

fn thread_run_ns() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").context("read schedstat")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("malformed schedstat")
}

/// Write `len` bytes `rounds` times to each of `sockets` connected loopback sockets, round
/// robin, and time it. Bounded: `sockets * rounds` writes in all, small enough to fit in the
/// receivers' buffers so no write ever blocks.
pub fn measure(sockets: usize, rounds: usize, len: usize) -> Result<FloorReport> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(sockets);
    let mut servers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let c = TcpStream::connect(addr).context("connect")?;
        c.set_nodelay(true)?;
        let (s, _) = listener.accept().context("accept")?;
        s.set_nodelay(true)?;
        clients.push(c);
        servers.push(s);
    }
    let payload = vec![b'x'; len];
    // Warm up: one write each, so first-touch allocations are not counted.
    for s in servers.iter_mut() {
        s.write_all(&payload)?;
    }
    let (u0, s0) = procfs::stat_times("/proc/thread-self/stat")?;
    let run0 = thread_run_ns()?;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for s in servers.iter_mut() {
            s.write_all(&payload)?;
        }
    }
    let wall = t0.elapsed();
    let run1 = thread_run_ns()?;
    let (u1, s1) = procfs::stat_times("/proc/thread-self/stat")?;
    let writes = (sockets * rounds) as u64;
    let cpu_us = (run1 - run0) as f64 / 1000.0 / writes as f64;
    let ticks = ((u1 - u0) + (s1 - s0)) as f64;
    let sys_frac = if ticks > 0.0 {
        (s1 - s0) as f64 / ticks
    } else {
        1.0
    };
    drop(clients);
    Ok(FloorReport {
        sockets,
        writes,
        bytes_per_write: len,
        cpu_us_per_write: cpu_us,
        sys_us_per_write: cpu_us * sys_frac,
        wall_us_per_write: wall.as_secs_f64() * 1e6 / writes as f64,
        woken: None,
    })
}

/// In which order the woken floor's loop visits its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOrder {
    /// Every socket of one reader process, then every socket of the next: the order a server
    /// that writes its members in join order gives a load generator whose worker processes
    /// joined one after the other.
    #[default]
    Blocks,
    /// A fixed pseudo-random permutation, the same every round: the order of a hash map.
    Shuffled,
}

/// The floor loop against `sockets` connections whose reading ends belong to `readers`
/// `floor-reader` child processes run on `reader_cpus` (`taskset -c`), which read everything
/// as it arrives. `rounds` writes per socket, with a pause between rounds long enough for the
/// readers to drain and fall asleep again, as a chat room's members do between messages.
pub fn measure_woken(
    sockets: usize,
    rounds: usize,
    len: usize,
    reader_cpus: &str,
    readers: usize,
    order: WriteOrder,
) -> Result<WokenFloor> {
    let readers = readers.clamp(1, sockets.max(1));
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(readers);
    let result = (|| {
        for k in 0..readers {
            // Reader k connects from 127.0.0.(2 + k), which is how its sockets are told apart.
            let share = sockets / readers + usize::from(k < sockets % readers);
            let child = Command::new("taskset")
                .args(["-c", reader_cpus])
                .arg(&exe)
                .args(["floor-reader", "--addr", &addr.to_string()])
                .args(["--sockets", &share.to_string()])
                .args(["--source", &format!("127.0.0.{}", 2 + k)])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("spawn floor-reader")?;
            children.push(child);
        }
        let mut by_reader: Vec<Vec<TcpStream>> = (0..readers).map(|_| Vec::new()).collect();
        for _ in 0..sockets {
            let (s, peer) = listener.accept().context("accept")?;
            s.set_nodelay(true)?;
            let k = match peer.ip() {
                std::net::IpAddr::V4(ip) => usize::from(ip.octets()[3]).saturating_sub(2),
                std::net::IpAddr::V6(_) => 0,
            };
            by_reader[k.min(readers - 1)].push(s);
        }
        for child in children.iter_mut() {
            let stdout = child.stdout.take().context("reader stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            anyhow::ensure!(line.trim() == "ready", "floor-reader said {line:?}");
        }
        let mut servers: Vec<TcpStream> = by_reader.into_iter().flatten().collect();
        if order == WriteOrder::Shuffled {
            shuffle(&mut servers);
        }
        let payload = vec![b'x'; len];
        let mut run_ns = 0u64;
        for _ in 0..rounds {
            let run0 = thread_run_ns()?;
            for s in servers.iter_mut() {
                s.write_all(&payload)?;
            }
            run_ns += thread_run_ns()? - run0;
            // Let the readers catch up and go back to sleep.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let writes = (sockets * rounds) as u64;
        Ok(WokenFloor {
            writes,
            cpu_us_per_write: run_ns as f64 / 1000.0 / writes as f64,
            reader_cpus: reader_cpus.to_string(),
            readers,
            order,
        })
    })();
    // Closing its stdin ends a reader.
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    result
}

/// Fisher-Yates with a fixed xorshift seed: the same permutation every run, no dependency.
fn shuffle<T>(items: &mut [T]) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The reading side of [`measure_woken`]: `sockets` connections to `addr`, each read by its own
/// task on a single-threaded runtime (like a load-generator worker), until stdin closes.
pub fn reader_main(addr: SocketAddr, sockets: usize, source: std::net::IpAddr) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let mut stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }));
        }
        println!("ready");
        std::io::stdout().flush()?;
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        let _ = stdin.read_to_end(&mut sink).await;
        for t in tasks {
            t.abort();
        }
        Ok::<(), anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn floor_measures_something() {
        let r = super::measure(20, 50, 150).expect("floor");
        assert_eq!(r.writes, 1000);
        assert!(r.wall_us_per_write > 0.0);
        // The scheduler's run-time counter advances at context switches and ticks, so a run
        // this short can read as zero CPU; it must never be negative or NaN.
        assert!(r.cpu_us_per_write >= 0.0 && r.cpu_us_per_write.is_finite());
    }
}
