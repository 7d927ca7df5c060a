//! What the answer says: composed from the passages for the built-in models,
//! or a prompt with numbered sources for a real model.
//!
//! The built-in models cannot read, so their answer is *extractive*: it
//! quotes the units of the retrieved passages that best answer the question,
//! best first, each followed by the marker of its passage (`[1]` is the
//! first passage retrieved). A unit is what a reader would quote: a sentence
//! of a paragraph or quote, a list item, a table row written as
//! `column: value; …`, and a sentence ending in a colon together with the
//! short code block, command or list that it introduces.
//!
//! Units are scored by the question's terms they hold, each weighted by its
//! rarity in the index ([`Question`]'s IDF weights), so the rare words of the
//! question count most. The words around a unit count too, at a lower
//! weight: its section's headings and the sentence before it, so the
//! sentences *after* "What if the tests must run one at a time?" (the one
//! with the flag, or the one after that) can win. What a unit adds beyond
//! the question's own words counts: a unit that only restates the question
//! (a question itself, or little but the question's words) is discounted,
//! and a passage ranked lower counts a little less. The answer is the best
//! unit and at most two more that score at least half as well, in at most
//! [`MAX_ANSWER_CHARS`] characters. It is deterministic: ties go to the
//! better passage, then to reading order.
//!
//! When the question's distinctive terms are not in the passages at all,
//! the answer says that the documents do not cover it, naming those terms,
//! in the question's language ([`Question::uncovered`]).

use std::collections::HashSet;

use super::{
    index::RetrievedPassage,
    markdown::{self, Block},
    passages::sentences,
    question::{Question, not_covered_answer},
    tokenizer,
};
use crate::llm::ChatMessage;

/// Most units quoted in an extractive answer.
pub(crate) const MAX_ANSWER_UNITS: usize = 3;
/// Most characters of quoted text in an extractive answer (the best unit is
/// always quoted, so it alone may exceed it).
pub(crate) const MAX_ANSWER_CHARS: usize = 700;
/// Weight of a question term found only in a unit's headings.
const HEADING_CONTEXT: f32 = 0.3;
/// Weight of a question term found only in the unit before.
const PREVIOUS_CONTEXT: f32 = 0.5;
/// How many units after a question may answer it.
const QUESTION_REACH: usize = 3;
/// How much less a question counts for each unit further from it.
const QUESTION_DECAY: f32 = 0.8;
/// Factor of a unit that restates the question instead of answering it.
const RESTATES: f32 = 0.4;
/// How much each lower passage rank discounts its units.
const RANK_DISCOUNT: f32 = 0.15;
/// Units scoring less than this share of the best are left out.
const KEEP_SHARE: f32 = 0.5;
/// Longest code block or list that a sentence ending in a colon takes along.
const MAX_ATTACHED_CHARS: usize = 400;
/// Most lines of a code block that a sentence takes along.
const MAX_ATTACHED_LINES: usize = 12;
/// A list item longer than this is read as sentences.
const MAX_ITEM_CHARS: usize = 250;

/// The answer when no passage covers the question.
#[cfg(test)]
pub(crate) fn not_covered(question: &str) -> String {
    not_covered_answer(&Question::new(question), &[])
}

/// One quotable piece of a passage.
#[derive(Debug, Clone)]
struct Unit {
    /// Index of the passage, 0-based.
    passage: usize,
    /// Position in the passage.
    position: usize,
    /// The text quoted.
    text: String,
    /// Its terms.
    terms: HashSet<String>,
    /// Terms of the headings above it.
    headings: HashSet<String>,
    /// Terms of the unit before it, and of a question shortly before it.
    previous: HashSet<String>,
    /// Whether it is itself a question.
    asks: bool,
    /// How much a question term found only in `previous` counts.
    previous_weight: f32,
    /// Whether a question comes shortly before it (which it may answer).
    after_question: bool,
}

/// A unit with its score.
#[derive(Debug)]
struct Scored<'a> {
    unit: &'a Unit,
    score: f32,
}

/// The extractive answer to `question` (weighted by nothing: every term
/// counts the same).
#[cfg(test)]
pub(crate) fn extractive_answer(question: &str, passages: &[RetrievedPassage]) -> String {
    compose(&Question::new(question), passages)
}

