//! Splitting documents into the passages that are indexed and retrieved.
//!
//! Retrieval ranks passages, not documents: a question is answered by a few
//! sentences, and a whole document would drown them (and blow any model's
//! context). Passages follow the text's own structure: paragraphs (blank-line
//! separated) are kept whole and packed together while they fit in
//! [`MAX_PASSAGE_CHARS`]; a longer paragraph is split at sentence ends, and
//! the next passage repeats the last sentence of the previous one (when it is
//! short enough) so that context spanning the cut is not lost; a single
//! sentence longer than the limit is cut into windows that overlap by
//! [`OVERLAP_CHARS`]. Sentences end at `.`, `!`, `?` followed by a space,
//! at the Chinese full stops `。！？；` (which need no space), and at line
//! ends (so Markdown lists and headings are units of their own).
//!
//! Sizes are in characters, not bytes, so Chinese and English passages hold a
//! comparable amount of text.

use std::ops::Range;

/// Longest passage, in characters.
pub const MAX_PASSAGE_CHARS: usize = 1000;
/// How much consecutive passages share where a passage must be cut.
pub const OVERLAP_CHARS: usize = 150;

/// The passages of `text`, in order; none for a blank text.
pub fn split_passages(text: &str) -> Vec<&str> {
    let mut passages = Vec::new();
    // The paragraphs packed so far: a byte range of `text`.
    let mut current: Option<(Range<usize>, usize)> = None;
    for paragraph in paragraphs(text) {
        let chars = text[paragraph.clone()].chars().count();
        if let Some((range, used)) = current.as_mut() {
            if *used + 2 + chars <= MAX_PASSAGE_CHARS {
                range.end = paragraph.end;
                *used += 2 + chars;
                continue;
            }
            passages.push(&text[range.clone()]);
            current = None;
        }
        if chars <= MAX_PASSAGE_CHARS {
            current = Some((paragraph, chars));
        } else {
            let base = paragraph.start;
            let pieces = split_long_paragraph(&text[paragraph]);
            passages.extend(
                pieces
                    .into_iter()
                    .map(|r| &text[base + r.start..base + r.end]),
            );
        }
    }
    if let Some((range, _)) = current {
        passages.push(&text[range]);
    }
    passages
}

/// Byte ranges of the non-blank paragraphs of `text`, trimmed.
fn paragraphs(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                out.push(s..end);
            }
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        start.get_or_insert(line_start + lead);
        end = line_start + line.trim_end().len();
    }
    if let Some(s) = start {
        out.push(s..end);
    }
    out
}

/// Byte ranges of the sentences of `text`, trimmed, in order.
pub fn sentences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    let mut prev = '\n';
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let ends = match c {
            '\n' => true,
            c if is_full_stop(c) => !next.is_some_and(is_closing),
            '.' | '!' | '?' => next.is_none_or(char::is_whitespace),
            c if is_closing(c) => {
                is_full_stop(prev)
                    || (matches!(prev, '.' | '!' | '?') && next.is_none_or(char::is_whitespace))
            }
            _ => false,
        };
        prev = c;
        if ends {
            push_trimmed(text, start..i + c.len_utf8(), &mut out);
            start = i + c.len_utf8();
        }
    }
    push_trimmed(text, start..text.len(), &mut out);
    out
}

/// The Chinese sentence ends, which need no space after them.
fn is_full_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；')
}

/// Closing quotes and brackets that belong to the sentence before them.
fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | '”' | '’' | '」' | '』' | '）')
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let piece = &text[range.clone()];
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        let start = range.start + (piece.len() - piece.trim_start().len());
        out.push(start..start + trimmed.len());
    }
}

