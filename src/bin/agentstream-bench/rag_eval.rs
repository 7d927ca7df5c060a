//! `rag-eval`: how well RagService finds and answers, on a corpus with
//! known answers (eval/rag: the corpus, questions.json, README.md).
//!
//! Everything goes through the public API, as a client would see it: the
//! corpus is ingested with IngestDocuments (and WatchTask until the task
//! succeeds), then every question is asked with StreamAnswer. For each
//! question the file names the documents that answer it (`sources`) and
//! strings of which the answer must contain one (`keys`); a question with no
//! source is one the corpus cannot answer, and its answer must say so.
//!
//! Reported: recall@1 and recall@k (an expected document among the first 1
//! or k passages), MRR (mean of 1/rank of the first expected passage), the
//! answer-key hit rate (answerable questions), the share of unanswerable
//! questions answered "not covered" and of answerable ones wrongly so, and
//! retrieval latency (as the server reports it, and as the client sees it:
//! request sent to passages received).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use agentstream::pb::{
    self, rag_service_client::RagServiceClient, stream_answer_response::Event,
    task_service_client::TaskServiceClient,
};
use clap::Args;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{BenchResult, server::Spawned};

/// Options of `rag-eval`.
#[derive(Debug, Clone, Args)]
pub struct RagEvalArgs {
    /// The evaluation: a folder with `corpus/` (Markdown and text files,
    /// recursively; each file's id is its path under `corpus/`) and
    /// `questions.json`.
    #[arg(long, default_value = "eval/rag")]
    pub dir: PathBuf,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// A shell command that starts the server (with a fresh `--data-dir`
    /// and `--mock-token-delay 0`); the eval runs it, waits for `--addr` and
    /// kills it at the end.
    #[arg(long)]
    pub spawn: Option<String>,
    /// Where the spawned server's output goes.
    #[arg(long, default_value = "/tmp/agentstream-rag-eval-server.log")]
    pub server_log: PathBuf,
    /// Passages asked for per question (recall@k uses this k).
    #[arg(long, default_value_t = 4)]
    pub top_k: u32,
    /// The model that answers (the built-in ones answer extractively).
    #[arg(long, default_value = "echo")]
    pub model: String,
    /// Print every question that missed, with what came back.
    #[arg(long)]
    pub verbose: bool,
    /// Exit with failure when a goal is missed (recall@k 0.95, answer hit
    /// 0.85, not-covered 0.90).
    #[arg(long)]
    pub check: bool,
}

/// One question of `questions.json`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Question {
    id: String,
    question: String,
    /// Document ids that answer it; empty: the corpus cannot.
    #[serde(default)]
    sources: Vec<String>,
    /// The answer must contain one of these (case and spacing ignored).
    #[serde(default)]
    keys: Vec<String>,
}

/// What came back for one question.
#[derive(Debug)]
struct Outcome {
    documents: Vec<String>,
    answer: String,
    server_retrieval_us: u64,
    client_retrieval: Duration,
}

/// Phrases that start the server's "not covered" answers.
const NOT_COVERED: &[&str] = &["do not cover", "没有涉及", "没有关于"];

/// The goals of issue 12.
const GOAL_RECALL: f64 = 0.95;
const GOAL_ANSWER_HIT: f64 = 0.85;
const GOAL_NOT_COVERED: f64 = 0.90;

pub async fn run(args: RagEvalArgs) -> BenchResult<()> {
    let questions: Vec<Question> = {
        let path = args.dir.join("questions.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let documents = corpus(&args.dir.join("corpus"))?;
    let _spawned = match &args.spawn {
        Some(command) => Some(Spawned::start(command, None, &args.server_log, args.addr).await?),
        None => None,
    };
    let channel = Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect {}: {e}", args.addr))?;
    let bytes: usize = documents.iter().map(|d| d.text.len()).sum();
    let count = documents.len();
    let started = Instant::now();
    ingest(&channel, documents).await?;
    println!(
        "corpus: {count} documents, {} KiB, ingested in {} ms; {} questions ({} unanswerable)",
        bytes / 1024,
        started.elapsed().as_millis(),
        questions.len(),
        questions.iter().filter(|q| q.sources.is_empty()).count()
    );
    let mut outcomes = Vec::with_capacity(questions.len());
    for question in &questions {
        outcomes.push(ask(&channel, question, &args).await?);
    }
    let report = Report::new(&questions, &outcomes, args.top_k as usize);
    report.print(args.top_k);
    if args.verbose {
        print_misses(&questions, &outcomes, args.top_k as usize);
    }
    if args.check && !report.goals_met() {
        return Err("rag-eval: a goal was missed".into());
    }
    Ok(())
}

/// The files under `dir`, as documents whose id is their relative path.
fn corpus(dir: &Path) -> BenchResult<Vec<pb::Document>> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let id = path
                .strip_prefix(dir)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .replace('\\', "/");
            let title = text
                .lines()
                .find_map(|l| l.strip_prefix("# "))
                .map_or_else(|| id.clone(), |t| t.trim().to_owned());
            Ok(pb::Document {
                source: format!("{}/{id}", dir.display()),
                id,
                title,
                text,
                metadata: Default::default(),
            })
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> BenchResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "md" || e == "txt") {
            files.push(path);
        }
    }
    Ok(())
}

