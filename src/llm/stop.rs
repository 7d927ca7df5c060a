//! Stop sequences that are never emitted, even when they span chunks.
//!
//! Text arrives in pieces; a stop sequence may begin at the end of one piece
//! and finish in the next. The filter holds back only the longest tail of the
//! text that could still grow into a stop sequence, and releases it as soon
//! as it cannot.

use std::borrow::Cow;

/// What the filter lets through for one piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filtered {
    /// Text that is safe to send (possibly empty); generation goes on.
    Pass(String),
    /// A stop sequence was reached: send this text (the part before the stop
    /// sequence, possibly empty) and end the choice.
    Stopped(String),
}

/// Cuts a stream of text pieces at the first stop sequence.
///
/// Without stop sequences (most requests) the filter is one null pointer:
/// every open stream carries one, and the stop sequences and held text it
/// would otherwise hold inline (48 bytes) are boxed only when there are
/// some.
#[derive(Debug)]
pub(crate) struct StopSequenceFilter(Option<Box<Stops>>);

/// The stop sequences of an active filter and the text it holds back.
#[derive(Debug)]
struct Stops {
    stops: Vec<String>,
    held: String,
}

impl StopSequenceFilter {
    /// A filter for `stops`; empty strings are ignored.
    pub(crate) fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        Self((!stops.is_empty()).then(|| {
            Box::new(Stops {
                stops,
                held: String::new(),
            })
        }))
    }

    /// Feeds the next piece of generated text (an owned piece passes
    /// without a copy when there are no stop sequences).
    ///
    /// Small enough to inline into a model's token loop, which most
    /// requests (no stop sequences) never leave: the text then reaches the
    /// caller in registers rather than through memory it just wrote.
    #[inline]
    pub(crate) fn push<'a>(&mut self, piece: impl Into<Cow<'a, str>>) -> Filtered {
        let piece = piece.into();
        match &mut self.0 {
            None => Filtered::Pass(piece.into_owned()),
            Some(stops) => stops.filter(&piece),
        }
    }

    /// Generation ended without a stop sequence: releases the held text.
    pub(crate) fn finish(&mut self) -> String {
        self.0
            .as_mut()
            .map_or_else(String::new, |stops| std::mem::take(&mut stops.held))
    }
}

impl Stops {
    /// [`StopSequenceFilter::push`] with stop sequences to look for.
    fn filter(&mut self, piece: &str) -> Filtered {
        self.held.push_str(piece);
        if let Some(at) = self.first_stop() {
            self.held.truncate(at);
            return Filtered::Stopped(std::mem::take(&mut self.held));
        }
        let keep = self.longest_partial_stop();
        let rest = self.held.split_off(self.held.len() - keep);
        Filtered::Pass(std::mem::replace(&mut self.held, rest))
    }

    /// Byte offset of the earliest complete stop sequence in the held text.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest tail of the held text that is a proper prefix
    /// of some stop sequence (and so must not be sent yet).
    fn longest_partial_stop(&self) -> usize {
        let longest_stop = self.stops.iter().map(String::len).max().unwrap_or(0);
        let max_keep = longest_stop.saturating_sub(1).min(self.held.len());
        (1..=max_keep)
            .rev()
            .map(|keep| self.held.len() - keep)
            .filter(|&start| self.held.is_char_boundary(start))
            .find(|&start| {
                let tail = &self.held[start..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .map_or(0, |start| self.held.len() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut filter = StopSequenceFilter::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            match filter.push(*piece) {
                Filtered::Pass(text) => out.push_str(&text),
                Filtered::Stopped(text) => {
                    out.push_str(&text);
                    return (out, true);
                }
            }
        }
        out.push_str(&filter.finish());
        (out, false)
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["END"], &["abcENDdef"]), ("abc".into(), true));
    }

    #[test]
    fn stop_spanning_three_pieces_is_never_sent() {
        assert_eq!(
            run(&["STOP"], &["hello S", "T", "OP world"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn a_false_start_is_released() {
        assert_eq!(run(&["STOP"], &["ST", "ART"]), ("START".into(), false));
    }

    #[test]
    fn holds_back_only_what_could_still_become_a_stop() {
        let stops = vec!["xyz".to_string()];
        let mut filter = StopSequenceFilter::new(&stops);
        assert_eq!(filter.push("abcx"), Filtered::Pass("abc".into()));
        assert_eq!(filter.push("y"), Filtered::Pass(String::new()));
        assert_eq!(filter.push("q"), Filtered::Pass("xyq".into()));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["bb", "a"], &["xxbba"]), ("xx".into(), true));
    }

    #[test]
    fn multibyte_stops_and_text() {
        assert_eq!(
            run(&["。"], &["你好", "世界。", "再见"]),
            ("你好世界".into(), true)
        );
        assert_eq!(
            run(&["🎉!"], &["party 🎉", "🎉", "!"]),
            ("party 🎉".into(), true)
        );
    }

    #[test]
    fn stop_at_the_very_start_sends_nothing() {
        assert_eq!(run(&["a"], &["abc"]), (String::new(), true));
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
