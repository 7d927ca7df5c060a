//! What a question asks for: its meaningful terms, how rare each is in the
//! index, and whether the retrieved passages cover them.
//!
//! A term's weight is its inverse document frequency over the indexed
//! passages (BM25's IDF): a word that occurs in few passages says much more
//! about what the reader wants than one that occurs everywhere. The answerer
//! scores candidate sentences by these weights, and the same weights decide
//! when to say that the documents do not cover a question:
//! - a *specific* word that the index has never seen, nor another form of
//!   it, is *unknown*: usually the very subject the question is about. A
//!   word is specific when it is a name (see [`is_name`]: `Kubernetes`,
//!   `SAML`, `serde_json`, a Latin word in a Chinese question) or a rare
//!   English word (`rye`, `logrotate`: not one of the tokenizer's common
//!   words, see [`Tokenizer::is_common_word`]). When unknown terms carry a
//!   quarter of the question's weight, the documents do not cover it;
//! - when most of the question's words occur nowhere in the documents, in
//!   no form (a compound and the words inside it count once: 咖啡因 and
//!   咖啡), the question is not about them, whatever those words are;
//! - otherwise, when the retrieved passages lack terms that carry 60% of the
//!   question's weight, they are only loosely related, and the answer says
//!   so rather than quoting them.
//!
//! A common word the index does not hold (`possible`, `website`, 到底) is
//! known, and weighs what the question's other terms weigh on average: it
//! is the reader's paraphrase, and counts neither for nor against (one or two
//! of them, that is: see the rule above). Chinese words are always taken as
//! common: no word-frequency table ships for them (jieba's dictionary counts
//! do not tell 咖啡因 from 仓库, a paraphrase of 版本库).
//!
//! A Chinese compound the index lacks (执行命令) whose parts it has counts
//! as covered by its parts when they are covered; jieba's search mode gives
//! the parts as terms of their own.

use std::collections::{HashMap, HashSet};

use super::tokenizer::{self, QuestionWord};
use crate::tokenizer::Tokenizer;

/// Share of the question's weight that unknown terms must carry to make the
/// documents not cover it.
const UNKNOWN_SHARE: f32 = 0.25;
/// Share of the question's weight that the retrieved passages must lack to
/// make them not cover it.
const MISSING_SHARE: f32 = 0.6;

/// One meaningful term of a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The term as indexed, and the word as the reader wrote it.
    pub word: QuestionWord,
    /// Inverse document frequency over the indexed passages; 1 when the
    /// index was not asked.
    pub weight: f32,
    /// Whether the index knows the term or another form of it, or it is a
    /// common word (not specific) that the documents do not use.
    pub known: bool,
    /// Whether the index holds the term itself.
    pub indexed: bool,
    /// Whether the index holds the term or another form of it.
    pub in_documents: bool,
}

/// A question and its terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question as asked.
    pub text: String,
    /// Its distinct meaningful terms, in order, with their weights.
    pub terms: Vec<Term>,
}

/// How many passages contain a term, out of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermStatistics {
    /// Passages containing the term.
    pub document_frequency: u64,
    /// Passages indexed.
    pub passages: u64,
    /// Whether the index holds another form of the term (same first
    /// letters), when it does not hold the term itself.
    pub has_variant: bool,
}

impl Question {
    /// The question with every term weighted 1 and known.
    pub fn new(text: &str) -> Self {
        let terms = tokenizer::question_words(text)
            .into_iter()
            .map(|word| Term {
                word,
                weight: 1.0,
                known: true,
                indexed: true,
                in_documents: true,
            })
            .collect();
        Self {
            text: text.to_owned(),
            terms,
        }
    }