/// The extractive answer to `question` from `passages`.
pub(crate) fn compose(question: &Question, passages: &[RetrievedPassage]) -> String {
    let retrieved: HashSet<String> = passages
        .iter()
        .flat_map(|p| {
            tokenizer::terms(&p.title)
                .into_iter()
                .chain(tokenizer::terms(&p.text))
        })
        .collect();
    if let Some(missing) = question.uncovered(&retrieved) {
        return not_covered_answer(question, &missing);
    }
    let units: Vec<Unit> = passages
        .iter()
        .enumerate()
        .flat_map(|(i, p)| units(i, &p.text))
        .collect();
    let mut scored: Vec<Scored<'_>> = units
        .iter()
        .map(|unit| Scored {
            unit,
            score: score(question, unit),
        })
        .filter(|s| s.score > 0.0)
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.unit.passage.cmp(&b.unit.passage))
            .then(a.unit.position.cmp(&b.unit.position))
    });
    let Some(best) = scored.first().map(|s| s.score) else {
        return not_covered_answer(question, &[]);
    };
    let mut chosen: Vec<&Unit> = Vec::new();
    let mut chars = 0;
    for candidate in &scored {
        if chosen.len() == MAX_ANSWER_UNITS || candidate.score < best * KEEP_SHARE {
            break;
        }
        let text = &candidate.unit.text;
        let len = text.chars().count();
        if !chosen.is_empty() && chars + len > MAX_ANSWER_CHARS {
            continue;
        }
        // Overlapping passages repeat text: quote it once.
        if chosen
            .iter()
            .any(|c| c.text.contains(text.as_str()) || text.contains(c.text.as_str()))
        {
            continue;
        }
        chars += len;
        chosen.push(candidate.unit);
    }
    let separator = if chosen.iter().any(|u| u.text.contains('\n')) {
        "\n\n"
    } else {
        " "
    };
    chosen
        .iter()
        .map(|u| format!("{} [{}]", u.text, u.passage + 1))
        .collect::<Vec<_>>()
        .join(separator)
}

/// How well `unit` answers `question`.
fn score(question: &Question, unit: &Unit) -> f32 {
    let mut own = 0.0;
    let mut context = 0.0;
    for term in &question.terms {
        let t = &term.word.term;
        if unit.terms.contains(t) {
            own += term.weight;
        } else if unit.previous.contains(t) {
            context += unit.previous_weight * term.weight;
        } else if unit.headings.contains(t) {
            context += HEADING_CONTEXT * term.weight;
        }
    }
    if own <= 0.0 && !(unit.after_question && context > 0.0) {
        return 0.0;
    }
    let mut score = own + context;
    let asked: HashSet<&str> = question
        .terms
        .iter()
        .map(|t| t.word.term.as_str())
        .collect();
    let novel = tokenizer::question_terms(&unit.text)
        .iter()
        .filter(|t| !asked.contains(t.as_str()))
        .count();
    // What a unit adds beyond the question's own words is what answers it.
    score *= (novel as f32 / (novel as f32 + 1.0)).max(RESTATES);
    if unit.asks {
        score *= RESTATES;
    }
    score / (1.0 + RANK_DISCOUNT * unit.passage as f32)
}

/// The quotable units of one passage, in reading order.
fn units(passage: usize, text: &str) -> Vec<Unit> {
    let blocks = markdown::blocks(text);
    let mut out: Vec<Unit> = Vec::new();
    let mut trail: Vec<(u8, HashSet<String>)> = Vec::new();
    let mut attached_until = 0;
    // The last question met, and how many units ago.
    let mut asked: Option<(HashSet<String>, usize)> = None;
    for (i, block) in blocks.iter().enumerate() {
        if i < attached_until {
            continue;
        }
        let texts: Vec<String> = match block {
            Block::Heading { level, text } => {
                trail.retain(|(l, _)| l < level);
                trail.push((*level, tokenizer::terms(text).into_iter().collect()));
                asked = None;
                continue;
            }
            Block::Paragraph(text) | Block::Quote(text) => sentence_texts(text),
            Block::Item { text, .. } if text.chars().count() > MAX_ITEM_CHARS => {
                sentence_texts(text)
            }
            Block::Item { text, .. } => vec![text.clone()],
            Block::Table { header, rows } => {
                rows.iter().map(|row| table_row(header, row)).collect()
            }
            // A short code block right under a heading is what the heading
            // introduces, as if the heading ended in a colon.
            Block::Code { language, code } => match (
                i.checked_sub(1).map(|k| &blocks[k]),
                code_text(language, code),
            ) {
                (Some(Block::Heading { text, .. }), Some(code)) => vec![format!("{text}:{code}")],
                _ => continue,
            },
        };
        let headings: HashSet<String> = trail.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
        let count = texts.len();
        for (k, mut text) in texts.into_iter().enumerate() {
            if k + 1 == count && block.is_prose() && ends_with_colon(&text) {
                let (attached, next) = attachment(&blocks, i + 1);
                if !attached.is_empty() {
                    text.push_str(&attached);
                    attached_until = next;
                }
            }
            let mut previous: HashSet<String> = out
                .last()
                .map(|u: &Unit| u.terms.clone())
                .unwrap_or_default();
            let mut previous_weight = PREVIOUS_CONTEXT;
            let mut after_question = false;
            if let Some((terms, distance)) = &mut asked {
                *distance += 1;
                if *distance <= QUESTION_REACH {
                    previous.extend(terms.iter().cloned());
                    previous_weight *= QUESTION_DECAY.powi(*distance as i32 - 1);
                    after_question = true;
                }
            }
            let terms: HashSet<String> = tokenizer::terms(&text).into_iter().collect();
            let asks = text.trim_end().ends_with(['?', '？']);
            if asks {
                asked = Some((terms.clone(), 0));
            }
            out.push(Unit {
                passage,
                position: out.len(),
                terms,
                asks,
                text,
                headings: headings.clone(),
                previous,
                previous_weight,
                after_question,
            });
        }
    }
    out
}

