//! The four scenarios. Each measures from the client side, reads the
//! server's memory and CPU from `/proc` when the bench started it, and ends
//! with one [`Outcome`]. Every loop is bounded in count and in time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    BenchResult, RunArgs, Scenario,
    client::{Conn, Target},
    server::{RssSampler, Spawned, cpu_ticks, memory_kib, scrape},
    stats::{Outcome, percentile},
};

/// Runs the scenario `args` names and reports it.
pub async fn run(args: RunArgs) -> BenchResult<()> {
    let spawned = match &args.spawn {
        Some(command) => Some(
            Spawned::start(
                command,
                args.server_cpus.as_deref(),
                &args.server_log,
                args.addr,
            )
            .await?,
        ),
        None => None,
    };
    let pid = spawned.as_ref().map(Spawned::pid);
    let tls = match &args.tls_ca {
        Some(path) => Some((
            std::fs::read(path).map_err(|e| format!("--tls-ca {}: {e}", path.display()))?,
            args.tls_domain.clone(),
        )),
        None => None,
    };
    let target = Target {
        protocol: args.protocol,
        addr: args.addr,
        window: args.window,
        tls,
        resumable: args.resumable,
    };
    let mut outcome = Outcome::new(args.scenario, &args.label);
    outcome.param("protocol", format!("{:?}", args.protocol).to_lowercase());
    if args.resumable {
        outcome.param("resumable", "true".to_owned());
    }
    // The server's memory once it has served one call: what it builds once,
    // on first use (the tokenizer's tables), is not memory per stream.
    if pid.is_some() && matches!(args.scenario, Scenario::Fanout) {
        target.connect().await?.stream(10, |_, _| {}).await?;
    }
    let rss_idle = pid.and_then(memory_kib).map(|(rss, _)| rss);
    let sampler = pid.map(RssSampler::start);
    let client_cpu = cpu_ticks("self");
    let server_cpu = pid.and_then(|p| cpu_ticks(&p.to_string()));
    let wall = Instant::now();

    match args.scenario {
        Scenario::Single => single(&args, &target, &mut outcome, pid).await?,
        Scenario::Fanout => fanout(&args, &target, &mut outcome, rss_idle, &sampler).await?,
        Scenario::Ttft => ttft(&args, &target, &mut outcome).await?,
        Scenario::Cancel => cancel(&args, &target, &mut outcome).await?,
    }

    // CPU use over the whole scenario (warm-up included), in % of one core:
    // a client near 100% would be the bottleneck.
    let seconds = wall.elapsed().as_secs_f64();
    if let (Some(before), Some(after)) = (client_cpu, cpu_ticks("self")) {
        outcome.figure(
            "client_cpu",
            (after - before) as f64 / seconds,
            "% of a core",
        );
    }
    if let (Some(before), Some(p)) = (server_cpu, pid)
        && let Some(after) = cpu_ticks(&p.to_string())
    {
        outcome.figure(
            "server_cpu",
            (after - before) as f64 / seconds,
            "% of a core",
        );
    }
    if let (Some(sampler), Some(p)) = (&sampler, pid) {
        outcome.figure("server_rss_peak", sampler.peak() as f64, "KiB");
        if let Some((_, hwm)) = memory_kib(p) {
            outcome.figure("server_vmhwm", hwm as f64, "KiB");
        }
    }
    drop(spawned);
    outcome.print();
    if let Some(path) = &args.json {
        outcome.append_json(path)?;
    }
    Ok(())
}

