//! Searching: how rare the question's terms are, and the passages that best
//! answer it.
//!
//! 1. Each meaningful term of the question is weighted by its IDF over the
//!    indexed passages, and marked unknown when the index holds neither it
//!    nor another form of it ([`Question`]); the answerer uses both.
//! 2. tantivy finds the candidates: passages holding any term, by BM25 over
//!    the text plus title matches at [`TITLE_BOOST`].
//! 3. The best [`RESCORED_CANDIDATES`] are scored again with BM25 whose term
//!    frequency saturates sooner ([`K1`] below tantivy's 1.2): long chapters
//!    that repeat the question's words passage after passage should not win
//!    on repetition over the passage that holds *more* of the question's
//!    terms.
//! 4. A passage in another script than the question (an English passage for
//!    a Chinese question, or the reverse; they meet through code
//!    identifiers) counts [`OTHER_SCRIPT`] of its score, which only changes
//!    the order when scores are close.
//! 5. At most [`MAX_PASSAGES_PER_DOCUMENT`] passages of one document are
//!    taken, so one long document does not crowd out the rest, unless a
//!    further passage of it scores [`FAR_ABOVE`] times the best passage
//!    left from any other document: the cap must not hide a better passage.

use std::collections::{BTreeMap, HashMap};

use tantivy::{
    DocAddress, DocId, DocSet, Searcher, TantivyDocument, Term,
    collector::TopDocs,
    postings::Postings,
    query::{
        Bm25StatisticsProvider, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery,
    },
    schema::{Field, IndexRecordOption},
};

use super::{
    DocumentIndex, Inner, RetrievedPassage, blocking, internal,
    schema::{Fields, KIND_PASSAGE},
};
use crate::{
    error::Result,
    rag::{
        markdown::is_cjk,
        question::{Question, TermStatistics},
        tokenizer,
    },
};

/// Most passages of one document among the results of one search, unless a
/// further one scores far above the rest.
pub(crate) const MAX_PASSAGES_PER_DOCUMENT: usize = 2;
/// A passage beyond the per-document cap is taken when it scores this many
/// times the best passage left from other documents.
pub(super) const FAR_ABOVE: f32 = 1.5;
/// Weight of a title match relative to a match in the passage text.
const TITLE_BOOST: f32 = 0.5;
/// Candidates scored again with the tuned BM25.
const RESCORED_CANDIDATES: usize = 200;
/// Candidates loaded from the store per passage asked for (to fill
/// `top_k` under the per-document cap and after the script adjustment).
const LOADED_PER_PASSAGE: usize = 8;
/// Fewest candidates loaded.
const MIN_LOADED: usize = 32;
/// BM25 term-frequency saturation: lower saturates sooner.
const K1: f32 = 0.9;
/// BM25 length normalisation.
const B: f32 = 0.75;
/// Share of its score that a passage in another script keeps.
const OTHER_SCRIPT: f32 = 0.8;
/// Letters a word and another form of it share at their start.
const VARIANT_PREFIX_CHARS: usize = 5;

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    /// The question, its terms weighted by the index.
    pub question: Question,
    /// The passages, best first.
    pub passages: Vec<RetrievedPassage>,
}

impl DocumentIndex {
    /// The best passages for `question`, at most `top_k`, best first, and
    /// the question's terms weighted by the index. No passage when none
    /// shares a meaningful term with the question.
    pub async fn search(&self, question: &str, top_k: usize) -> Result<Retrieval> {
        let inner = self.inner.clone();
        let question = question.to_owned();
        blocking(move || search_blocking(&inner, &question, top_k)).await?
    }
}

