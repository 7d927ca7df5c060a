//! The `agentstream` binary as people use it: the real executable, run as a
//! child process against a server on 127.0.0.1:0, its output read from its
//! pipes as it arrives.
//!
//! Waits are on output, never on sleeps; `PATIENCE` only bounds how long a
//! broken build may hang a test.

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agentstream::{
    config::{HttpListen, ServeConfig},
    metrics::Metrics,
    server::Server,
};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_agentstream");

/// How long any expected output may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server in this process, on its own runtime, so the test thread is free
/// to block on the child process.
struct TestServer {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    metrics: Arc<Metrics>,
    addr: String,
    data_dir: tempfile::TempDir,
}

impl TestServer {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: HttpListen::Off,
            mock_token_delay: Duration::from_millis(1),
            shutdown_grace: Duration::from_millis(100),
            data_dir: data_dir.path().to_path_buf(),
            // As in tests/common: no test deadline covers the one-time load.
            preload_tokenizer: true,
            ..ServeConfig::default()
        };
        let server = runtime
            .block_on(Server::start(config))
            .expect("server starts");
        Self {
            addr: server.local_addr().to_string(),
            metrics: server.metrics(),
            server: Some(server),
            runtime,
            data_dir,
        }
    }

    /// `agentstream ARGS... --server HOST:PORT`.
    fn cli(&self, args: &[&str]) -> Command {
        let mut command = agentstream(args);
        command.args(["--server", &self.addr]);
        command
    }

    /// Waits until no choice is being generated any more.
    fn until_idle(&self) {
        self.until_live_generations(0);
    }

    fn until_live_generations(&self, live: i64) {
        let deadline = Instant::now() + PATIENCE;
        while self.metrics.snapshot().live_generations != live {
            assert!(Instant::now() < deadline, "live generations never {live}");
            std::thread::yield_now();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().request();
            let _ = self.runtime.block_on(server.wait());
        }
    }
}

/// The binary with `args`, in an environment free of the developer's
/// `AGENTSTREAM_*`, `RUST_LOG` or `NO_COLOR` settings.
fn agentstream(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().args(args).stdin(Stdio::null());
    command
}

/// Runs to the end; stdout and stderr as text.
fn run(mut command: Command) -> (ExitStatus, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the binary runs");
    (
        status,
        String::from_utf8(stdout).expect("UTF-8 stdout"),
        String::from_utf8(stderr).expect("UTF-8 stderr"),
    )
}

/// A running child whose output is read as it arrives.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Pipe,
    stderr: Pipe,
}