async fn single(
    args: &RunArgs,
    target: &Target,
    outcome: &mut Outcome,
    pid: Option<u32>,
) -> BenchResult<()> {
    outcome.param("tokens", args.tokens);
    outcome.param("repeat", args.repeat as u64);
    let parallel = args.parallel.max(1);
    if parallel > 1 {
        outcome.param("parallel", parallel as u64);
    }
    let conn = target.connect().await?;
    // Warm-up: connection, allocator, the server's lazy state.
    conn.stream(10_000, |_, _| {}).await?;
    let server = pid.map(|p| p.to_string());
    let client_cpu = cpu_ticks("self");
    let server_cpu = server.as_deref().and_then(cpu_ticks);
    let (mut rates, mut bytes, mut chunks, mut seconds) = (Vec::new(), 0usize, 0u64, 0.0);
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let runs = (0..parallel).map(|_| async {
            let mut bytes = 0usize;
            let chunks = conn.stream(args.tokens, |_, b| bytes += b).await?;
            BenchResult::Ok((chunks, bytes))
        });
        let (mut run_chunks, mut run_bytes) = (0, 0);
        for run in futures::future::join_all(runs).await {
            let (chunks, bytes) = run?;
            run_chunks += chunks;
            run_bytes += bytes;
        }
        let run_seconds = start.elapsed().as_secs_f64();
        rates.push(run_chunks as f64 / run_seconds);
        bytes += run_bytes;
        chunks += run_chunks;
        seconds += run_seconds;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    outcome.figure("chunks", chunks as f64, "");
    outcome.figure("seconds", seconds, "s");
    outcome.figure("chunks_per_s", median, "chunks/s");
    outcome.figure("chunks_per_s_best", rates[rates.len() - 1], "chunks/s");
    let bytes_per_chunk = bytes as f64 / chunks.max(1) as f64;
    outcome.figure("mb_per_s", median * bytes_per_chunk / 1e6, "MB/s");
    outcome.figure("bytes_per_chunk", bytes_per_chunk, "B");
    // CPU while streaming (ticks of 10 ms: use enough tokens x repeat).
    if let (Some(before), Some(after)) = (client_cpu, cpu_ticks("self")) {
        outcome.figure(
            "client_cpu_busy",
            (after - before) as f64 / seconds,
            "% of a core",
        );
    }
    if let (Some(before), Some(after)) = (server_cpu, server.as_deref().and_then(cpu_ticks)) {
        outcome.figure(
            "server_cpu_busy",
            (after - before) as f64 / seconds,
            "% of a core",
        );
    }
    Ok(())
}

async fn ttft(args: &RunArgs, target: &Target, outcome: &mut Outcome) -> BenchResult<()> {
    outcome.param("calls", args.calls as u64);
    let conn = target.connect().await?;
    for _ in 0..20 {
        conn.stream(1, |_, _| {}).await?;
    }
    let heavy = HeavyLoad::start(args, target).await?;
    let mut firsts = Vec::with_capacity(args.calls);
    let mut totals = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let start = Instant::now();
        let mut first = None;
        conn.stream(1, |t, _| {
            first.get_or_insert(t);
        })
        .await?;
        let first = first.ok_or("a call ended without any chunk")?;
        firsts.push((first - start).as_micros() as u64);
        totals.push(start.elapsed().as_micros() as u64);
    }
    if let Some(heavy) = heavy {
        heavy.stop(outcome).await?;
    }
    firsts.sort_unstable();
    totals.sort_unstable();
    outcome.figure("ttft_p50", percentile(&firsts, 50.0) as f64, "us");
    outcome.figure("ttft_p99", percentile(&firsts, 99.0) as f64, "us");
    outcome.figure("call_p50", percentile(&totals, 50.0) as f64, "us");
    Ok(())
}

/// `--heavy-calls` connections, each with one large-prompt call in flight
/// at all times, for as long as `ttft` measures.
struct HeavyLoad {
    tasks: JoinSet<BenchResult<u64>>,
    stop: tokio_util::sync::CancellationToken,
    started: Instant,
}

impl HeavyLoad {
    async fn start(args: &RunArgs, target: &Target) -> BenchResult<Option<Self>> {
        if args.heavy_calls == 0 {
            return Ok(None);
        }
        // Plain English words, as a long document pasted into a chat.
        let sentence = "The quick brown fox jumps over the lazy dog near the river bank. ";
        let prompt: Arc<str> = sentence
            .repeat(args.heavy_bytes / sentence.len() + 1)
            .chars()
            .take(args.heavy_bytes)
            .collect::<String>()
            .into();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..args.heavy_calls {
            let conn = target.connect().await?;
            let (prompt, stop) = (prompt.clone(), stop.clone());
            tasks.spawn(async move {
                let mut done = 0u64;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(done),
                        called = conn.prompt_call(&prompt) => {
                            called?;
                            done += 1;
                        }
                    }
                }
            });
        }
        Ok(Some(Self {
            tasks,
            stop,
            started: Instant::now(),
        }))
    }

    async fn stop(mut self, outcome: &mut Outcome) -> BenchResult<()> {
        let seconds = self.started.elapsed().as_secs_f64();
        self.stop.cancel();
        let mut done = 0;
        let calls = self.tasks.len();
        while let Some(joined) = self.tasks.join_next().await {
            done += joined.map_err(|e| e.to_string())??;
        }
        outcome.param("heavy_calls", calls as u64);
        outcome.figure("heavy_calls_per_s", done as f64 / seconds, "1/s");
        Ok(())
    }
}