fn search_blocking(inner: &Inner, text: &str, top_k: usize) -> Result<Retrieval> {
    let searcher = inner.reader.searcher();
    let fields = inner.fields;
    let passages = searcher
        .doc_freq(&Term::from_field_text(fields.kind, KIND_PASSAGE))
        .map_err(internal)?;
    let question = Question::weighted(text, |term| statistics(&searcher, &fields, term, passages));
    if question.terms.is_empty() || top_k == 0 || passages == 0 {
        return Ok(Retrieval {
            question,
            passages: Vec::new(),
        });
    }
    let hits = searcher
        .search(
            &candidate_query(&fields, &question),
            &TopDocs::with_limit(RESCORED_CANDIDATES).order_by_score(),
        )
        .map_err(internal)?;
    let scored = rescore(&searcher, &fields, &question, passages, &hits)?;
    let ranked = load(
        &searcher,
        &fields,
        &scored,
        top_k.saturating_mul(LOADED_PER_PASSAGE).max(MIN_LOADED),
        question.is_cjk(),
    )?;
    Ok(Retrieval {
        question,
        passages: pick(ranked, top_k),
    })
}

/// How many passages hold `term`, and whether another form of it is indexed.
fn statistics(searcher: &Searcher, fields: &Fields, term: &str, passages: u64) -> TermStatistics {
    let document_frequency = searcher
        .doc_freq(&Term::from_field_text(fields.text, term))
        .unwrap_or(0);
    TermStatistics {
        document_frequency,
        passages,
        has_variant: document_frequency == 0 && has_variant(searcher, fields.text, term),
    }
}

/// Whether the index holds a word that starts like `term` (`sequenti` and
/// `sequenc`): another form of an English word the stemmer did not unite.
fn has_variant(searcher: &Searcher, field: Field, term: &str) -> bool {
    if tokenizer::has_cjk(term) || term.chars().count() < VARIANT_PREFIX_CHARS {
        return false;
    }
    let prefix: String = term.chars().take(VARIANT_PREFIX_CHARS).collect();
    searcher.segment_readers().iter().any(|segment| {
        let Ok(inverted) = segment.inverted_index(field) else {
            return false;
        };
        let Ok(mut stream) = inverted.terms().range().ge(prefix.as_bytes()).into_stream() else {
            return false;
        };
        stream.advance() && stream.key().starts_with(prefix.as_bytes())
    })
}

/// Passages holding any term of the question, in the text or the title.
fn candidate_query(fields: &Fields, question: &Question) -> BooleanQuery {
    let mut any_term: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(question.terms.len() * 2);
    for term in &question.terms {
        let term = &term.word.term;
        let in_text = TermQuery::new(
            Term::from_field_text(fields.text, term),
            IndexRecordOption::WithFreqs,
        );
        let in_title = TermQuery::new(
            Term::from_field_text(fields.title, term),
            IndexRecordOption::WithFreqs,
        );
        any_term.push((Occur::Should, Box::new(in_text)));
        any_term.push((
            Occur::Should,
            Box::new(BoostQuery::new(Box::new(in_title), TITLE_BOOST)),
        ));
    }
    let passages_only = ConstScoreQuery::new(Box::new(fields.kind_query(KIND_PASSAGE)), 0.0);
    BooleanQuery::new(vec![
        (Occur::Must, Box::new(passages_only)),
        (Occur::Must, Box::new(BooleanQuery::new(any_term))),
    ])
}

