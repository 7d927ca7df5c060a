//! The analyzer every indexed and searched text goes through.
//!
//! tantivy's default tokenizer splits on whitespace and punctuation, which
//! leaves a Chinese sentence (no spaces between words) as one huge token that
//! no question ever matches. Here every text is segmented by jieba in search
//! mode: Chinese is cut into dictionary words *and* the shorter words inside
//! long ones (中华人民共和国 also yields 中华, 人民, 共和国), so a question
//! matches a document however either was phrased; Latin-script runs and
//! numbers come out as words, so English and mixed text work unchanged.
//! Tokens without a letter or digit (spaces, punctuation) are dropped, the
//! rest lower-cased and stemmed with tantivy's English (Snowball) stemmer,
//! so `cancel`, `cancels` and `cancelled` are one term; Chinese words pass
//! the stemmer unchanged.

use std::sync::OnceLock;

use jieba_rs::Jieba;
use tantivy::tokenizer::{
    Language, Stemmer, StopWordFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Name under which the analyzer is registered in the index.
pub(crate) const ANALYZER: &str = "agentstream_mixed";

/// Longest token kept, in bytes; longer ones are noise (base64, hashes).
const MAX_TOKEN_BYTES: usize = 64;

/// Words that carry no meaning on their own: dropped from questions (not
/// from documents) so that "what is the ..." does not match every passage.
const STOPWORDS: &[&str] = &[
    // English
    "a",
    "about",
    "all",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "for",
    "from",
    "has",
    "have",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "me",
    "my",
    "of",
    "on",
    "or",
    "our",
    "should",
    "so",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "this",
    "to",
    "us",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    // Chinese
    "的",
    "了",
    "是",
    "在",
    "和",
    "与",
    "及",
    "或",
    "吗",
    "呢",
    "吧",
    "啊",
    "么",
    "什么",
    "怎么",
    "怎样",
    "如何",
    "为什么",
    "哪些",
    "哪个",
    "哪里",
    "我",
    "你",
    "他",
    "她",
    "它",
    "我们",
    "你们",
    "他们",
    "这",
    "那",
    "这个",
    "那个",
    "有",
    "也",
    "就",
    "都",
    "把",
    "被",
    "对",
    "为",
    "请",
    "一个",
    "可以",
    "能",
    "会",
    "要",
];

/// The shared jieba instance: loading its dictionary takes a moment and
/// tens of megabytes, so it is done once per process.
fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Segments mixed Chinese/English text into lower-cased search terms.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MixedTextTokenizer;

/// The tokens of one text, produced eagerly by jieba.
pub(crate) struct MixedTokenStream {
    tokens: std::vec::IntoIter<Token>,
    current: Token,
}

impl Tokenizer for MixedTextTokenizer {
    type TokenStream<'a> = MixedTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedTokenStream {
        let tokens: Vec<Token> = jieba()
            .cut_for_search(text, true)
            .into_iter()
            .filter(|t| {
                t.word.len() <= MAX_TOKEN_BYTES && t.word.chars().any(char::is_alphanumeric)
            })
            .enumerate()
            .map(|(position, t)| Token {
                offset_from: t.byte_start,
                offset_to: t.byte_end,
                position,
                text: t.word.to_lowercase(),
                position_length: 1,
            })
            .collect();
        MixedTokenStream {
            tokens: tokens.into_iter(),
            current: Token::default(),
        }
    }
}

impl TokenStream for MixedTokenStream {
    fn advance(&mut self) -> bool {
        match self.tokens.next() {
            Some(token) => {
                self.current = token;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.current
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.current
    }
}

/// The analyzer to register under [`ANALYZER`].
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTextTokenizer)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzer of questions: stopwords go before stemming, which would
/// otherwise change them (`does` becomes `doe`).
fn question_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTextTokenizer)
        .filter(StopWordFilter::remove(
            STOPWORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Every term of `text`, in order, duplicates included.
pub(crate) fn terms(text: &str) -> Vec<String> {
    terms_of(&mut analyzer(), text)
}

/// The distinct meaningful terms of a question, in order of appearance.
pub(crate) fn question_terms(question: &str) -> Vec<String> {
    question_words(question)
        .into_iter()
        .map(|w| w.term)
        .collect()
}

/// A meaningful word of a question: its term, as the index knows it, and
/// the word as the question wrote it (to name it back to the reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionWord {
    /// The analyzed term (lower-cased, stemmed).
    pub term: String,
    /// The word as written in the question.
    pub surface: String,
}

/// The distinct meaningful words of a question, in order of appearance.
pub(crate) fn question_words(question: &str) -> Vec<QuestionWord> {
    let mut seen = std::collections::HashSet::new();
    let mut analyzer = question_analyzer();
    let mut stream = analyzer.token_stream(question);
    let mut words = Vec::new();
    while stream.advance() {
        let token = stream.token();
        if seen.insert(token.text.clone()) {
            words.push(QuestionWord {
                term: token.text.clone(),
                surface: question
                    .get(token.offset_from..token.offset_to)
                    .unwrap_or(&token.text)
                    .to_owned(),
            });
        }
    }
    words
}

fn terms_of(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while stream.advance() {
        terms.push(std::mem::take(&mut stream.token_mut().text));
    }
    terms
}

/// Whether `text` contains Chinese, Japanese or Korean characters.
pub fn has_cjk(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(c as u32,
            0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_segmented_into_words() {
        let t = terms("我们使用嵌入式搜索引擎检索文档");
        assert!(t.contains(&"搜索引擎".to_owned()), "{t:?}");
        assert!(t.contains(&"搜索".to_owned()), "{t:?}");
        assert!(t.contains(&"文档".to_owned()), "{t:?}");
    }

    #[test]
    fn english_is_lowercased_and_punctuation_dropped() {
        assert_eq!(
            terms("Hello, World! gRPC streams."),
            ["hello", "world", "grpc", "stream"]
        );
    }

    #[test]
    fn english_forms_of_a_word_are_one_term() {
        assert_eq!(terms("cancel cancels cancelled cancelling"), ["cancel"; 4]);
        assert_eq!(
            question_terms("How does cancellation work?"),
            ["cancel", "work"]
        );
    }

    #[test]
    fn mixed_text_keeps_both_scripts() {
        let t = terms("agentstream 支持 gRPC 流式输出");
        assert!(t.contains(&"agentstream".to_owned()), "{t:?}");
        assert!(t.contains(&"grpc".to_owned()), "{t:?}");
        assert!(t.contains(&"输出".to_owned()), "{t:?}");
    }

    #[test]
    fn questions_lose_their_stopwords() {
        assert_eq!(
            question_terms("What is the index of the RAG service?"),
            ["index", "rag", "servic"]
        );
        let t = question_terms("什么是检索增强生成？");
        assert!(!t.iter().any(|w| w == "什么" || w == "是"), "{t:?}");
        assert!(t.contains(&"检索".to_owned()), "{t:?}");
    }

    #[test]
    fn question_words_keep_what_the_reader_wrote() {
        let words = question_words("How do I deploy on Kubernetes?");
        assert_eq!(words[0].term, "deploy");
        assert_eq!(words[1].term, "kubernet");
        assert_eq!(words[1].surface, "Kubernetes");
    }

    #[test]
    fn detects_cjk() {
        assert!(has_cjk("mixed 中文"));
        assert!(!has_cjk("plain English"));
    }
}
