//! What the answer says: composed from the passages for the built-in models,
//! or a prompt with numbered sources for a real model.
//!
//! The built-in models cannot read, so their answer is *extractive*: the
//! sentences of the retrieved passages that share the most meaningful terms
//! with the question, each followed by the marker of its passage (`[1]` is
//! the first passage retrieved). It is honest about its limits: when no
//! sentence shares a term with the question it says that the documents do
//! not cover it (in Chinese when the question is in Chinese) rather than
//! quote something unrelated.

use std::collections::HashSet;

use super::{index::RetrievedPassage, passages::sentences, tokenizer};
use crate::llm::ChatMessage;

/// Most sentences quoted in an extractive answer.
pub const MAX_ANSWER_SENTENCES: usize = 3;
/// Most characters of quoted text in an extractive answer (a whole sentence
/// is always quoted, so the first one may exceed it).
const MAX_ANSWER_CHARS: usize = 700;

/// The answer when no passage covers the question.
pub fn not_covered(question: &str) -> &'static str {
    if tokenizer::has_cjk(question) {
        "已索引的文档中没有关于这个问题的内容。"
    } else {
        "The indexed documents do not cover this question."
    }
}

/// One sentence of a passage that matches the question.
#[derive(Debug)]
struct Candidate<'a> {
    /// Index of the passage, 0-based.
    passage: usize,
    /// Position of the sentence in the passage.
    position: usize,
    /// Distinct question terms in the sentence.
    matched: usize,
    text: &'a str,
}

