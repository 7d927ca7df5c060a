//! Splitting documents into the passages that are indexed and retrieved.
//!
//! Retrieval ranks passages, not documents: a question is answered by a few
//! sentences, and a whole document would drown them (and blow any model's
//! context). Passages follow the document's Markdown structure, read by
//! [`markdown`](super::markdown) (so HTML leftovers are gone and wrapped
//! lines joined):
//! - a heading starts a new passage once the current one holds at least
//!   [`MIN_PASSAGE_CHARS`] (smaller sections share one passage), and every
//!   passage begins with the headings it sits under (its *context*: `# Book`,
//!   `## Chapter`), so a passage cut from the middle of a section still says
//!   what it is about;
//! - blocks (paragraphs, quotes, list items, code blocks, tables) are packed
//!   whole while the passage stays within [`MAX_PASSAGE_CHARS`];
//! - a block too long for a passage is cut where its own structure allows:
//!   prose at sentence ends (a sentence longer than that into windows that
//!   overlap by [`OVERLAP_CHARS`]), code between lines with each piece
//!   fenced again (never mid-fence), tables between rows with the header
//!   repeated;
//! - when a section goes on into the next passage, that passage repeats the
//!   last block of the previous one if it is prose of at most
//!   [`OVERLAP_CHARS`] (often the sentence that introduces a code block).
//!
//! Sentences end at `.`, `!`, `?` followed by a space, at the Chinese full
//! stops `。！？；` (which need no space), and at line ends. Sizes are in
//! characters, not bytes, so Chinese and English passages hold a comparable
//! amount of text.

use std::ops::Range;

use super::markdown::{self, Block};

/// Longest passage, in characters (its heading context may add a little).
pub(crate) const MAX_PASSAGE_CHARS: usize = 1000;
/// How much consecutive passages share where a passage must be cut.
pub(crate) const OVERLAP_CHARS: usize = 150;
/// A passage this long ends at the next heading; a shorter one takes the
/// next section in as well.
pub(crate) const MIN_PASSAGE_CHARS: usize = 400;
/// Longest piece of one block, leaving room for the heading context.
const MAX_PIECE_CHARS: usize = MAX_PASSAGE_CHARS * 4 / 5;
/// Most headings repeated as a passage's context (the innermost ones).
const MAX_CONTEXT_HEADINGS: usize = 3;

/// The passages of `text` as Markdown, in order; none for a blank text.
pub(crate) fn split_passages(text: &str) -> Vec<String> {
    let mut packer = Packer::default();
    for block in markdown::blocks(text) {
        match block {
            Block::Heading { level, text } => packer.heading(level, text),
            block => {
                for piece in pieces(block) {
                    packer.push(piece);
                }
            }
        }
    }
    packer.finish()
}

/// Packs blocks into passages.
#[derive(Debug, Default)]
struct Packer {
    done: Vec<String>,
    /// The headings above the current position: (level, text).
    trail: Vec<(u8, String)>,
    /// The current passage: its context headings, then its blocks.
    current: Vec<Block>,
    chars: usize,
    /// Whether `current` holds more than headings.
    has_content: bool,
}

impl Packer {
    fn heading(&mut self, level: u8, text: String) {
        self.trail.retain(|(l, _)| *l < level);
        self.trail.push((level, text.clone()));
        if !self.has_content {
            self.restart(None);
        } else if self.chars >= MIN_PASSAGE_CHARS {
            self.flush();
            self.restart(None);
        } else {
            self.add(Block::Heading { level, text });
        }
    }

    fn push(&mut self, block: Block) {
        let len = block_chars(&block);
        if self.has_content && self.chars + len > MAX_PASSAGE_CHARS {
            let carried = match self.current.last() {
                Some(last) if last.is_prose() && block_chars(last) <= OVERLAP_CHARS => {
                    Some(last.clone())
                }
                _ => None,
            };
            self.flush();
            self.restart(carried);
        }
        self.add(block);
        self.has_content = true;
    }

    fn add(&mut self, block: Block) {
        self.chars += block_chars(&block) + 2;
        self.current.push(block);
    }

    /// Starts the next passage with the heading context (and `carried`).
    fn restart(&mut self, carried: Option<Block>) {
        self.current.clear();
        self.chars = 0;
        self.has_content = false;
        let skip = self.trail.len().saturating_sub(MAX_CONTEXT_HEADINGS);
        let context: Vec<Block> = self.trail[skip..]
            .iter()
            .map(|(level, text)| Block::Heading {
                level: *level,
                text: text.clone(),
            })
            .collect();
        for heading in context {
            self.add(heading);
        }
        if let Some(block) = carried {
            self.add(block);
            self.has_content = true;
        }
    }

