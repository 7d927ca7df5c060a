//! The real `agentstream serve` binary as a child process, for the tests
//! that need what only a process has: its log lines on standard error (a
//! pipe, not a terminal), signals, exit codes, being killed.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tokio::sync::mpsc;

/// A running server binary and its standard error, line by line. Dropping
/// it kills the process.
pub struct Binary {
    pub child: Child,
    /// Its log lines; close it to stop reading them (the process's pipe is
    /// still drained, so it never blocks on logging).
    pub lines: mpsc::Receiver<String>,
    pub data_dir: tempfile::TempDir,
}

impl Binary {
    /// Starts `agentstream serve --listen 127.0.0.1:0 <args> --data-dir
    /// <fresh temp dir>` with `RUST_LOG=info`.
    pub fn serve(args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentstream"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Once nobody listens, the rest is read and dropped.
                let _ = tx.blocking_send(line);
            }
        });
        Self {
            child,
            lines,
            data_dir,
        }
    }

    /// The next log line that contains `needle`, within `patience`.
    pub async fn next_line_with(&mut self, needle: &str, patience: Duration) -> String {
        self.next_line(patience, |line| line.contains(needle))
            .await
            .unwrap_or_else(|| panic!("server exited before logging {needle}"))
    }

    /// The next log line that `wanted` accepts, within `patience`; `None`
    /// if the process ends first.
    pub async fn next_line(
        &mut self,
        patience: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        loop {
            let line = tokio::time::timeout(patience, self.lines.recv())
                .await
                .expect("a log line in time")?;
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    /// Waits for the start-up line, within `patience`, and returns it with
    /// the gRPC address it names (text or JSON log format).
    pub async fn listening(&mut self, patience: Duration) -> (String, SocketAddr) {
        let line = self.next_line_with("agentstream listening", patience).await;
        let addr = addr_in(&line).unwrap_or_else(|| panic!("no addr in {line}"));
        (line, addr)
    }

    /// Sends signal `name` (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let killed = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
    }

    /// Waits until the process has exited.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let child = &mut self.child;
        super::eventually("the binary exits", || {
            let status = child.try_wait().expect("wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr` field of a log line, in the text (`addr=…`) or JSON
/// (`"addr":"…"`) format.
pub fn addr_in(line: &str) -> Option<SocketAddr> {
    let text = || line.split("addr=").nth(1)?.split(' ').next();
    let json = || line.split("\"addr\":\"").nth(1)?.split('"').next();
    json().or_else(text)?.parse().ok()
}