/// Ingests `documents` and waits for the task to succeed.
async fn ingest(channel: &Channel, documents: Vec<pb::Document>) -> BenchResult<()> {
    let task = RagServiceClient::new(channel.clone())
        .ingest_documents(pb::IngestDocumentsRequest { documents })
        .await
        .map_err(|s| format!("IngestDocuments: {s}"))?
        .into_inner()
        .task
        .ok_or("IngestDocuments returned no task")?;
    let mut events = TaskServiceClient::new(channel.clone())
        .watch_task(pb::WatchTaskRequest {
            task_id: task.task_id.clone(),
            after_sequence: 0,
        })
        .await
        .map_err(|s| format!("WatchTask: {s}"))?
        .into_inner();
    let mut last = None;
    while let Some(event) = events
        .message()
        .await
        .map_err(|s| format!("WatchTask: {s}"))?
    {
        last = event.event.map(|e| (e.state(), e.error));
    }
    match last {
        Some((pb::TaskState::Succeeded, _)) => Ok(()),
        Some((state, error)) => Err(format!("ingestion ended {state:?}: {error}")),
        None => Err("ingestion: no task event".into()),
    }
}

async fn ask(channel: &Channel, question: &Question, args: &RagEvalArgs) -> BenchResult<Outcome> {
    let started = Instant::now();
    let mut events = RagServiceClient::new(channel.clone())
        .stream_answer(pb::StreamAnswerRequest {
            question: question.question.clone(),
            top_k: args.top_k,
            model: args.model.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("{}: StreamAnswer: {s}", question.id))?
        .into_inner();
    let mut outcome = Outcome {
        documents: Vec::new(),
        answer: String::new(),
        server_retrieval_us: 0,
        client_retrieval: Duration::ZERO,
    };
    while let Some(message) = events
        .message()
        .await
        .map_err(|s| format!("{}: StreamAnswer: {s}", question.id))?
    {
        match message.event {
            Some(Event::PassagesRetrieved(found)) => {
                outcome.client_retrieval = started.elapsed();
                outcome.server_retrieval_us = retrieval_us(&found);
                outcome.documents = found.passages.into_iter().map(|p| p.document_id).collect();
            }
            Some(Event::Content(delta)) => outcome.answer.push_str(&delta.text),
            _ => {}
        }
    }
    Ok(outcome)
}

/// The server's retrieval time in microseconds.
fn retrieval_us(found: &pb::PassagesRetrieved) -> u64 {
    found.retrieval_us
}

/// Lower case, runs of whitespace as one space.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn says_not_covered(answer: &str) -> bool {
    NOT_COVERED.iter().any(|p| answer.contains(p))
}

fn key_hit(question: &Question, answer: &str) -> bool {
    let answer = normalized(answer);
    question
        .keys
        .iter()
        .any(|k| answer.contains(&normalized(k)))
}