/// The extractive answer to `question` from `passages`.
pub fn extractive_answer(question: &str, passages: &[RetrievedPassage]) -> String {
    let wanted: HashSet<String> = tokenizer::question_terms(question).into_iter().collect();
    let texts: Vec<String> = passages.iter().map(|p| prose(&p.text)).collect();
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for (passage, text) in texts.iter().enumerate() {
        for (position, range) in sentences(text).into_iter().enumerate() {
            let text = strip_markup(&text[range]);
            let terms: HashSet<String> = tokenizer::terms(text).into_iter().collect();
            let matched = terms.intersection(&wanted).count();
            if matched > 0 {
                candidates.push(Candidate {
                    passage,
                    position,
                    matched,
                    text,
                });
            }
        }
    }
    // Best match first; among equals, the better passage, then reading order.
    candidates.sort_by(|a, b| {
        (b.matched, a.passage, a.position).cmp(&(a.matched, b.passage, b.position))
    });
    // Sentences matching less than half as well as the best one are noise.
    let best = candidates.first().map_or(0, |c| c.matched);
    let mut chosen: Vec<&Candidate<'_>> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut chars = 0;
    for candidate in &candidates {
        if chosen.len() == MAX_ANSWER_SENTENCES {
            break;
        }
        if candidate.matched * 2 < best {
            break;
        }
        let len = candidate.text.chars().count();
        if !chosen.is_empty() && chars + len > MAX_ANSWER_CHARS {
            continue;
        }
        // Overlapping passages repeat sentences: quote each once.
        if seen.insert(candidate.text) {
            chars += len;
            chosen.push(candidate);
        }
    }
    if chosen.is_empty() {
        return not_covered(question).to_owned();
    }
    chosen.sort_by_key(|c| (c.passage, c.position));
    chosen
        .iter()
        .map(|c| format!("{} [{}]", c.text, c.passage + 1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A passage as prose, so that sentences are found as a reader sees them:
/// the wrapped lines of a Markdown paragraph are joined, and code blocks,
/// tables and headings (which are not sentences and read badly inside an
/// answer) are left out. List items and quotes start new lines.
fn prose(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            out.push('\n');
            continue;
        }
        let not_prose = in_code
            || trimmed.is_empty()
            || trimmed.starts_with(['|', '#'])
            || line.starts_with("    ")
            || line.starts_with('\t');
        if not_prose {
            out.push('\n');
            continue;
        }
        let starts_item = trimmed.starts_with(['-', '*', '+', '>'])
            || trimmed
                .split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        if starts_item {
            out.push('\n');
        } else if !out.is_empty() && !out.ends_with('\n') {
            out.push(' ');
        }
        out.push_str(trimmed);
    }
    out.replace("**", "")
}

/// A sentence without its leading Markdown markers (headings, bullets,
/// quotes), which read badly in the middle of an answer.
fn strip_markup(sentence: &str) -> &str {
    sentence
        .trim_start_matches(|c: char| matches!(c, '#' | '-' | '*' | '>' | '+') || c.is_whitespace())
        .trim()
}

/// The instruction given to a real model.
const INSTRUCTION: &str = "Answer the question using only the numbered sources below. Cite \
    the source of every statement with its number in square brackets, like [1] or [2]. If the \
    sources do not contain the answer, say plainly that the documents do not cover the \
    question. Answer in the language of the question.";

/// The conversation that asks a model to answer from `passages`: a system
/// message with the instruction and the numbered sources, then the question.
pub fn prompt(question: &str, passages: &[RetrievedPassage]) -> Vec<ChatMessage> {
    let mut system = String::from(INSTRUCTION);
    system.push_str("\n\nSources:");
    if passages.is_empty() {
        system.push_str("\n(none: no indexed passage matches the question)");
    }
    for (i, p) in passages.iter().enumerate() {
        system.push_str(&format!("\n\n[{}] {}", i + 1, p.title));
        if !p.source.is_empty() {
            system.push_str(&format!(" ({})", p.source));
        }
        system.push('\n');
        system.push_str(&p.text);
    }
    vec![ChatMessage::system(system), ChatMessage::user(question)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> RetrievedPassage {
        RetrievedPassage {
            document_id: "d".into(),
            title: "T".into(),
            text: text.into(),
            score: 1.0,
            source: "s.md".into(),
        }
    }

    #[test]
    fn quotes_the_best_matching_sentences_with_their_markers() {
        let passages = [
            passage("Cats sleep a lot. The index uses BM25 scoring."),
            passage("# Storage\nThe index lives in the data directory. Dogs bark."),
        ];
        let answer = extractive_answer("Where does the index live?", &passages);
        assert_eq!(
            answer,
            "The index uses BM25 scoring. [1] The index lives in the data directory. [2]"
        );
    }

    #[test]
    fn markdown_is_read_as_prose() {
        let markdown = "## Shutdown\n\nOn shutdown the server **drains** in-flight\nstreams for a grace period.\n\n\
            | flag | default |\n|---|---|\n| `--shutdown-grace` | `10s` |\n\n\
            ```sh\ncargo run -- shutdown now\n```\n\n- A list item about shutdown.\n";
        let answer = extractive_answer("What happens on shutdown?", &[passage(markdown)]);
        assert_eq!(
            answer,
            "On shutdown the server drains in-flight streams for a grace period. [1] \
             A list item about shutdown. [1]"
        );
    }

    #[test]
    fn says_so_when_nothing_matches() {
        let passages = [passage("Cats sleep a lot.")];
        assert_eq!(
            extractive_answer("How do rockets fly?", &passages),
            "The indexed documents do not cover this question."
        );
        assert_eq!(
            extractive_answer("火箭怎么飞？", &[]),
            "已索引的文档中没有关于这个问题的内容。"
        );
    }

    #[test]
    fn chinese_sentences_are_quoted() {
        let passages = [passage("索引保存在数据目录中。重启服务器后文档仍然存在。")];
        let answer = extractive_answer("重启以后文档还在吗？", &passages);
        assert_eq!(answer, "重启服务器后文档仍然存在。 [1]");
    }

    #[test]
    fn repeated_sentences_are_quoted_once() {
        let passages = [
            passage("Tokens stream fast."),
            passage("Tokens stream fast."),
        ];
        assert_eq!(
            extractive_answer("tokens", &passages),
            "Tokens stream fast. [1]"
        );
    }

    #[test]
    fn the_prompt_numbers_its_sources() {
        let messages = prompt("q?", &[passage("alpha"), passage("beta")]);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.contains("[1] T (s.md)\nalpha"));
        assert!(messages[0].content.contains("[2] T (s.md)\nbeta"));
        assert_eq!(messages[1].content, "q?");
    }
}