    fn flush(&mut self) {
        if self.has_content {
            self.done.push(markdown::render_all(&self.current));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.flush();
        self.done
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

fn block_chars(block: &Block) -> usize {
    chars(&markdown::render(block))
}

/// `block` cut into pieces of at most [`MAX_PIECE_CHARS`] along its own
/// structure (one piece when it fits).
fn pieces(block: Block) -> Vec<Block> {
    if block_chars(&block) <= MAX_PIECE_CHARS {
        return vec![block];
    }
    match block {
        Block::Paragraph(text) => prose_pieces(&text)
            .into_iter()
            .map(Block::Paragraph)
            .collect(),
        Block::Quote(text) => prose_pieces(&text).into_iter().map(Block::Quote).collect(),
        Block::Item {
            depth,
            number,
            text,
        } => prose_pieces(&text)
            .into_iter()
            .map(|text| Block::Item {
                depth,
                number,
                text,
            })
            .collect(),
        Block::Code { language, code } => code_pieces(&code)
            .into_iter()
            .map(|code| Block::Code {
                language: language.clone(),
                code,
            })
            .collect(),
        Block::Table { header, rows } => table_pieces(header, rows),
        heading @ Block::Heading { .. } => vec![heading],
    }
}

fn prose_pieces(text: &str) -> Vec<String> {
    split_long_paragraph(text, MAX_PIECE_CHARS)
        .into_iter()
        .map(|r| text[r].to_owned())
        .collect()
}

/// Code cut between lines (a line longer than a piece is cut into windows).
fn code_pieces(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut used = 0;
    for line in code.lines() {
        let len = chars(line) + 1;
        if used > 0 && used + len > MAX_PIECE_CHARS {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        if len > MAX_PIECE_CHARS {
            for window in windows(line, MAX_PIECE_CHARS) {
                out.push(format!("{}\n", &line[window]));
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
        used += len;
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// A table cut between rows, each piece with the header.
fn table_pieces(header: Vec<String>, rows: Vec<Vec<String>>) -> Vec<Block> {
    let header_chars = block_chars(&Block::Table {
        header: header.clone(),
        rows: Vec::new(),
    });
    let mut out = Vec::new();
    let mut current: Vec<Vec<String>> = Vec::new();
    let mut used = header_chars;
    for row in rows {
        let len = row.iter().map(|c| chars(c) + 3).sum::<usize>() + 2;
        if !current.is_empty() && used + len > MAX_PIECE_CHARS {
            out.push(Block::Table {
                header: header.clone(),
                rows: std::mem::take(&mut current),
            });
            used = header_chars;
        }
        used += len;
        current.push(row);
    }
    if !current.is_empty() {
        out.push(Block::Table {
            header,
            rows: current,
        });
    }
    out
}

/// Byte ranges of the sentences of `text`, trimmed, in order.
pub(crate) fn sentences(text: &str) -> Vec<Range<usize>> {
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

/// Packs the sentences of a paragraph into pieces of at most `limit` characters.
fn split_long_paragraph(paragraph: &str, limit: usize) -> Vec<Range<usize>> {
    let units: Vec<(Range<usize>, usize)> = sentences(paragraph)
        .into_iter()
        .flat_map(|s| {
            let chars = paragraph[s.clone()].chars().count();
            if chars <= limit {
                vec![(s, chars)]
            } else {
                windows(&paragraph[s.clone()], limit)
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
            if *used + 1 + chars <= limit {
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
                        && prev_chars + 1 + chars <= limit
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

/// Cuts an over-long sentence into windows of at most `limit`
/// characters that overlap by [`OVERLAP_CHARS`], preferring to cut at a space.
fn windows(sentence: &str, limit: usize) -> Vec<Range<usize>> {
    let bounds: Vec<usize> = sentence
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(sentence.len()))
        .collect();
    let total = bounds.len() - 1;
    let mut out = Vec::new();
    let mut first = 0;
    loop {
        let mut last = (first + limit).min(total);
        if last < total {
            // Back off to a space in the window's last fifth, if there is one.
            let floor = last - limit / 5;
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

    #[test]
    fn a_short_document_is_one_passage() {
        let text = "# Title\n\nFirst paragraph. It has two sentences.\n\n\n  Second one.  \n";
        assert_eq!(
            split_passages(text),
            ["# Title\n\nFirst paragraph. It has two sentences.\n\nSecond one."]
        );
    }

    #[test]
    fn blank_text_has_no_passage() {
        assert!(split_passages(" \n\n\t\n").is_empty());
        assert!(split_passages("# Only a heading\n<!-- and a comment -->").is_empty());
    }

    #[test]
    fn sections_start_passages_that_carry_their_headings() {
        let long = "Words about installing. ".repeat(20);
        let text =
            format!("# Guide\n\n## Install\n\n{long}\n\n## Use\n\nRun it.\n\n### Flags\n\nUse -v.");
        let passages = split_passages(&text);
        assert_eq!(passages.len(), 2, "{passages:?}");
        assert!(passages[0].starts_with("# Guide\n\n## Install\n\nWords"));
        // The small sections after it share a passage, under their headings.
        assert_eq!(
            passages[1],
            "# Guide\n\n## Use\n\nRun it.\n\n### Flags\n\nUse -v."
        );
    }

    #[test]
    fn a_long_section_repeats_its_headings_and_a_short_last_block() {
        let paragraph =
            |k: usize| format!("Paragraph {k} says something about streams. ").repeat(4);
        let mut text = String::from("# Streams\n\n");
        for k in 0..8 {
            text.push_str(&paragraph(k));
            text.push_str("\n\n");
        }
        text.push_str("Run this:\n\n```sh\ncargo run\n```\n");
        let passages = split_passages(&text);
        assert!(passages.len() > 1);
        for p in &passages {
            assert!(p.starts_with("# Streams\n\n"), "{p:?}");
            assert!(chars(p) <= MAX_PASSAGE_CHARS, "{p:?}");
        }
        for k in 0..8 {
            assert!(
                passages
                    .iter()
                    .any(|p| p.contains(&paragraph(k).trim_end().to_owned())),
                "{k}"
            );
        }
        // The sentence that introduces the code stays with it.
        assert!(
            passages
                .iter()
                .any(|p| p.contains("Run this:\n\n```sh\ncargo run\n```"))
        );
    }

    #[test]
    fn long_code_is_cut_between_lines_and_every_piece_is_fenced() {
        let code: String = (0..200).map(|k| format!("let x{k} = {k};\n")).collect();
        let text = format!("Intro.\n\n```rust\n{code}```\n\nAfter.");
        let passages = split_passages(&text);
        assert!(passages.len() > 2);
        for p in &passages {
            assert_eq!(p.matches("```").count() % 2, 0, "{p:?}");
            assert!(chars(p) <= MAX_PASSAGE_CHARS);
        }
        for k in 0..200 {
            let line = format!("let x{k} = {k};\n");
            assert!(passages.iter().any(|p| p.contains(&line)), "{k}");
        }
    }

    #[test]
    fn long_tables_are_cut_between_rows_with_the_header_repeated() {
        let mut text = String::from("| key | value |\n|---|---|\n");
        for k in 0..100 {
            text.push_str(&format!("| key{k} | value number {k} |\n"));
        }
        let passages = split_passages(&text);
        assert!(passages.len() > 1);
        for p in &passages {
            assert!(p.starts_with("| key | value |\n|---|---|\n"), "{p:?}");
        }
        assert!(
            passages
                .iter()
                .any(|p| p.contains("| key99 | value number 99 |"))
        );
    }

    #[test]
    fn long_paragraphs_split_at_sentences() {
        let sentence = |k: usize| format!("Sentence number {k} says something about streams.");
        let paragraph: Vec<String> = (0..60).map(sentence).collect();
        let text = paragraph.join(" ");
        let passages = split_passages(&text);
        assert!(passages.len() > 1);
        for p in &passages {
            assert!(chars(p) <= MAX_PASSAGE_CHARS);
        }
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
        assert!(passages.len() >= 3);
        assert!(passages.iter().all(|p| chars(p) <= MAX_PASSAGE_CHARS));
        let covered: usize = passages.iter().map(|p| chars(p)).sum();
        assert!(covered >= 2500);
    }

    #[test]
    fn windows_prefer_to_cut_at_spaces() {
        let text = "word ".repeat(500);
        for p in split_passages(&text) {
            assert!(p.starts_with("word") && p.ends_with("word"), "{p:?}");
        }
    }
}
