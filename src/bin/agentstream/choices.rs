//! Showing the choices of a chat answer as they stream.
//!
//! With one choice the text simply flows to standard output. With `-n 2`
//! or more, the choices' chunks interleave as the server produces them, and
//! each must still be seen live:
//!
//! - on a terminal, one line per choice grows in place (the end of its text,
//!   as wide as the terminal); when the answer ends, the lines give way to
//!   each choice in full under its own heading;
//! - elsewhere (a pipe, a file), every line of output is prefixed with its
//!   choice, `[0] ...`, a new line starting whenever the next chunk belongs
//!   to another choice, so `grep '^\[1\]'` extracts one.

use std::io::{self, IsTerminal};

use agentstream::pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

/// The display of one answer's choices.
pub enum Choices {
    /// One choice, streamed as is.
    Single(Texts),
    /// Several, as prefixed lines.
    Prefixed {
        texts: Texts,
        /// The choice whose line is open.
        open: Option<u32>,
    },
    /// Several, as live lines on a terminal.
    Live {
        texts: Texts,
        bars: Vec<ProgressBar>,
        lines: MultiProgress,
    },
}

impl Choices {
    /// The display for `n` choices on this process's standard output.
    pub fn new(n: u32) -> Self {
        let n = n.max(1);
        let texts = Texts::new(n);
        if n == 1 {
            return Self::Single(texts);
        }
        if !io::stdout().is_terminal() {
            return Self::Prefixed { texts, open: None };
        }
        let lines = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = (0..n)
            .map(|i| {
                lines.add(
                    ProgressBar::no_length()
                        .with_style(style.clone())
                        .with_prefix(format!("[{i}]")),
                )
            })
            .collect();
        Self::Live { texts, bars, lines }
    }

    /// Shows one choice delta of a chunk.
    pub fn push(&mut self, choice: &pb::ChatChoice) -> io::Result<()> {
        let content = choice.delta.as_ref().map_or("", |d| d.content.as_str());
        let finish = pb::FinishReason::try_from(choice.finish_reason)
            .ok()
            .filter(|r| *r != pb::FinishReason::Unspecified);
        match self {
            Self::Single(texts) => {
                texts.push(0, content, finish);
                output::write(content)?;
                if finish.is_some() {
                    output::end_line()?;
                }
            }
            Self::Prefixed { texts, open } => {
                texts.push(choice.index, content, finish);
                if content.is_empty() {
                    return Ok(());
                }
                if *open != Some(choice.index) {
                    output::end_line()?;
                    output::write(&format!("[{}] ", choice.index))?;
                    *open = Some(choice.index);
                }
                let prefix = format!("\n[{}] ", choice.index);
                output::write(&content.replace('\n', &prefix))?;
            }
            Self::Live { texts, bars, .. } => {
                texts.push(choice.index, content, finish);
                if let (Some(bar), Some(text)) =
                    (bars.get(choice.index as usize), texts.get(choice.index))
                {
                    let width = usize::from(console::Term::stdout().size().1);
                    bar.set_message(tail(&text.0, width.saturating_sub(5)));
                }
            }
        }
        Ok(())
    }

    /// Ends the display, complete or not (an error or Ctrl-C ended the
    /// answer): live lines give way to each choice in full.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Self::Live { texts, bars, lines } = self
            && !bars.is_empty()
        {
            for bar in bars.iter() {
                bar.finish_and_clear();
            }
            let _ = lines.clear();
            for (index, (text, finish)) in texts.0.iter().enumerate() {
                let reason = finish.map_or("unfinished", |r| r.as_str_name());
                output::line(&format!("--- choice {index} ({reason}) ---"))?;
                output::write(text)?;
                output::end_line()?;
            }
            bars.clear();
        }
        output::end_line()
    }

    /// The text of the first choice (the one a conversation keeps).
    pub fn first(&self) -> &str {
        let texts = match self {
            Self::Single(texts) | Self::Prefixed { texts, .. } | Self::Live { texts, .. } => texts,
        };
        texts.get(0).map_or("", |(text, _)| text)
    }
}

/// Each choice's text so far and, once it ended, why.
pub struct Texts(Vec<(String, Option<pb::FinishReason>)>);

impl Texts {
    fn new(n: u32) -> Self {
        Self((0..n).map(|_| (String::new(), None)).collect())
    }

    fn push(&mut self, index: u32, content: &str, finish: Option<pb::FinishReason>) {
        if let Some((text, reason)) = self.0.get_mut(index as usize) {
            text.push_str(content);
            if finish.is_some() {
                *reason = finish;
            }
        }
    }

    fn get(&self, index: u32) -> Option<&(String, Option<pb::FinishReason>)> {
        self.0.get(index as usize)
    }
}

/// The end of `text` on one line, at most `width` columns wide.
fn tail(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    let mut used = 0;
    let mut start = flat.len();
    for (i, c) in flat.char_indices().rev() {
        let w = console::measure_text_width(c.encode_utf8(&mut [0; 4]));
        if used + w > width {
            break;
        }
        used += w;
        start = i;
    }
    flat[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_newest_text_within_the_width() {
        assert_eq!(tail("hello\nworld", 20), "hello world");
        assert_eq!(tail("hello world", 5), "world");
        // Chinese characters take two columns each.
        assert_eq!(tail("异步编程", 5), "编程");
        assert_eq!(tail("abc", 0), "");
    }
}
