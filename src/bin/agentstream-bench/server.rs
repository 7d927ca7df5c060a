//! The server under test, when the bench starts it: pinned with `taskset`,
//! waited for, its memory read from `/proc/<pid>/status`, killed at the end.
//! Also reads `agentstream_*` gauges from a Prometheus text endpoint.

use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::BenchResult;

/// A server process started by the bench.
pub struct Spawned {
    child: Child,
}

impl Spawned {
    /// Runs `command` through `sh` (pinned to `cpus` when given) and waits
    /// until `addr` accepts connections.
    pub async fn start(
        command: &str,
        cpus: Option<&str>,
        log: &Path,
        addr: SocketAddr,
    ) -> BenchResult<Self> {
        let exec = format!("exec {command}");
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, "sh", "-c", &exec]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &exec]);
                c
            }
        };
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let mut spawned = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(spawned);
            }
            if let Ok(Some(status)) = spawned.child.try_wait() {
                return Err(format!(
                    "`{command}` exited ({status}); see {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("`{command}` did not listen on {addr} within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Samples a process's RSS every 50 ms while it runs; keeps the peak.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Relaxed) {
                if let Some((rss, _)) = memory_kib(pid) {
                    p.fetch_max(rss, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { peak, stop }
    }

    /// The highest RSS seen so far, KiB.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Reads one gauge from a Prometheus text endpoint (`GET /metrics`).
pub async fn scrape(addr: SocketAddr, name: &str) -> BenchResult<f64> {
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("metrics {addr}: {e}"))?;
    socket
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    socket
        .read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            let key = key.split('{').next()?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| format!("{name} not found at http://{addr}/metrics"))
}
