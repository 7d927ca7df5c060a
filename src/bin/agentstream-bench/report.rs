//! `report`: medians over the JSON lines of interleaved runs, as Markdown
//! tables with each figure's ratio to the `baseline` label.

use std::{collections::BTreeMap, path::PathBuf};

use serde_json::Value;

use crate::{BenchResult, stats::format_value};

/// Options of `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// JSON-lines files written by `run --json`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The label every figure is divided by.
    #[arg(long, default_value = "baseline")]
    baseline: String,
}

/// The figures shown per scenario.
fn columns(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "single" => &[
            "chunks_per_s",
            "mb_per_s",
            "bytes_per_chunk",
            "client_cpu_busy",
            "server_cpu_busy",
        ],
        "fanout" => &[
            "achieved_ratio",
            "late_p50",
            "late_p99",
            "ttft_p50",
            "ttft_p99",
            "server_rss_peak",
            "server_bytes_per_stream",
            "server_cpu",
            "client_cpu",
            "streams_failed",
        ],
        "ttft" => &["ttft_p50", "ttft_p99", "call_p50"],
        "cancel" => &[
            "returned_to_zero",
            "time_to_zero",
            "tokens_after_zero_200ms",
        ],
        _ => &[],
    }
}

type Runs = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

/// Prints one table per scenario.
pub fn run(args: &ReportArgs) -> BenchResult<()> {
    // scenario -> label -> figure -> values
    let mut all: BTreeMap<String, Runs> = BTreeMap::new();
    // (scenario, figure) -> unit
    let mut units: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let scenario = v["scenario"].as_str().unwrap_or_default().to_owned();
            let label = v["label"].as_str().unwrap_or_default().to_owned();
            *counts.entry((scenario.clone(), label.clone())).or_default() += 1;
            if let Some(map) = v["units"].as_object() {
                for (name, unit) in map {
                    let unit = unit.as_str().unwrap_or_default().to_owned();
                    units.insert((scenario.clone(), name.clone()), unit);
                }
            }
            let figures = all.entry(scenario).or_default().entry(label).or_default();
            if let Some(map) = v["figures"].as_object() {
                for (name, value) in map {
                    if let Some(x) = value.as_f64() {
                        figures.entry(name.clone()).or_default().push(x);
                    }
                }
            }
        }
    }
    for (scenario, labels) in &all {
        let cols = columns(scenario);
        println!("\n### {scenario}\n");
        let header: Vec<String> = cols
            .iter()
            .map(|c| {
                match units
                    .get(&(scenario.clone(), (*c).to_owned()))
                    .map(String::as_str)
                {
                    Some("") | None => (*c).to_owned(),
                    Some(unit) => format!("{c} ({unit})"),
                }
            })
            .collect();
        println!("| server | runs | {} |", header.join(" | "));
        println!("|---|---|{}", "---|".repeat(cols.len()));
        let base = labels.get(&args.baseline);
        for (label, figures) in labels {
            let runs = counts[&(scenario.clone(), label.clone())];
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let Some(m) = figures.get(*c).map(|v| median(v)) else {
                        return "n/a".into();
                    };
                    let ratio = base
                        .and_then(|b| b.get(*c))
                        .map(|b| median(b))
                        .filter(|b| *b != 0.0 && label != &args.baseline && !c.contains("cpu"))
                        .map(|b| format!(" ({})", ratio(m / b)))
                        .unwrap_or_default();
                    format!("{}{ratio}", format_value(m))
                })
                .collect();
            println!("| {label} | {runs} | {} |", cells.join(" | "));
        }
    }
    println!(
        "\nMedian of the runs; (x) is the ratio to `{}`.",
        args.baseline
    );
    Ok(())
}

/// A ratio with two significant digits at least (0.0047x, 0.62x, 1.00x).
fn ratio(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}x")
    } else {
        let digits = (-r.log10()).ceil() as usize + 1;
        format!("{r:.digits$}x")
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}