    /// The question with each term weighted by `statistics` of it.
    pub fn weighted(text: &str, mut statistics: impl FnMut(&str) -> TermStatistics) -> Self {
        let mut question = Self::new(text);
        let mut in_index = HashSet::new();
        for term in &mut question.terms {
            let stats = statistics(&term.word.term);
            term.weight = idf(stats.document_frequency, stats.passages);
            term.known = stats.document_frequency > 0
                || stats.has_variant
                || !is_specific(&term.word.surface, text);
            term.indexed = stats.document_frequency > 0;
            term.in_documents = term.indexed || stats.has_variant;
            if term.indexed {
                in_index.insert(term.word.term.clone());
            }
        }
        let statistics_seen = |t: &Term| in_index.contains(&t.word.term);
        // A paraphrase weighs what the other terms weigh on average.
        let seen: Vec<f32> = question
            .terms
            .iter()
            .filter(|t| statistics_seen(t))
            .map(|t| t.weight)
            .collect();
        if !seen.is_empty() {
            let mean = seen.iter().sum::<f32>() / seen.len() as f32;
            for term in &mut question.terms {
                if term.known && !statistics_seen(term) {
                    term.weight = mean;
                }
            }
        }
        // A compound is known when all of its parts are.
        let known: Vec<String> = question
            .terms
            .iter()
            .filter(|t| t.known)
            .map(|t| t.word.term.clone())
            .collect();
        for term in &mut question.terms {
            if !term.known && compound_of(&term.word.term, &known) {
                term.known = true;
            }
        }
        question
    }

    /// Whether the question is written in Chinese (or another CJK script).
    pub fn is_cjk(&self) -> bool {
        tokenizer::has_cjk(&self.text)
    }

    /// The weight of `term`, 0 when it is not a term of the question.
    pub fn weight(&self, term: &str) -> f32 {
        self.terms
            .iter()
            .find(|t| t.word.term == term)
            .map_or(0.0, |t| t.weight)
    }

    /// The terms that count for coverage: paraphrases (known words the
    /// index does not hold) count neither for nor against.
    fn telling(&self) -> impl Iterator<Item = &Term> {
        self.terms.iter().filter(|t| t.indexed || !t.known)
    }

    /// The terms that make the documents not cover the question, heaviest
    /// first, given the terms of the retrieved passages; `None` when they
    /// cover it. An empty list: nothing was retrieved at all.
    pub fn uncovered(&self, retrieved: &HashSet<String>) -> Option<Vec<&Term>> {
        if self.terms.is_empty() {
            return None;
        }
        if retrieved.is_empty() {
            return Some(Vec::new());
        }
        let total: f32 = self.telling().map(|t| t.weight).sum();
        let present: Vec<String> = self
            .terms
            .iter()
            .filter(|t| retrieved.contains(&t.word.term))
            .map(|t| t.word.term.clone())
            .collect();
        let missing: Vec<&Term> = self
            .telling()
            .filter(|t| !retrieved.contains(&t.word.term) && !compound_of(&t.word.term, &present))
            .collect();
        let share = |terms: &[&Term]| terms.iter().map(|t| t.weight).sum::<f32>() / total;
        let unknown: Vec<&Term> = missing.iter().copied().filter(|t| !t.known).collect();
        let named = if !unknown.is_empty() && share(&unknown) >= UNKNOWN_SHARE {
            unknown
        } else if let Some(foreign) = self.mostly_foreign() {
            foreign
        } else if total > 0.0 && share(&missing) >= MISSING_SHARE {
            missing
        } else {
            return None;
        };
        Some(longest_first(named))
    }

    /// The question's words that occur nowhere in the documents, when they
    /// are most of its words; a compound and the words inside it (咖啡因,
    /// 咖啡) count once, as occurring when any of them does.
    fn mostly_foreign(&self) -> Option<Vec<&Term>> {
        let groups = word_groups(&self.terms);
        let foreign: Vec<&Vec<usize>> = groups
            .iter()
            .filter(|group| group.iter().all(|&i| !self.terms[i].in_documents))
            .collect();
        (foreign.len() * 2 > groups.len()).then(|| {
            foreign
                .iter()
                .flat_map(|g| g.iter().map(|&i| &self.terms[i]))
                .collect()
        })
    }
}