/// Rank (1-based) of the first passage from an expected document.
fn first_rank(question: &Question, documents: &[String]) -> Option<usize> {
    documents
        .iter()
        .position(|d| question.sources.contains(d))
        .map(|i| i + 1)
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Report {
    answerable: usize,
    unanswerable: usize,
    recall_1: f64,
    recall_k: f64,
    mrr: f64,
    answer_hit: f64,
    not_covered: f64,
    false_not_covered: usize,
    /// Server-side retrieval, µs: p50, p95, max.
    server_us: (u64, u64, u64),
    /// Client-side time to passages, µs: p50, p95, max.
    client_us: (u64, u64, u64),
    by_language: BTreeMap<&'static str, (usize, usize, usize)>,
}

impl Report {
    fn new(questions: &[Question], outcomes: &[Outcome], k: usize) -> Self {
        let mut r = Report::default();
        let (mut r1, mut rk, mut rr, mut hits, mut nc) = (0usize, 0usize, 0f64, 0usize, 0usize);
        for (q, o) in questions.iter().zip(outcomes) {
            let language = if agentstream::rag::has_cjk(&q.question) {
                "zh"
            } else {
                "en"
            };
            let entry = r.by_language.entry(language).or_default();
            if q.sources.is_empty() {
                r.unanswerable += 1;
                nc += usize::from(says_not_covered(&o.answer));
                continue;
            }
            r.answerable += 1;
            let rank = first_rank(q, &o.documents);
            r1 += usize::from(rank == Some(1));
            let found = rank.is_some_and(|n| n <= k);
            rk += usize::from(found);
            rr += rank.map_or(0.0, |n| 1.0 / n as f64);
            let hit = key_hit(q, &o.answer);
            hits += usize::from(hit);
            r.false_not_covered += usize::from(says_not_covered(&o.answer));
            entry.0 += 1;
            entry.1 += usize::from(found);
            entry.2 += usize::from(hit);
        }
        let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        r.recall_1 = share(r1, r.answerable);
        r.recall_k = share(rk, r.answerable);
        r.mrr = if r.answerable == 0 {
            0.0
        } else {
            rr / r.answerable as f64
        };
        r.answer_hit = share(hits, r.answerable);
        r.not_covered = share(nc, r.unanswerable);
        let mut server: Vec<u64> = outcomes.iter().map(|o| o.server_retrieval_us).collect();
        let mut client: Vec<u64> = outcomes
            .iter()
            .map(|o| o.client_retrieval.as_micros() as u64)
            .collect();
        r.server_us = percentiles(&mut server);
        r.client_us = percentiles(&mut client);
        r
    }

    fn goals_met(&self) -> bool {
        self.recall_k >= GOAL_RECALL
            && self.answer_hit >= GOAL_ANSWER_HIT
            && self.not_covered >= GOAL_NOT_COVERED
    }

    fn print(&self, k: u32) {
        let goal = |ok: bool| if ok { "met" } else { "MISSED" };
        println!("| measure | value | goal |");
        println!("|---|---|---|");
        println!("| recall@1 | {:.3} | |", self.recall_1);
        println!(
            "| recall@{k} | {:.3} | ≥ {GOAL_RECALL} {} |",
            self.recall_k,
            goal(self.recall_k >= GOAL_RECALL)
        );
        println!("| MRR | {:.3} | |", self.mrr);
        println!(
            "| answer-key hit ({} answerable) | {:.3} | ≥ {GOAL_ANSWER_HIT} {} |",
            self.answerable,
            self.answer_hit,
            goal(self.answer_hit >= GOAL_ANSWER_HIT)
        );
        println!(
            "| not covered, said ({} unanswerable) | {:.3} | ≥ {GOAL_NOT_COVERED} {} |",
            self.unanswerable,
            self.not_covered,
            goal(self.not_covered >= GOAL_NOT_COVERED)
        );
        println!(
            "| not covered, wrongly said (answerable) | {} | 0 |",
            self.false_not_covered
        );
        println!(
            "| retrieval, server (p50 / p95 / max) | {} / {} / {} µs | |",
            self.server_us.0, self.server_us.1, self.server_us.2
        );
        println!(
            "| request to passages, client (p50 / p95 / max) | {} / {} / {} µs | |",
            self.client_us.0, self.client_us.1, self.client_us.2
        );
        for (language, (n, found, hit)) in &self.by_language {
            println!("{language}: {n} answerable, recall@{k} {found}/{n}, answer hit {hit}/{n}");
        }
    }
}

fn percentiles(values: &mut [u64]) -> (u64, u64, u64) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    values.sort_unstable();
    let at = |p: usize| values[(values.len() - 1) * p / 100];
    (at(50), at(95), at(100))
}

fn print_misses(questions: &[Question], outcomes: &[Outcome], k: usize) {
    for (q, o) in questions.iter().zip(outcomes) {
        let answerable = !q.sources.is_empty();
        let retrieved = first_rank(q, &o.documents).is_some_and(|n| n <= k);
        let ok = if answerable {
            retrieved && key_hit(q, &o.answer)
        } else {
            says_not_covered(&o.answer)
        };
        if ok {
            continue;
        }
        println!("\n--- {} {}", q.id, q.question);
        if answerable {
            println!("expected {:?} keys {:?}", q.sources, q.keys);
        }
        println!("passages {:?}", o.documents);
        println!("answer: {}", o.answer);
    }
}