impl Running {
    fn spawn(mut command: Command, stdin: bool) -> Self {
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        Self {
            stdin: child.stdin.take(),
            stdout: Pipe::read(child.stdout.take().expect("stdout")),
            stderr: Pipe::read(child.stderr.take().expect("stderr")),
            child,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Ctrl-C, as a terminal sends it.
    fn interrupt(&self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -INT {}", self.child.id())])
            .status()
            .expect("sh runs");
        assert!(status.success());
    }

    /// Ctrl-D: end of input.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Exit status, then all of stdout and stderr.
    fn wait(mut self) -> (ExitStatus, String, String) {
        self.stdin = None;
        let status = self.child.wait().expect("wait");
        (status, self.stdout.rest(), self.stderr.rest())
    }
}

/// One output pipe, read by a thread into a channel of chunks.
struct Pipe {
    chunks: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Pipe {
    fn read(mut from: impl Read + Send + 'static) -> Self {
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Self {
            chunks,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads until `done` holds for everything read so far; returns it.
    fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.text()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(_) => panic!("waited for {what}; got {:?}", self.text()),
            }
        }
        self.text()
    }

    /// Everything, once the writer has closed the pipe.
    fn rest(mut self) -> String {
        while let Ok(chunk) = self.chunks.recv_timeout(PATIENCE) {
            self.seen.extend(chunk);
        }
        self.text()
    }
}

/// A loopback port with nothing listening on it.
/// Asserts that `text` contains `needle`, showing `text` if not.
#[track_caller]
fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{text}");
}

/// Asserts that `text` starts with `prefix`, showing `text` if not.
#[track_caller]
fn assert_starts_with(text: &str, prefix: &str) {
    assert!(text.starts_with(prefix), "{text}");
}

fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

#[test]
fn chat_accepts_host_port_and_http_addresses() {
    let server = TestServer::start();
    for address in [server.addr.clone(), format!("http://{}", server.addr)] {
        let (status, stdout, stderr) = run(agentstream(&[
            "chat",
            "什么是流？",
            "--usage",
            "--server",
            &address,
        ]));
        assert!(status.success(), "{address}: {stderr}");
        assert_contains(&stdout, "什么是流？");
        assert!(stdout.ends_with('\n'), "{stdout:?}");
        assert_starts_with(&stderr, "usage: ");
    }
}

#[test]
fn a_server_that_is_not_running_gets_a_hint() {
    let (status, _, stderr) = run(agentstream(&["chat", "hi", "--server", &closed_port()]));
    assert_eq!(status.code(), Some(1));
    assert_contains(&stderr, "is the server running? (agentstream serve)");
}

#[test]
fn https_is_tls_and_never_falls_back_to_plaintext() {
    // A plaintext server: TLS to it fails; the question is never sent in clear.
    let server = TestServer::start();
    let (status, stdout, stderr) = run(agentstream(&[
        "chat",
        "hi",
        "--server",
        &format!("https://{}", server.addr),
    ]));
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_contains(&stderr, "cannot connect to https://");
}

#[test]
fn chat_dash_reads_the_question_from_stdin() {
    let server = TestServer::start();
    let mut chat = Running::spawn(server.cli(&["chat", "-"]), true);
    chat.type_line("来自标准输入的问题");
    let (status, stdout, stderr) = chat.wait();
    assert!(status.success(), "{stderr}");
    assert_contains(&stdout, "来自标准输入的问题");
}

#[test]
fn every_choice_streams_live_on_prefixed_lines() {
    let server = TestServer::start();
    let mut chat = Running::spawn(
        server.cli(&[
            "chat",
            "go",
            "-n",
            "2",
            "--model",
            "synthetic",
            "--max-tokens",
            "200000",
        ]),
        false,
    );
    // Both choices show text while neither can have finished (200000
    // tokens at 1 ms each).
    let shown = chat.stdout.until("both choices", |out| {
        out.lines().any(|l| l.starts_with("[0] ")) && out.lines().any(|l| l.starts_with("[1] "))
    });
    assert!(
        shown
            .lines()
            .all(|l| l.starts_with("[0] ") || l.starts_with("[1] ")),
        "{shown}"
    );
    chat.interrupt();
    let (status, stdout, stderr) = chat.wait();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(stderr, "cancelled\n");
    assert!(stdout.ends_with('\n'));
    server.until_idle();
}

#[test]
fn a_conversation_keeps_its_history() {
    let server = TestServer::start();
    let mut chat = Running::spawn(server.cli(&["chat", "--usage"]), true);
    let prompt_tokens = |stderr: &str, turn: usize| -> (u32, u32) {
        let line = stderr
            .lines()
            .filter(|l| l.starts_with("usage: "))
            .nth(turn);
        let words: Vec<&str> = line.expect("usage line").split_whitespace().collect();
        (
            words[1].parse().expect("prompt tokens"),
            words[4].parse().expect("completion tokens"),
        )
    };
    chat.type_line("first question");
    let stderr = chat
        .stderr
        .until("first usage", |e| e.matches(" tokens\n").count() == 1);
    let (prompt1, completion1) = prompt_tokens(&stderr, 0);
    chat.type_line("second question");
    let stderr = chat
        .stderr
        .until("second usage", |e| e.matches(" tokens\n").count() == 2);
    let (prompt2, _) = prompt_tokens(&stderr, 1);
    // The second prompt carries the first question and its answer.
    assert!(
        prompt2 > prompt1 + completion1,
        "{prompt1} + {completion1} then {prompt2}"
    );
    chat.close_stdin();
    let (status, stdout, stderr) = chat.wait();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("first question") && stdout.contains("second question"));
}

