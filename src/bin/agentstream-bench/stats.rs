//! Percentiles and the result of one run: a terminal table and a JSON line.

use std::{io::Write, path::Path};

use serde_json::{Map, Value, json};

use crate::{BenchResult, Scenario};

/// The `p`-th percentile (0..=100) of sorted values; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The figures of one run, in order.
pub struct Outcome {
    scenario: Scenario,
    label: String,
    params: Map<String, Value>,
    figures: Vec<(String, f64, &'static str)>,
    // Figures with a shape (timelines), for the JSON line only.
    series: Map<String, Value>,
}

impl Outcome {
    /// An empty result for `label` running `scenario`.
    pub fn new(scenario: Scenario, label: &str) -> Self {
        Self {
            scenario,
            label: label.to_owned(),
            params: Map::new(),
            figures: Vec::new(),
            series: Map::new(),
        }
    }

    /// Records a parameter of the run.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    /// Records a figure.
    pub fn figure(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push((name.to_owned(), value, unit));
    }

    /// Records a figure with a shape (a timeline): JSON line only.
    pub fn series(&mut self, name: &str, value: Value) {
        self.series.insert(name.to_owned(), value);
    }

    /// Prints the table.
    pub fn print(&self) {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "\n{} / {:?}  ({})",
            self.label,
            self.scenario,
            params.join(", ")
        );
        println!("  {:<28} {:>16}  unit", "figure", "value");
        for (name, value, unit) in &self.figures {
            println!("  {name:<28} {:>16}  {unit}", format_value(*value));
        }
    }

    /// Appends the JSON line to `path`.
    pub fn append_json(&self, path: &Path) -> BenchResult<()> {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|(name, value, _)| (name.clone(), json!(value)))
            .collect();
        let units: Map<String, Value> = self
            .figures
            .iter()
            .map(|(name, _, unit)| (name.clone(), json!(unit)))
            .collect();
        let line = json!({
            "scenario": self.scenario,
            "label": self.label,
            "params": self.params,
            "figures": figures,
            "units": units,
            "series": self.series,
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(file, "{line}").map_err(|e| e.to_string())
    }
}

/// Integers without decimals, small values with three significant digits.
pub fn format_value(value: f64) -> String {
    if value.abs() >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}