fn sentence_texts(text: &str) -> Vec<String> {
    sentences(text)
        .into_iter()
        .map(|r| text[r].to_owned())
        .collect()
}

fn ends_with_colon(text: &str) -> bool {
    text.trim_end().ends_with([':', '：'])
}

/// What a sentence ending in a colon introduces, starting at block
/// `start`: a short code block, a short command paragraph or a short list;
/// with the index of the first block after it.
fn attachment(blocks: &[Block], start: usize) -> (String, usize) {
    match blocks.get(start) {
        Some(Block::Code { language, code }) => match code_text(language, code) {
            Some(text) => (text, start + 1),
            None => (String::new(), start),
        },
        Some(Block::Paragraph(command))
            if command.starts_with('`') && command.chars().count() <= MAX_ATTACHED_CHARS =>
        {
            (format!(" {command}"), start + 1)
        }
        Some(Block::Item { .. }) => {
            let mut end = start;
            let mut items = Vec::new();
            while let Some(Block::Item { text, .. }) = blocks.get(end) {
                items.push(text.as_str());
                end += 1;
            }
            let joined = items.join("; ");
            if joined.chars().count() <= MAX_ATTACHED_CHARS {
                (format!(" {joined}"), end)
            } else {
                (String::new(), start)
            }
        }
        _ => (String::new(), start),
    }
}

/// A short code block as quoted after a colon: inline when it is one
/// line, fenced otherwise; `None` when it is too long to quote.
fn code_text(language: &str, code: &str) -> Option<String> {
    if code.chars().count() > MAX_ATTACHED_CHARS || code.lines().count() > MAX_ATTACHED_LINES {
        return None;
    }
    Some(match code.trim().lines().count() {
        1 => format!(" `{}`", code.trim()),
        _ => format!("\n\n```{language}\n{code}```\n"),
    })
}