#[test]
fn ctrl_c_cancels_the_answer_not_the_conversation_and_ctrl_d_leaves() {
    let server = TestServer::start();
    let mut chat = Running::spawn(
        server.cli(&["chat", "--model", "synthetic", "--max-tokens", "200000"]),
        true,
    );
    for turn in 1..=2 {
        let before = chat.stdout.text().len();
        chat.type_line("go on");
        // Output of the previous answer may still be in the pipe: wait for
        // this turn's generation itself, then for some of its text.
        server.until_live_generations(1);
        chat.stdout
            .until("answer text", |out| out.len() > before + 20);
        chat.interrupt();
        chat.stderr
            .until("cancelled", |e| e.matches("cancelled\n").count() == turn);
        server.until_idle();
    }
    chat.close_stdin();
    let (status, stdout, stderr) = chat.wait();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr, "cancelled\ncancelled\n");
    assert!(stdout.ends_with('\n'));
}

#[test]
fn a_deadline_error_is_on_a_line_of_its_own() {
    let server = TestServer::start();
    let (status, stdout, stderr) = run(server.cli(&[
        "chat",
        "go",
        "--model",
        "synthetic",
        "--max-tokens",
        "200000",
        "--timeout",
        "300ms",
    ]));
    assert_eq!(status.code(), Some(1));
    assert!(!stdout.is_empty() && stdout.ends_with('\n'), "{stdout:?}");
    assert_starts_with(&stderr, "error: DEADLINE_EXCEEDED");
}

#[test]
fn a_reader_that_stops_early_gets_no_broken_pipe_message() {
    let server = TestServer::start();
    let mut child = server
        .cli(&[
            "chat",
            "go",
            "--model",
            "synthetic",
            "--max-tokens",
            "200000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = Pipe::read(child.stderr.take().expect("stderr"));
    // What `| head -c 100` does: read a little, then close the pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 100];
    stdout.read_exact(&mut head).expect("some answer");
    drop(stdout);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert_eq!(stderr.rest(), "");
    server.until_idle();
}

#[test]
fn bad_arguments_name_the_code_and_each_field() {
    let server = TestServer::start();
    let (status, _, stderr) = run(server.cli(&["chat", "hi", "-n", "99"]));
    assert_eq!(status.code(), Some(1));
    assert_starts_with(&stderr, "error: INVALID_ARGUMENT: ");
    assert_contains(&stderr, "\n  n: ");
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, body) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, body).expect("write");
    }
}

#[test]
fn ingest_then_list_and_delete_documents() {
    let server = TestServer::start();
    let notes = tempfile::tempdir().expect("temp dir");
    write_files(
        notes.path(),
        &[
            ("guide.md", "# Guide\nCancelling a call stops generation."),
            (
                "api/ref.rst",
                "Reference\n=========\nStreams end with a status.",
            ),
            ("page.html", "<p>not read by default</p>"),
        ],
    );
    let dir = notes.path().to_str().expect("UTF-8 path");
    let (status, stdout, stderr) = run(server.cli(&["ingest", dir]));
    assert!(status.success(), "{stderr}");
    assert_starts_with(&stdout, "ingested 2 documents from 2 files in ");

    let (status, stdout, stderr) = run(server.cli(&["docs", "list"]));
    assert!(status.success(), "{stderr}");
    let ids: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("  ").next())
        .collect();
    // Ids are the paths as given, listed in order.
    let guide = format!("{dir}/guide.md");
    assert_eq!(ids, [format!("{dir}/api/ref.rst"), guide.clone()]);
    assert!(stdout.contains("  Reference  ("), "{stdout}");
    assert_eq!(stderr, "2 documents\n");

    let (status, stdout, stderr) = run(server.cli(&["docs", "delete", &guide]));
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, format!("deleted {guide}\n"));
    let (_, stdout, stderr) = run(server.cli(&["docs", "list"]));
    assert_eq!(stderr, "1 document\n");
    assert!(!stdout.contains("guide.md"), "{stdout}");

    let (status, _, stderr) = run(server.cli(&["docs", "delete", &guide]));
    assert_eq!(status.code(), Some(1));
    assert_starts_with(&stderr, "error: NOT_FOUND: ");

    let single = notes.path().join("page.html");
    let (status, stdout, stderr) = run(server.cli(&["ingest", single.to_str().expect("UTF-8")]));
    assert!(status.success(), "{stderr}");
    assert_starts_with(&stdout, "ingested 1 document from 1 file in ");
}