/// Opens `--connections` connections (SSE: one address; each stream makes
/// its own connection).
async fn connections(args: &RunArgs, target: &Target) -> BenchResult<Vec<Conn>> {
    let count = match args.protocol {
        crate::Protocol::Grpc => args.connections.max(1),
        crate::Protocol::Sse => 1,
    };
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        conns.push(target.connect().await?);
    }
    Ok(conns)
}

/// What one fanout stream saw.
#[derive(Default)]
struct StreamSeen {
    ttft_us: Option<u64>,
    lateness_us: Vec<u32>,
    // Which timeline window (`TIMELINE_WINDOW` from the run's start) each
    // lateness sample was due in.
    window: Vec<u16>,
    // The connection the stream was on (its index).
    conn: usize,
    tokens: u32,
    rate: f64,
    error: Option<String>,
}

async fn fanout(
    args: &RunArgs,
    target: &Target,
    outcome: &mut Outcome,
    rss_idle: Option<u64>,
    sampler: &Option<RssSampler>,
) -> BenchResult<()> {
    let streams = args.streams.max(1);
    let max_tokens = (args.rate * args.duration.as_secs_f64()).round().max(2.0) as u32;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    outcome.param("streams", streams as u64);
    outcome.param("connections", args.connections as u64);
    outcome.param("rate", args.rate);
    outcome.param("tokens_per_stream", max_tokens);
    let conns = connections(args, target).await?;
    // Bounded: a stream that is three times slower than asked is cut off.
    let limit = args.duration * 3 + args.ramp + Duration::from_secs(30);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..streams {
        let conn_index = i % conns.len();
        let conn = conns[conn_index].clone();
        let begin_at = start + args.ramp.mul_f64(i as f64 / streams as f64);
        set.spawn(async move {
            tokio::time::sleep_until(begin_at).await;
            let began = Instant::now();
            let mut seen = StreamSeen {
                lateness_us: Vec::with_capacity(max_tokens as usize),
                window: Vec::with_capacity(max_tokens as usize),
                conn: conn_index,
                ..StreamSeen::default()
            };
            let mut first: Option<Instant> = None;
            let mut last = began;
            let stream = conn.stream(max_tokens, |at, _| {
                // The closing chunk (finish reason, no token) is not paced.
                if seen.tokens >= max_tokens {
                    return;
                }
                match first {
                    None => {
                        first = Some(at);
                        seen.ttft_us = Some((at - began).as_micros() as u64);
                    }
                    Some(first) => {
                        let due = first + interval * seen.tokens;
                        seen.lateness_us
                            .push(at.saturating_duration_since(due).as_micros() as u32);
                        let window = due.saturating_duration_since(start).as_millis()
                            / TIMELINE_WINDOW.as_millis();
                        seen.window.push(window.min(u128::from(u16::MAX)) as u16);
                    }
                }
                seen.tokens += 1;
                last = at;
            });
            match tokio::time::timeout(limit, stream).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => seen.error = Some(error),
                Err(_) => seen.error = Some("cut off by the bench's time limit".into()),
            }
            if let Some(first) = first
                && seen.tokens > 1
            {
                seen.rate = f64::from(seen.tokens - 1) / (last - first).as_secs_f64().max(1e-9);
            }
            seen
        });
    }
    let mut lateness: Vec<u64> = Vec::with_capacity(streams * max_tokens as usize);
    let mut timeline: Vec<Window> = Vec::new();
    let mut ttfts = Vec::with_capacity(streams);
    let (mut achieved, mut tokens, mut failed) = (0.0, 0u64, 0usize);
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let seen = joined.map_err(|e| e.to_string())?;
        lateness.extend(seen.lateness_us.iter().map(|&l| u64::from(l)));
        for (&window, &late) in seen.window.iter().zip(&seen.lateness_us) {
            let window = usize::from(window);
            if timeline.len() <= window {
                timeline.resize_with(window + 1, || Window {
                    late: Vec::new(),
                    very_late_by_conn: vec![0; conns.len()],
                });
            }
            let row = &mut timeline[window];
            row.late.push(u64::from(late));
            if late >= VERY_LATE_US {
                row.very_late_by_conn[seen.conn] += 1;
            }
        }
        ttfts.extend(seen.ttft_us);
        achieved += seen.rate;
        tokens += u64::from(seen.tokens);
        if let Some(error) = seen.error {
            failed += 1;
            first_error.get_or_insert(error);
        }
    }
    lateness.sort_unstable();
    ttfts.sort_unstable();
    let target_rate = args.rate * streams as f64;
    outcome.figure("target_rate", target_rate, "chunks/s");
    outcome.figure("achieved_rate", achieved, "chunks/s");
    outcome.figure("achieved_ratio", achieved / target_rate, "x");
    outcome.figure(
        "tokens_received_ratio",
        tokens as f64 / (streams as f64 * f64::from(max_tokens)),
        "x",
    );
    outcome.figure("late_p50", percentile(&lateness, 50.0) as f64 / 1e3, "ms");
    outcome.figure("late_p99", percentile(&lateness, 99.0) as f64 / 1e3, "ms");
    outcome.figure("late_max", percentile(&lateness, 100.0) as f64 / 1e3, "ms");
    outcome.series("late_timeline", lateness_timeline(timeline));
    outcome.figure("ttft_p50", percentile(&ttfts, 50.0) as f64 / 1e3, "ms");
    outcome.figure("ttft_p99", percentile(&ttfts, 99.0) as f64 / 1e3, "ms");
    outcome.figure("streams_failed", failed as f64, "");
    if let (Some(idle), Some(sampler)) = (rss_idle, sampler) {
        outcome.figure("server_rss_idle", idle as f64, "KiB");
        let per_stream = sampler.peak().saturating_sub(idle) as f64 * 1024.0 / streams as f64;
        outcome.figure("server_bytes_per_stream", per_stream, "B");
    }
    if let Some(error) = first_error {
        eprintln!("first stream error: {error}");
    }
    Ok(())
}