/// A table row as text: `column: value; column: value`.
fn table_row(header: &[String], row: &[String]) -> String {
    row.iter()
        .enumerate()
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(i, cell)| match header.get(i).filter(|h| !h.is_empty()) {
            Some(column) => format!("{column}: {cell}"),
            None => cell.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The instruction given to a real model.
const INSTRUCTION: &str = "Answer the question using only the numbered sources below. Cite \
    the source of every statement with its number in square brackets, like [1] or [2]. If the \
    sources do not contain the answer, say plainly that the documents do not cover the \
    question. Answer in the language of the question.";

/// The conversation that asks a model to answer from `passages`: a system
/// message with the instruction and the numbered sources, then the question.
pub(crate) fn prompt(question: &str, passages: &[RetrievedPassage]) -> Vec<ChatMessage> {
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
    use crate::rag::question::TermStatistics;

    fn passage(text: &str) -> RetrievedPassage {
        RetrievedPassage {
            document_id: "d".into(),
            title: "T".into(),
            text: text.into(),
            score: 1.0,
            source: "s.md".into(),
        }
    }

    /// A question weighted as if every term occurred in `df` of 100
    /// passages, except those listed.
    fn question(text: &str, rare: &[(&str, u64)]) -> Question {
        Question::weighted(text, |term| TermStatistics {
            document_frequency: rare
                .iter()
                .find(|(t, _)| *t == term)
                .map_or(10, |(_, df)| *df),
            passages: 100,
            has_variant: false,
        })
    }

    #[test]
    fn the_best_unit_comes_first_with_its_marker() {
        let passages = [
            passage("Cats sleep a lot. The index uses BM25 scoring."),
            passage("# Storage\nThe index lives in the data directory. Dogs bark."),
        ];
        let answer = compose(&question("Where does the index live?", &[]), &passages);
        assert!(
            answer.starts_with("The index lives in the data directory. [2]"),
            "{answer}"
        );
        assert!(
            !answer.contains("Cats") && !answer.contains("Dogs"),
            "{answer}"
        );
    }

    #[test]
    fn rare_terms_win_over_common_ones() {
        let passages = [passage(
            "The server starts quickly and the server is small. A rebase rewrites the commit hashes.",
        )];
        let q = question(
            "What does a rebase do to the server?",
            &[("rebas", 1), ("server", 60)],
        );
        assert!(compose(&q, &passages).starts_with("A rebase rewrites the commit hashes. [1]"));
    }

    #[test]
    fn the_sentence_after_a_rhetorical_question_answers_it() {
        let passages = [passage(
            "What if you want to run the tests one at a time? Set the number of threads to 1 \
             with the `--test-threads` flag. Tests otherwise run in parallel.",
        )];
        let answer = compose(
            &question("How do I run the tests one at a time?", &[]),
            &passages,
        );
        assert!(answer.starts_with("Set the number of threads"), "{answer}");
    }

    #[test]
    fn a_colon_takes_its_command_along() {
        let text = "## Branches\n\nTo create a branch and switch to it, run:\n\n```sh\ngit switch -c topic\n```\n\nBranches are cheap.";
        let answer = compose(
            &question("How do I create a branch?", &[]),
            &[passage(text)],
        );
        assert!(
            answer
                .starts_with("To create a branch and switch to it, run: `git switch -c topic` [1]"),
            "{answer}"
        );
    }

    #[test]
    fn the_answer_may_come_two_sentences_after_the_question() {
        let text = "## Is my dough ready?\n\nHow can you tell that bulk fermentation is finished? \
            Time alone is a poor guide. Look for a dough that has grown by about half.\n\n\
            ## Shaping\n\nShape it gently.";
        let answer = compose(
            &question("How do I know that bulk fermentation is finished?", &[]),
            &[passage(text)],
        );
        assert!(answer.contains("grown by about half"), "{answer}");
        assert!(!answer.contains("Shape it"), "{answer}");
    }

    #[test]
    fn a_code_block_under_a_heading_is_what_the_heading_introduces() {
        let text = "### Ollama\n\n```sh\nollama pull llama3\nagentstream serve --upstream url=http://localhost:11434/v1\n```\n\nIt needs no key.";
        let answer = compose(&question("How do I use Ollama?", &[]), &[passage(text)]);
        assert!(
            answer.starts_with("Ollama:\n\n```sh\nollama pull"),
            "{answer}"
        );
    }

    #[test]
    fn table_rows_are_answers_with_their_columns() {
        let text = "| upstream | gRPC status |\n|---|---|\n| HTTP 429 | RESOURCE_EXHAUSTED |\n| HTTP 404 | FAILED_PRECONDITION |\n\nCancellation stops the upstream.";
        let answer = compose(
            &question(
                "Which gRPC status does an upstream HTTP 429 become?",
                &[("429", 1)],
            ),
            &[passage(text)],
        );
        assert!(
            answer.starts_with("upstream: HTTP 429; gRPC status: RESOURCE_EXHAUSTED [1]"),
            "{answer}"
        );
    }

    #[test]
    fn code_is_never_read_as_prose() {
        let text = "```rust\n// shutdown the server now. shutdown!\nfn shutdown() {}\n```\n\nOn shutdown the server drains streams.";
        let answer = compose(
            &question("What happens on shutdown?", &[]),
            &[passage(text)],
        );
        assert_eq!(answer, "On shutdown the server drains streams. [1]");
    }

    #[test]
    fn says_so_when_nothing_matches() {
        let passages = [passage("Cats sleep a lot.")];
        assert_eq!(
            compose(&question("How do rockets fly?", &[]), &passages),
            "The indexed documents do not cover this question: they say nothing about \u{201c}rockets\u{201d} or \u{201c}fly\u{201d}."
        );
        assert_eq!(
            not_covered("火箭怎么飞？"),
            "已索引的文档中没有关于这个问题的内容。"
        );
        assert_eq!(
            extractive_answer("火箭怎么飞？", &[]),
            "已索引的文档中没有关于这个问题的内容。"
        );
    }

    #[test]
    fn chinese_units_are_quoted() {
        let passages = [passage("索引保存在数据目录中。重启服务器后文档仍然存在。")];
        let answer = compose(&question("重启以后文档还在吗？", &[]), &passages);
        assert!(
            answer.starts_with("重启服务器后文档仍然存在。 [1]"),
            "{answer}"
        );
    }

    #[test]
    fn repeated_units_are_quoted_once() {
        let passages = [
            passage("Tokens stream fast."),
            passage("Tokens stream fast."),
        ];
        assert_eq!(
            compose(&question("Do tokens stream?", &[]), &passages),
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