#[test]
fn ingest_says_which_extensions_it_reads() {
    let server = TestServer::start();
    let notes = tempfile::tempdir().expect("temp dir");
    write_files(notes.path(), &[("page.html", "<p>x</p>")]);
    let dir = notes.path().to_str().expect("UTF-8 path");
    let (status, _, stderr) = run(server.cli(&["ingest", dir]));
    assert_eq!(status.code(), Some(1));
    assert_contains(&stderr, ".md, .markdown, .txt");
    assert_contains(&stderr, "--ext");
    let (status, stdout, stderr) = run(server.cli(&["ingest", dir, "--ext", "html"]));
    assert!(status.success(), "{stderr}");
    assert_starts_with(&stdout, "ingested 1 document");
}

#[test]
fn a_failed_task_is_reported_once() {
    let server = TestServer::start();
    let (status, stdout, stderr) = run(server.cli(&[
        "task",
        "demo",
        "--steps",
        "3",
        "--delay-ms",
        "1",
        "--fail-at",
        "2",
    ]));
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.lines().last().is_some_and(|l| l.contains("FAILED")),
        "{stdout}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("failed at step "), "{stderr}");
}

#[test]
fn ctrl_c_stops_watching_and_says_the_task_keeps_running() {
    let server = TestServer::start();
    let mut watch = Running::spawn(
        server.cli(&["task", "demo", "--steps", "1000", "--delay-ms", "1000"]),
        false,
    );
    let started = watch.stderr.until("started", |e| e.contains('\n'));
    let task_id = started
        .trim()
        .strip_prefix("started ")
        .expect("started line")
        .to_owned();
    watch
        .stdout
        .until("an event", |out| out.contains("RUNNING"));
    watch.interrupt();
    let (status, _, stderr) = watch.wait();
    assert_eq!(status.code(), Some(130));
    assert_contains(&stderr, &format!("task {task_id} keeps running"));
    assert!(!stderr.contains("cancelled"), "{stderr}");
    let (_, stdout, _) = run(server.cli(&["task", "get", &task_id]));
    assert_contains(&stdout, "RUNNING");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_told_to_pick_another() {
    let server = TestServer::start();
    let dir = server.data_dir.path().to_str().expect("UTF-8 path");
    let (status, _, stderr) = run(agentstream(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--data-dir",
        dir,
    ]));
    assert_eq!(status.code(), Some(1));
    assert_contains(
        &stderr,
        &format!("another agentstream is using {dir}; use --data-dir"),
    );
}

#[test]
fn server_logs_carry_no_colour_codes_off_a_terminal() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut server = Running::spawn(
        agentstream(&[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.path().to_str().expect("UTF-8 path"),
        ]),
        false,
    );
    let logs = server.stderr.until("the listening line", |e| {
        e.contains("agentstream listening")
    });
    assert!(!logs.contains('\x1b'), "{logs:?}");
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.child.id())])
        .status()
        .expect("sh runs");
    assert!(status.success());
    let (status, _, logs) = server.wait();
    assert!(status.success());
    assert!(!logs.contains('\x1b'), "{logs:?}");
}