/// Packs the sentences of a paragraph longer than one passage.
fn split_long_paragraph(paragraph: &str) -> Vec<Range<usize>> {
    let units: Vec<(Range<usize>, usize)> = sentences(paragraph)
        .into_iter()
        .flat_map(|s| {
            let chars = paragraph[s.clone()].chars().count();
            if chars <= MAX_PASSAGE_CHARS {
                vec![(s, chars)]
            } else {
                windows(&paragraph[s.clone()])
                    .into_iter()
                    .map(|w| {
                        let chars = paragraph[s.start + w.start..s.start + w.end]
                            .chars()
                            .count();
                        (s.start + w.start..s.start + w.end, chars)
                    })
                    .collect()
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut current: Option<(Range<usize>, usize)> = None;
    let mut last: Option<(Range<usize>, usize)> = None;
    for (unit, chars) in units {
        if let Some((range, used)) = current.as_mut() {
            if *used + 1 + chars <= MAX_PASSAGE_CHARS {
                range.end = unit.end;
                *used += 1 + chars;
                last = Some((unit, chars));
                continue;
            }
            out.push(range.clone());
            // Carry the previous sentence over, as overlap, when it is short.
            current = match last.take() {
                Some((prev, prev_chars))
                    if prev_chars <= OVERLAP_CHARS
                        && prev_chars + 1 + chars <= MAX_PASSAGE_CHARS
                        && prev.start > range.start =>
                {
                    Some((prev.start..unit.end, prev_chars + 1 + chars))
                }
                _ => Some((unit.clone(), chars)),
            };
        } else {
            current = Some((unit.clone(), chars));
        }
        last = Some((unit, chars));
    }
    if let Some((range, _)) = current {
        out.push(range);
    }
    out
}

/// Cuts an over-long sentence into windows of at most [`MAX_PASSAGE_CHARS`]
/// characters that overlap by [`OVERLAP_CHARS`], preferring to cut at a space.
fn windows(sentence: &str) -> Vec<Range<usize>> {
    let bounds: Vec<usize> = sentence
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(sentence.len()))
        .collect();
    let total = bounds.len() - 1;
    let mut out = Vec::new();
    let mut first = 0;
    loop {
        let mut last = (first + MAX_PASSAGE_CHARS).min(total);
        if last < total {
            // Back off to a space in the window's last fifth, if there is one.
            let floor = last - MAX_PASSAGE_CHARS / 5;
            if let Some(space) = (floor..last)
                .rev()
                .find(|&k| sentence[bounds[k]..].starts_with(char::is_whitespace))
            {
                last = space;
            }
        }
        let piece = bounds[first]..bounds[last];
        let trimmed = &sentence[piece.clone()];
        let lead = trimmed.len() - trimmed.trim_start().len();
        out.push(piece.start + lead..piece.start + trimmed.trim_end().len());
        if last >= total {
            return out;
        }
        first = last.saturating_sub(OVERLAP_CHARS).max(first + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn short_paragraphs_are_packed_into_one_passage() {
        let text = "# Title\n\nFirst paragraph. It has two sentences.\n\n\n  Second one.  \n";
        assert_eq!(
            split_passages(text),
            ["# Title\n\nFirst paragraph. It has two sentences.\n\n\n  Second one."]
        );
    }

    #[test]
    fn blank_text_has_no_passage() {
        assert!(split_passages(" \n\n\t\n").is_empty());
    }

    #[test]
    fn paragraphs_start_a_new_passage_when_the_current_one_is_full() {
        let a = "a".repeat(600);
        let b = "b".repeat(600);
        let text = format!("{a}\n\n{b}");
        assert_eq!(split_passages(&text), [a.as_str(), b.as_str()]);
    }

    #[test]
    fn long_paragraphs_split_at_sentences_with_the_last_one_repeated() {
        let sentence = |k: usize| format!("Sentence number {k} says something about streams.");
        let paragraph: Vec<String> = (0..60).map(sentence).collect();
        let text = paragraph.join(" ");
        let passages = split_passages(&text);
        assert!(passages.len() > 1);
        for pair in passages.windows(2) {
            assert!(chars(pair[0]) <= MAX_PASSAGE_CHARS);
            // The next passage starts with the sentence that ended the previous.
            let first_of_next = &pair[1][..pair[1].find('.').unwrap_or(0) + 1];
            assert!(pair[0].ends_with(first_of_next), "{first_of_next:?}");
        }
        // Every sentence is somewhere.
        for k in 0..60 {
            assert!(passages.iter().any(|p| p.contains(&sentence(k))), "{k}");
        }
    }

    #[test]
    fn chinese_sentences_split_without_spaces() {
        let text = "第一句话。第二句话！第三句话？“引用。”最后";
        let parts: Vec<&str> = sentences(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(
            parts,
            ["第一句话。", "第二句话！", "第三句话？", "“引用。”", "最后"]
        );
    }

    #[test]
    fn decimals_and_lines_are_handled() {
        let text = "Version 0.14 is out. Next\n- item one\n- item two";
        let parts: Vec<&str> = sentences(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(
            parts,
            ["Version 0.14 is out.", "Next", "- item one", "- item two"]
        );
    }

    #[test]
    fn an_endless_sentence_is_cut_into_overlapping_windows() {
        let text = "字".repeat(2500);
        let passages = split_passages(&text);
        assert_eq!(passages.len(), 3);
        assert!(passages.iter().all(|p| chars(p) <= MAX_PASSAGE_CHARS));
        assert_eq!(chars(passages[0]), MAX_PASSAGE_CHARS);
        // Windows overlap, and together cover the text.
        let covered: usize = passages.iter().map(|p| chars(p)).sum();
        assert_eq!(covered, 2500 + 2 * OVERLAP_CHARS);
    }

    #[test]
    fn windows_prefer_to_cut_at_spaces() {
        let text = "word ".repeat(500);
        for p in split_passages(&text) {
            assert!(p.starts_with("word") && p.ends_with("word"), "{p:?}");
        }
    }
}