/// `terms` heaviest first, without the words that a longer one of them
/// contains (a word and the compounds made of it name the same thing).
fn longest_first(mut terms: Vec<&Term>) -> Vec<&Term> {
    terms.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let names: Vec<String> = terms.iter().map(|t| t.word.term.clone()).collect();
    terms.retain(|t| {
        !names
            .iter()
            .any(|n| n != &t.word.term && n.contains(t.word.term.as_str()))
    });
    terms
}

/// The indices of `terms` grouped into words: a CJK term joins every other
/// CJK term that contains it or that it contains (jieba's search mode gives
/// 买回来 and also 买回 and 回来); any other term is a group of its own.
fn word_groups(terms: &[Term]) -> Vec<Vec<usize>> {
    // Union-find with path halving: linear in the pairs that join, so a
    // long question of overlapping words costs no more than comparing them.
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..terms.len()).collect();
    for i in 0..terms.len() {
        for j in 0..i {
            let (a, b) = (&terms[i].word.term, &terms[j].word.term);
            if tokenizer::has_cjk(a)
                && tokenizer::has_cjk(b)
                && (a.contains(b.as_str()) || b.contains(a.as_str()))
            {
                let (ra, rb) = (root(&mut parent, i), root(&mut parent, j));
                parent[ra] = rb;
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for i in 0..terms.len() {
        let r = root(&mut parent, i);
        let k = *group_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[k].push(i);
    }
    groups
}

/// Whether `word`, as written in `question`, names a subject of its own
/// rather than being an everyday word: a name, or an English word that is
/// not common. Only specific words can be unknown: a reader's everyday word
/// that the documents happen not to use is a paraphrase.
fn is_specific(word: &str, question: &str) -> bool {
    is_name(word, question)
        || (!tokenizer::has_cjk(word) && !Tokenizer::cl100k().is_common_word(word))
}

/// Whether `word`, as written in `question`, looks like a name (of a
/// product, a library, a tool) rather than an everyday word: a Latin-script
/// word in a Chinese question, a capitalised word that does not start the
/// question, an all-capitals word, or an identifier (digits, `_`, `.`, `-`,
/// `::`).
fn is_name(word: &str, question: &str) -> bool {
    if tokenizer::has_cjk(word) {
        return false;
    }
    if tokenizer::has_cjk(question) {
        return true;
    }
    let identifier = word
        .chars()
        .any(|c| c.is_ascii_digit() || "_.-:".contains(c));
    let capitalised =
        word.chars().any(char::is_uppercase) && !question.trim_start().starts_with(word);
    identifier || capitalised
}

/// BM25's inverse document frequency.
pub(crate) fn idf(document_frequency: u64, passages: u64) -> f32 {
    let n = passages as f32;
    let df = (document_frequency.min(passages)) as f32;
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// Whether `term` is a CJK compound of two or more of `parts`, which cover
/// all of its characters.
fn compound_of(term: &str, parts: &[String]) -> bool {
    if !tokenizer::has_cjk(term) {
        return false;
    }
    let chars: Vec<char> = term.chars().collect();
    let mut covered = vec![false; chars.len()];
    let mut used = 0;
    for part in parts {
        if part == term || part.is_empty() {
            continue;
        }
        let part: Vec<char> = part.chars().collect();
        if part.len() >= chars.len() {
            continue;
        }
        for start in 0..=chars.len() - part.len() {
            if chars[start..start + part.len()] == part[..] {
                covered[start..start + part.len()]
                    .iter_mut()
                    .for_each(|c| *c = true);
                used += 1;
            }
        }
    }
    used >= 2 && covered.iter().all(|&c| c)
}

/// The sentence saying that the documents do not cover `question`, naming
/// the `missing` words, in the question's language.
pub(crate) fn not_covered_answer(question: &Question, missing: &[&Term]) -> String {
    let names: Vec<&str> = missing
        .iter()
        .take(3)
        .map(|t| t.word.surface.as_str())
        .collect();
    match (question.is_cjk(), names.is_empty()) {
        (true, true) => "已索引的文档中没有关于这个问题的内容。".to_owned(),
        (true, false) => format!(
            "已索引的文档中没有关于{}的内容，所以无法回答这个问题。",
            names
                .iter()
                .map(|n| format!("“{n}”"))
                .collect::<Vec<_>>()
                .join("、")
        ),
        (false, true) => "The indexed documents do not cover this question.".to_owned(),
        (false, false) => format!(
            "The indexed documents do not cover this question: they say nothing about {}.",
            english_list(&names)
        ),
    }
}

fn english_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\u{201c}{n}\u{201d}"))
        .collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics of a small index: `known` terms occur in `df` passages
    /// each, out of 100.
    fn index(known: &'static [(&'static str, u64)]) -> impl FnMut(&str) -> TermStatistics {
        move |term| {
            let df = known
                .iter()
                .find(|(k, _)| *k == term)
                .map_or(0, |(_, df)| *df);
            TermStatistics {
                document_frequency: df,
                passages: 100,
                has_variant: false,
            }
        }
    }

    fn terms(words: &[&str]) -> HashSet<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn rare_terms_weigh_more() {
        let q = Question::weighted(
            "How do I merge a branch?",
            index(&[("merg", 3), ("branch", 40)]),
        );
        assert!(q.weight("merg") > q.weight("branch"));
        assert!(q.weight("branch") > 0.0);
        assert_eq!(q.weight("absent"), 0.0);
    }

    #[test]
    fn an_unknown_name_is_not_covered_and_named() {
        let q = Question::weighted(
            "How do I deploy the server on Kubernetes?",
            index(&[("deploy", 5), ("server", 30)]),
        );
        let retrieved = terms(&["deploy", "server", "other"]);
        let missing = q.uncovered(&retrieved).expect("not covered");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].word.surface, "Kubernetes");
        assert_eq!(
            not_covered_answer(&q, &missing),
            "The indexed documents do not cover this question: they say nothing about \u{201c}Kubernetes\u{201d}."
        );
    }

    #[test]
    fn compounds_and_the_words_inside_them_are_one_group() {
        let q = Question::new("咖啡因 乌龙 绿茶 咖啡 乌龙茶 tea");
        let words: Vec<&str> = q.terms.iter().map(|t| t.word.term.as_str()).collect();
        let mut groups: Vec<Vec<&str>> = word_groups(&q.terms)
            .into_iter()
            .map(|g| {
                let mut g: Vec<&str> = g.into_iter().map(|i| words[i]).collect();
                g.sort();
                g
            })
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [
                vec!["tea"],
                vec!["乌龙", "乌龙茶"],
                vec!["咖啡", "咖啡因"],
                vec!["绿茶"]
            ]
        );
    }

    #[test]
    fn a_rare_word_the_index_lacks_is_an_unknown_subject() {
        let q = Question::weighted(
            "How much rye flour should I add to my sourdough?",
            index(&[("much", 30), ("flour", 6), ("add", 20), ("sourdough", 4)]),
        );
        let retrieved = terms(&["much", "flour", "add", "sourdough"]);
        let missing = q.uncovered(&retrieved).expect("not covered");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].word.surface, "rye");
        // The same question with a common word in its place is covered.
        let q = Question::weighted(
            "How much extra flour should I add to my sourdough?",
            index(&[("much", 30), ("flour", 6), ("add", 20), ("sourdough", 4)]),
        );
        assert!(q.uncovered(&retrieved).is_none(), "{:?}", q.terms);
    }

    #[test]
    fn another_form_of_a_known_word_is_not_unknown() {
        let stats = |term: &str| TermStatistics {
            document_frequency: u64::from(term != "sequenti") * 10,
            passages: 100,
            has_variant: term == "sequenti",
        };
        let q = Question::weighted("How do tests run sequentially?", stats);
        assert!(q.uncovered(&terms(&["test", "run"])).is_none());
    }

    #[test]
    fn covered_when_the_passages_hold_the_heavy_terms() {
        let q = Question::weighted(
            "Why is my bread dense?",
            index(&[("bread", 4), ("dens", 2), ("my", 90)]),
        );
        assert!(q.uncovered(&terms(&["bread", "dens"])).is_none());
        // Passages that hold only the light terms do not cover it.
        let q = Question::weighted(
            "Which flag rebases the branch?",
            index(&[("flag", 10), ("rebas", 1), ("branch", 60)]),
        );
        let missing = q
            .uncovered(&terms(&["branch", "flag"]))
            .expect("not covered");
        assert_eq!(missing[0].word.term, "rebas");
    }

    #[test]
    fn nothing_retrieved_is_not_covered() {
        let q = Question::new("anything at all?");
        assert_eq!(q.uncovered(&HashSet::new()).map(|m| m.len()), Some(0));
        assert_eq!(
            not_covered_answer(&q, &[]),
            "The indexed documents do not cover this question."
        );
    }

    #[test]
    fn chinese_compounds_are_covered_by_their_parts() {
        let q = Question::weighted(
            "顺序执行测试",
            index(&[("顺序", 5), ("执行", 8), ("测试", 9)]),
        );
        assert!(q.terms.iter().all(|t| t.known), "{:?}", q.terms);
        assert!(q.uncovered(&terms(&["顺序", "执行", "测试"])).is_none());
    }

    #[test]
    fn chinese_questions_get_a_chinese_answer_naming_the_missing_words() {
        let q = Question::weighted(
            "怎么用 Redis 实现分布式锁？",
            index(&[("实现", 8), ("分布式", 3), ("锁", 2)]),
        );
        let retrieved = terms(&["实现", "分布式", "锁"]);
        let missing = q.uncovered(&retrieved).expect("not covered");
        assert_eq!(
            not_covered_answer(&q, &missing),
            "已索引的文档中没有关于“Redis”的内容，所以无法回答这个问题。"
        );
    }

    #[test]
    fn a_question_mostly_in_words_the_documents_never_use_is_not_covered() {
        // 乌龙茶 (and 乌龙 inside it) is indexed; 咖啡 (inside 咖啡因),
        // 相比, 含量 and 更高 are not: four words of five are foreign.
        let q = Question::weighted(
            "乌龙茶和咖啡相比，哪个咖啡因含量更高？",
            index(&[("乌龙", 3), ("乌龙茶", 2)]),
        );
        let missing = q
            .uncovered(&terms(&["乌龙", "乌龙茶"]))
            .expect("not covered");
        let named: Vec<&str> = missing.iter().map(|t| t.word.term.as_str()).collect();
        assert!(named.contains(&"咖啡因"), "{named:?}");
        assert!(!named.contains(&"咖啡"), "{named:?}");
    }

    #[test]
    fn everyday_words_the_documents_do_not_use_are_paraphrases() {
        let q = Question::weighted(
            "How do I make a quantifier match as little as possible?",
            index(&[("make", 20), ("quantifi", 2), ("match", 10)]),
        );
        assert!(q.terms.iter().all(|t| t.known), "{:?}", q.terms);
        assert!(
            q.uncovered(&terms(&["make", "quantifi", "match"]))
                .is_none()
        );
        // Chinese words are never taken for names, and a compound counts
        // once: 买回来 (with 买回 and 回来) is one foreign word of three.
        let q = Question::weighted("绿茶买回来怎么保存？", index(&[("绿茶", 2), ("保存", 3)]));
        assert!(q.uncovered(&terms(&["绿茶", "保存"])).is_none());
    }
}