/// The width of a window of the fanout's lateness timeline.
const TIMELINE_WINDOW: Duration = Duration::from_millis(500);

/// A chunk this late (µs) is counted by connection in the timeline.
const VERY_LATE_US: u32 = 20_000;

/// The chunks due in one window of the timeline.
struct Window {
    late: Vec<u64>,
    very_late_by_conn: Vec<u32>,
}

/// Per window of the run (by when a chunk was due): how many chunks, their
/// p50, p99 and worst lateness in ms, and how many on each connection were
/// 20 ms late or more. It shows whether a run's tail came from the ramp,
/// from steady streaming or from one bad stretch, and whether from one
/// connection or from all.
fn lateness_timeline(windows: Vec<Window>) -> serde_json::Value {
    let rows = windows.into_iter().enumerate().map(|(i, mut window)| {
        window.late.sort_unstable();
        let late = &window.late;
        serde_json::json!({
            "from_s": i as f64 * TIMELINE_WINDOW.as_secs_f64(),
            "chunks": late.len(),
            "p50_ms": percentile(late, 50.0) as f64 / 1e3,
            "p99_ms": percentile(late, 99.0) as f64 / 1e3,
            "max_ms": percentile(late, 100.0) as f64 / 1e3,
            "late_20ms_by_conn": window.very_late_by_conn,
        })
    });
    serde_json::Value::Array(rows.collect())
}

async fn cancel(args: &RunArgs, target: &Target, outcome: &mut Outcome) -> BenchResult<()> {
    let metrics = args
        .metrics
        .ok_or("`cancel` reads the server's live generations: pass --metrics HOST:PORT")?;
    let streams = args.streams.max(1);
    outcome.param("streams", streams as u64);
    outcome.param("connections", args.connections as u64);
    let conns = connections(args, target).await?;
    let started = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..streams {
        let conn = conns[i % conns.len()].clone();
        let started = started.clone();
        set.spawn(async move {
            let mut first = true;
            // Long enough never to finish on its own before the cancel.
            let _ = conn
                .stream(200_000, |_, _| {
                    if std::mem::take(&mut first) {
                        started.fetch_add(1, Relaxed);
                    }
                })
                .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.load(Relaxed) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let live_before = scrape(metrics, "agentstream_live_generations").await?;
    let cancelled = Instant::now();
    set.abort_all();
    let mut zero_after = None;
    let deadline = cancelled + Duration::from_secs(10);
    while Instant::now() < deadline {
        if scrape(metrics, "agentstream_live_generations").await? <= 0.0 {
            zero_after = Some(cancelled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while set.join_next().await.is_some() {}
    // Once at zero, the token count must stand still.
    let tokens_a = scrape(metrics, "agentstream_tokens_generated_total").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tokens_b = scrape(metrics, "agentstream_tokens_generated_total").await?;
    outcome.figure("streams_started", started.load(Relaxed) as f64, "");
    outcome.figure("live_before_cancel", live_before, "");
    outcome.figure(
        "returned_to_zero",
        if zero_after.is_some() { 1.0 } else { 0.0 },
        "bool",
    );
    outcome.figure(
        "time_to_zero",
        zero_after.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        "ms",
    );
    outcome.figure("tokens_after_zero_200ms", tokens_b - tokens_a, "tokens");
    Ok(())
}