/// The candidates scored with the tuned BM25 (term frequencies read from
/// the postings, lengths from the field norms), best first.
fn rescore(
    searcher: &Searcher,
    fields: &Fields,
    question: &Question,
    passages: u64,
    hits: &[(f32, DocAddress)],
) -> Result<Vec<(f32, DocAddress)>> {
    let mut by_segment: BTreeMap<u32, Vec<DocId>> = BTreeMap::new();
    for (_, address) in hits {
        by_segment
            .entry(address.segment_ord)
            .or_default()
            .push(address.doc_id);
    }
    let mut scores: HashMap<DocAddress, f32> = HashMap::new();
    for (field, boost) in [(fields.text, 1.0), (fields.title, TITLE_BOOST)] {
        let tokens = searcher.total_num_tokens(field).map_err(internal)?;
        let average = (tokens as f32 / passages.max(1) as f32).max(1.0);
        for (&segment_ord, docs) in &mut by_segment {
            docs.sort_unstable();
            let segment = searcher.segment_reader(segment_ord);
            let norms = segment.get_fieldnorms_reader(field).map_err(internal)?;
            let inverted = segment.inverted_index(field).map_err(internal)?;
            for term in &question.terms {
                let key = Term::from_field_text(field, &term.word.term);
                let Some(mut postings) = inverted
                    .read_postings(&key, IndexRecordOption::WithFreqs)
                    .map_err(internal)?
                else {
                    continue;
                };
                for &doc in docs.iter() {
                    if postings.doc() > doc || postings.seek(doc) != doc {
                        continue;
                    }
                    let tf = postings.term_freq() as f32;
                    let length = norms.fieldnorm(doc) as f32;
                    let saturated = tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / average));
                    *scores.entry(DocAddress::new(segment_ord, doc)).or_default() +=
                        boost * term.weight * saturated;
                }
            }
        }
    }
    let mut scored: Vec<(f32, DocAddress)> = hits
        .iter()
        .map(|(_, address)| (scores.get(address).copied().unwrap_or(0.0), *address))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(scored)
}

