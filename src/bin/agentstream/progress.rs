//! The progress bar of long work (ingestion and tasks share one look).
//!
//! The time left is estimated from the work's own average rate since it
//! started, measured by the caller from the server's event times, not from
//! when this process began to watch: someone who joins a task half-way
//! sees the right estimate at once, and it counts down between events.
//!
//! The bar draws on standard error only when that is a terminal; otherwise
//! callers print plain lines (see [`Progress::draws`]).

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// How often the spinner, the elapsed time and the estimate are redrawn.
const TICK: Duration = Duration::from_millis(120);

/// A progress bar counting some `unit` (steps, documents).
pub struct Progress {
    bar: ProgressBar,
    unit: &'static str,
    /// When the work should be done, if that can be estimated yet.
    done_at: Arc<Mutex<Option<Instant>>>,
}

impl Progress {
    /// A spinner until the first [`show`](Self::show) gives a total.
    pub fn new(unit: &'static str) -> Self {
        let bar = ProgressBar::no_length();
        bar.set_style(template("{spinner:.green} [{elapsed_precise}] {wide_msg}"));
        bar.enable_steady_tick(TICK);
        Self {
            bar,
            unit,
            done_at: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether a bar is drawn (standard error is a terminal).
    pub fn draws(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Counts the elapsed time from `age` ago (the work's start), not now.
    pub fn started(&self, age: Duration) {
        self.bar.set_elapsed(age);
    }

    /// Shows `done` of `total` units and `message`; `rate` is `done_since`
    /// units in `took` since the work started, from which the time left is
    /// estimated.
    pub fn show(&self, done: u64, total: u64, rate: Option<(u64, Duration)>, message: &str) {
        if total > 0 && self.bar.length() != Some(total) {
            self.bar.set_length(total);
            self.bar.set_style(self.bar_style());
        }
        self.bar.set_position(done.min(total));
        self.bar.set_message(message.to_owned());
        let left =
            rate.and_then(|(units, took)| time_left(units, took, total.saturating_sub(done)));
        if let Ok(mut done_at) = self.done_at.lock() {
            *done_at = left.map(|left| Instant::now() + left);
        }
    }

    /// Prints a line above the bar (or on its own without one).
    pub fn note(&self, text: &str) {
        if self.draws() {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// Ends the bar, full, with `message`.
    pub fn succeed(&self, message: String) {
        self.clear_estimate();
        self.bar.finish_with_message(message);
    }

    /// Ends the bar where it stopped, with a one-word `state`; the caller
    /// reports why once, as the command's error.
    pub fn fail(&self, state: &str) {
        self.clear_estimate();
        self.bar.abandon_with_message(state.to_owned());
    }

    /// Leaves the bar as it is (the watcher stops, the work goes on).
    pub fn stop(&self) {
        self.clear_estimate();
        self.bar.abandon();
    }

    fn clear_estimate(&self) {
        if let Ok(mut done_at) = self.done_at.lock() {
            *done_at = None;
        }
    }

    fn bar_style(&self) -> ProgressStyle {
        let done_at = self.done_at.clone();
        let eta = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let done_at = done_at.lock().ok().and_then(|d| *d);
            let _ = match done_at {
                Some(at) => write!(
                    w,
                    "ETA {}",
                    clock(at.saturating_duration_since(Instant::now()))
                ),
                None => w.write_str("ETA -"),
            };
        };
        template(&format!(
            "{{spinner:.green}} [{{elapsed_precise}}] [{{bar:30.cyan/blue}}] {{percent:>3}}% \
             {{pos}}/{{len}} {unit} {{eta_left}}  {{wide_msg}}",
            unit = self.unit
        ))
        .with_key("eta_left", eta)
    }
}

fn template(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The time `left` units take at the rate of `units` in `took`.
fn time_left(units: u64, took: Duration, left: u64) -> Option<Duration> {
    if units == 0 || took.is_zero() {
        return None;
    }
    let per_unit = took.as_secs_f64() / units as f64;
    Duration::try_from_secs_f64(per_unit * left as f64).ok()
}

/// `07:58` or `1:02:03`.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}:");
    }
    let _ = write!(out, "{m:02}:{s:02}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_follows_the_average_rate_since_the_start() {
        // Joined at step 100 of 400, the task having run 2 minutes: 6 left.
        assert_eq!(
            time_left(100, Duration::from_secs(120), 300),
            Some(Duration::from_secs(360))
        );
        assert_eq!(time_left(0, Duration::from_secs(5), 10), None);
        assert_eq!(time_left(3, Duration::ZERO, 10), None);
    }

    #[test]
    fn clocks_read_like_elapsed_times() {
        assert_eq!(clock(Duration::from_secs(478)), "07:58");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
