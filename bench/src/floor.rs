//! The kernel floor: what one ~150-byte `write()` to a loopback TCP socket costs.
//!
//! Every server under test must at least write each delivery to its socket, and on loopback
//! that write also runs the receiving side's TCP input path in the writer's context. A plain
//! loop writing to N connected sockets, with nothing else around it, is therefore the lowest
//! CPU cost per delivery any server can reach on this machine; reports divide each server's
//! CPU per delivery by it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
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