/// The stored passages of the best `count` of `scored`, each with its
/// score adjusted for script, best first.
fn load(
    searcher: &Searcher,
    fields: &Fields,
    scored: &[(f32, DocAddress)],
    count: usize,
    cjk: bool,
) -> Result<Vec<RetrievedPassage>> {
    let mut out = Vec::with_capacity(count.min(scored.len()));
    for &(score, address) in scored.iter().take(count) {
        let doc: TantivyDocument = searcher.doc(address).map_err(internal)?;
        let mut passage = fields.passage(&doc, score);
        if is_cjk_text(&passage.text) != cjk {
            passage.score *= OTHER_SCRIPT;
        }
        out.push(passage);
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// Whether most letters of `text` are Chinese, Japanese or Korean.
fn is_cjk_text(text: &str) -> bool {
    let (mut cjk, mut latin) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else if c.is_ascii_alphabetic() {
            latin += 1;
        }
    }
    // A Chinese character holds about as much as a short English word.
    cjk * 3 > latin
}

/// The best `top_k` of `ranked` (best first) under the per-document cap.
fn pick(ranked: Vec<RetrievedPassage>, top_k: usize) -> Vec<RetrievedPassage> {
    let mut per_document: HashMap<&str, usize> = HashMap::new();
    let mut picked: Vec<usize> = Vec::with_capacity(top_k);
    for (i, passage) in ranked.iter().enumerate() {
        if picked.len() == top_k {
            break;
        }
        let count = per_document
            .get(passage.document_id.as_str())
            .copied()
            .unwrap_or(0);
        if count >= MAX_PASSAGES_PER_DOCUMENT {
            // The best passage still to come from a document under its cap.
            let rival = ranked[i + 1..].iter().find(|p| {
                per_document
                    .get(p.document_id.as_str())
                    .is_none_or(|&n| n < MAX_PASSAGES_PER_DOCUMENT)
            });
            if rival.is_some_and(|r| passage.score < FAR_ABOVE * r.score) {
                continue;
            }
        }
        *per_document
            .entry(passage.document_id.as_str())
            .or_default() += 1;
        picked.push(i);
    }
    let keep: std::collections::HashSet<usize> = picked.into_iter().collect();
    ranked
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, p)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::{NewDocument, index::Unwatched};

    fn passage(document: &str, score: f32) -> RetrievedPassage {
        RetrievedPassage {
            document_id: document.into(),
            title: String::new(),
            text: String::new(),
            score,
            source: String::new(),
        }
    }

    fn ids(passages: &[RetrievedPassage]) -> Vec<(&str, f32)> {
        passages
            .iter()
            .map(|p| (p.document_id.as_str(), p.score))
            .collect()
    }

    #[test]
    fn the_cap_keeps_one_document_from_crowding_out_the_rest() {
        let ranked = vec![
            passage("a", 9.0),
            passage("a", 8.0),
            passage("a", 7.0),
            passage("b", 6.0),
            passage("c", 5.0),
        ];
        assert_eq!(
            ids(&pick(ranked, 4)),
            [("a", 9.0), ("a", 8.0), ("b", 6.0), ("c", 5.0)]
        );
    }

    #[test]
    fn the_cap_does_not_hide_a_passage_far_above_the_rest() {
        let ranked = vec![
            passage("a", 9.0),
            passage("a", 8.0),
            passage("a", 7.5),
            passage("b", 3.0),
            passage("c", 2.0),
        ];
        assert_eq!(
            ids(&pick(ranked, 4)),
            [("a", 9.0), ("a", 8.0), ("a", 7.5), ("b", 3.0)]
        );
        // With nothing else to show, the document fills the answer.
        let ranked = vec![passage("a", 3.0), passage("a", 2.0), passage("a", 1.0)];
        assert_eq!(pick(ranked, 4).len(), 3);
    }

    #[test]
    fn script_is_told_by_the_letters() {
        assert!(is_cjk_text("索引保存在数据目录中 `index`"));
        assert!(!is_cjk_text("The index lives in the data directory. 中"));
    }

    fn doc(id: &str, title: &str, text: &str) -> NewDocument {
        NewDocument {
            id: id.into(),
            title: title.into(),
            text: text.into(),
            ..NewDocument::default()
        }
    }

    async fn index_of(documents: Vec<NewDocument>) -> (tempfile::TempDir, DocumentIndex) {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = DocumentIndex::open(dir.path()).await.expect("open");
        index.ingest(documents, &Unwatched).await.expect("ingest");
        (dir, index)
    }

    #[tokio::test]
    async fn terms_are_weighted_by_rarity_and_unknown_names_are_marked() {
        let (_dir, index) = index_of(vec![
            doc(
                "1",
                "A",
                "The server streams tokens. Rebase rewrites history.",
            ),
            doc("2", "B", "The server drains streams on shutdown."),
            doc("3", "C", "The server is small."),
        ])
        .await;
        let found = index
            .search("Does the server rebase on Kubernetes?", 4)
            .await
            .expect("search");
        let q = &found.question;
        assert!(q.weight("rebas") > q.weight("server"));
        let kubernetes = q
            .terms
            .iter()
            .find(|t| t.word.term == "kubernet")
            .expect("term");
        assert!(!kubernetes.known);
        assert_eq!(found.passages[0].document_id, "1");
    }

    #[tokio::test]
    async fn repetition_does_not_beat_coverage() {
        let repeat = "Ownership ownership ownership matters. ".repeat(6);
        let (_dir, index) = index_of(vec![
            doc("long", "Chapter", &repeat),
            doc(
                "exact",
                "Rules",
                "Ownership rules: each value has one owner, and borrowing lends it.",
            ),
        ])
        .await;
        let found = index
            .search("ownership and borrowing rules", 2)
            .await
            .expect("search");
        assert_eq!(found.passages[0].document_id, "exact");
    }

    #[tokio::test]
    async fn a_question_prefers_passages_in_its_own_script() {
        let (_dir, index) = index_of(vec![
            doc("en", "Vec", "Use `Vec::new()` to make a vector."),
            doc("zh", "Vec", "使用 `Vec::new()` 创建一个向量。"),
        ])
        .await;
        let zh = index
            .search("怎么用 Vec::new() 创建？", 2)
            .await
            .expect("search");
        assert_eq!(zh.passages[0].document_id, "zh");
        let en = index
            .search("How do I use Vec::new()?", 2)
            .await
            .expect("search");
        assert_eq!(en.passages[0].document_id, "en");
    }
}
