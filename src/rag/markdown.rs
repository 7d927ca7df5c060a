//! Reading a document as the blocks a reader sees.
//!
//! Documents arrive as Markdown (or plain text, which reads as Markdown
//! paragraphs). Splitting and answering both need its *structure*, not its
//! lines: a fenced code block must stay whole and never be read as prose, a
//! paragraph or quote wrapped over several lines is one piece of text, a
//! table row is a record with named columns, and headings say what the
//! text under them is about. So a document is parsed once with
//! [pulldown-cmark](https://crates.io/crates/pulldown-cmark) (CommonMark
//! plus tables) into [`Block`]s, which are cleaned on the way:
//! - HTML is dropped: comments (`<!-- ignore -->`), anchors (`<a id=…></a>`),
//!   block-level tags and directives (`<Listing …>`, `</Listing>`); the text
//!   between inline tags is kept;
//! - book-tool directives (`{{#include …}}`) are dropped;
//! - emphasis markers and link targets go, their text stays; images go;
//! - wrapped lines are joined with a space, or with nothing between two
//!   Chinese characters (which have no spaces between words).
//!
//! [`render`] writes blocks back as plain, regular Markdown: that is the
//! text of a passage, what clients see and what a real model is given.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// One block of a document, cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    /// A heading, level 1 to 6.
    Heading {
        /// 1 for `#`, 2 for `##`, …
        level: u8,
        /// Its text.
        text: String,
    },
    /// A paragraph, its lines joined.
    Paragraph(String),
    /// A quoted paragraph (`>`), its lines joined, without the markers.
    Quote(String),
    /// One list item's own text (nested items are items of their own).
    Item {
        /// Nesting depth, 0 for a top-level item.
        depth: u8,
        /// `Some(n)`: the n-th item of a numbered list.
        number: Option<u64>,
        /// Its text.
        text: String,
    },
    /// A code block, kept exactly (fenced or indented).
    Code {
        /// The language of its info string (`rust` for `rust,ignore`).
        language: String,
        /// The code, ending with a newline.
        code: String,
    },
    /// A table.
    Table {
        /// Column names.
        header: Vec<String>,
        /// Cells, row by row.
        rows: Vec<Vec<String>>,
    },
}

impl Block {
    /// Whether the block is running text (read as sentences).
    pub(crate) fn is_prose(&self) -> bool {
        matches!(
            self,
            Block::Paragraph(_) | Block::Quote(_) | Block::Item { .. }
        )
    }
}

/// The blocks of `text`, in order, without empty ones.
pub(crate) fn blocks(text: &str) -> Vec<Block> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_FOOTNOTES;
    let mut reader = Reader::default();
    for event in Parser::new_ext(text, options) {
        reader.event(event);
    }
    reader.blocks
}

/// What the reader is inside of.
#[derive(Debug, Default)]
struct Reader {
    blocks: Vec<Block>,
    /// Text of the block being read.
    text: String,
    /// Open lists: the next number of each (None: bulleted).
    lists: Vec<Option<u64>>,
    /// Items whose text is being read, with their number.
    items: Vec<Option<u64>>,
    quote_depth: usize,
    heading: Option<u8>,
    code: Option<String>,
    table: Option<(Vec<String>, Vec<Vec<String>>)>,
    row: Vec<String>,
    in_head: bool,
    /// Inside an image (its alt text is dropped) or an HTML block.
    hidden: usize,
}

impl Reader {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) if self.hidden == 0 => self.push_text(&text),
            Event::Code(code) if self.hidden == 0 => {
                self.text.push('`');
                self.text.push_str(&code);
                self.text.push('`');
            }
            Event::SoftBreak => self.text.push('\n'),
            Event::HardBreak => self.text.push('\n'),
            Event::TaskListMarker(done) => self.text.push_str(if done { "[x] " } else { "[ ] " }),
            // HTML (inline or block), math, footnote marks and rules carry
            // nothing a reader of the text needs.
            _ => {}
        }
    }

    fn push_text(&mut self, text: &str) {
        match &mut self.code {
            Some(code) => code.push_str(text),
            None => self.text.push_str(text),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Heading { level, .. } => {
                self.flush_item();
                self.heading = Some(level as u8);
            }
            Tag::BlockQuote(_) => {
                self.flush_item();
                self.quote_depth += 1;
            }
            Tag::CodeBlock(kind) => {
                self.flush_item();
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split([',', ' ', '{'])
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    CodeBlockKind::Indented => String::new(),
                };
                self.code = Some(String::new());
                self.text = language;
            }
            Tag::List(first) => {
                self.flush_item();
                self.lists.push(first);
            }
            Tag::Item => {
                self.flush_item();
                let number = self.lists.last_mut().and_then(|n| {
                    let current = *n;
                    *n = n.map(|k| k.saturating_add(1));
                    current
                });
                self.items.push(number);
            }
            Tag::Table(_) => self.table = Some((Vec::new(), Vec::new())),
            Tag::TableHead => self.in_head = true,
            Tag::TableRow => self.row.clear(),
            Tag::TableCell => self.text.clear(),
            Tag::Image { .. } | Tag::HtmlBlock | Tag::MetadataBlock(_) => self.hidden += 1,
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => {
                let text = clean(&std::mem::take(&mut self.text));
                if let Some(level) = self.heading.take()
                    && !text.is_empty()
                {
                    self.blocks.push(Block::Heading { level, text });
                }
            }
            TagEnd::Paragraph => {
                if self.items.is_empty() {
                    self.flush_paragraph();
                } else {
                    // Paragraphs of one item are one text.
                    self.text.push('\n');
                }
            }
            TagEnd::BlockQuote(_) => {
                self.flush_item();
                self.quote_depth = self.quote_depth.saturating_sub(1);
            }
            TagEnd::CodeBlock => {
                let code = self.code.take().unwrap_or_default();
                let language = std::mem::take(&mut self.text);
                let code: String = code
                    .lines()
                    .filter(|l| !is_directive(l))
                    .flat_map(|l| [l, "\n"])
                    .collect();
                if !code.trim().is_empty() {
                    self.blocks.push(Block::Code { language, code });
                }
            }
            TagEnd::List(_) => {
                self.flush_item();
                self.lists.pop();
            }
            TagEnd::Item => {
                self.flush_item();
                self.items.pop();
            }
            TagEnd::TableCell => {
                let cell = clean(&std::mem::take(&mut self.text));
                self.row.push(cell);
            }
            TagEnd::TableHead => {
                self.in_head = false;
                if let Some((header, _)) = &mut self.table {
                    *header = std::mem::take(&mut self.row);
                }
            }
            TagEnd::TableRow => {
                if let Some((_, rows)) = &mut self.table {
                    rows.push(std::mem::take(&mut self.row));
                }
            }
            TagEnd::Table => {
                if let Some((header, rows)) = self.table.take()
                    && !(header.is_empty() && rows.is_empty())
                {
                    self.blocks.push(Block::Table { header, rows });
                }
            }
            TagEnd::Image | TagEnd::HtmlBlock | TagEnd::MetadataBlock(_) => {
                self.hidden = self.hidden.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Ends the paragraph being read (outside items).
    fn flush_paragraph(&mut self) {
        let text = clean(&std::mem::take(&mut self.text));
        if text.is_empty() {
            return;
        }
        if self.quote_depth > 0 {
            // Consecutive quoted paragraphs are one quote.
            if let Some(Block::Quote(previous)) = self.blocks.last_mut() {
                previous.push(' ');
                previous.push_str(&text);
                return;
            }
            self.blocks.push(Block::Quote(text));
        } else {
            self.blocks.push(Block::Paragraph(text));
        }
    }

    /// Ends the text of the innermost open item, if it has any.
    fn flush_item(&mut self) {
        let Some(&number) = self.items.last() else {
            return;
        };
        let text = clean(&std::mem::take(&mut self.text));
        if !text.is_empty() {
            let depth = u8::try_from(self.lists.len().saturating_sub(1)).unwrap_or(u8::MAX);
            self.blocks.push(Block::Item {
                depth,
                number,
                text,
            });
        }
    }
}

/// A book-tool directive line, such as `{{#include file.rs}}`.
fn is_directive(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("{{#") && line.ends_with("}}")
}

/// Text with its lines joined, directives removed and spacing tidied.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || is_directive(line) {
            continue;
        }
        if let (Some(before), Some(after)) = (out.chars().last(), line.chars().next())
            && !(is_cjk(before) && is_cjk(after))
        {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Chinese, Japanese or Korean characters and their punctuation, which need
/// no space between them.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F | 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF)
}

/// The Markdown of one block.
pub(crate) fn render(block: &Block) -> String {
    match block {
        Block::Heading { level, text } => {
            format!("{} {text}", "#".repeat(usize::from(*level)))
        }
        Block::Paragraph(text) => text.clone(),
        Block::Quote(text) => format!("> {text}"),
        Block::Item {
            depth,
            number,
            text,
        } => {
            let indent = "  ".repeat(usize::from(*depth));
            match number {
                Some(n) => format!("{indent}{n}. {text}"),
                None => format!("{indent}- {text}"),
            }
        }
        Block::Code { language, code } => format!("```{language}\n{code}```"),
        Block::Table { header, rows } => {
            let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
            let mut out = line(header);
            out.push_str(&format!("\n|{}", "---|".repeat(header.len().max(1))));
            for row in rows {
                out.push('\n');
                out.push_str(&line(row));
            }
            out
        }
    }
}

/// The Markdown of consecutive blocks: list items one per line, other
/// blocks separated by a blank line.
pub(crate) fn render_all<'a>(blocks: impl IntoIterator<Item = &'a Block>) -> String {
    let mut out = String::new();
    let mut previous_item = false;
    for block in blocks {
        let item = matches!(block, Block::Item { .. });
        if !out.is_empty() {
            out.push_str(if item && previous_item { "\n" } else { "\n\n" });
        }
        out.push_str(&render(block));
        previous_item = item;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paragraph(text: &str) -> Block {
        Block::Paragraph(text.into())
    }

    #[test]
    fn wrapped_lines_are_joined_and_chinese_needs_no_space() {
        let text = "First line\nsecond line.\n\n第一行\n第二行，\nthen English.";
        assert_eq!(
            blocks(text),
            [
                paragraph("First line second line."),
                paragraph("第一行第二行， then English.")
            ]
        );
    }

    #[test]
    fn fenced_code_stays_whole_and_is_not_prose() {
        let text =
            "Run it:\n\n```rust,ignore\nfn main() {\n\n    println!(\"hi. there\");\n}\n```\n";
        let parsed = blocks(text);
        assert_eq!(
            parsed,
            [
                paragraph("Run it:"),
                Block::Code {
                    language: "rust".into(),
                    code: "fn main() {\n\n    println!(\"hi. there\");\n}\n".into()
                }
            ]
        );
        assert!(!parsed[1].is_prose());
        assert_eq!(
            render(&parsed[1]),
            "```rust\nfn main() {\n\n    println!(\"hi. there\");\n}\n```"
        );
    }

    #[test]
    fn html_leftovers_and_directives_are_removed() {
        let text = "<a id=\"x\"></a>\n\n<!-- a comment -->\n\n\
            <Listing number=\"1-1\" file-name=\"main.rs\">\n\n\
            ```rust\n{{#rustdoc_include ../listings/main.rs}}\nfn f() {}\n```\n\n</Listing>\n\n\
            See [the book][b]<!-- ignore --> and <span class=\"x\">this</span>.\n\n\
            [b]: https://example.com\n";
        assert_eq!(
            blocks(text),
            [
                Block::Code {
                    language: "rust".into(),
                    code: "fn f() {}\n".into()
                },
                paragraph("See the book and this.")
            ]
        );
    }

    #[test]
    fn quotes_are_joined_into_one_block() {
        let text = "> Note: never\n> rebase a public branch.\n>\n> It rewrites history.\n";
        assert_eq!(
            blocks(text),
            [Block::Quote(
                "Note: never rebase a public branch. It rewrites history.".into()
            )]
        );
    }

    #[test]
    fn list_items_are_blocks_with_their_wrapped_lines_joined() {
        let text = "1. Mix the flour\n   with water.\n2. Wait.\n   - nested\n\n- a `cmd` here\n";
        assert_eq!(
            blocks(text),
            [
                Block::Item {
                    depth: 0,
                    number: Some(1),
                    text: "Mix the flour with water.".into()
                },
                Block::Item {
                    depth: 0,
                    number: Some(2),
                    text: "Wait.".into()
                },
                Block::Item {
                    depth: 1,
                    number: None,
                    text: "nested".into()
                },
                Block::Item {
                    depth: 0,
                    number: None,
                    text: "a `cmd` here".into()
                },
            ]
        );
    }

    #[test]
    fn tables_keep_their_header_and_rows() {
        let text = "| flag | default |\n|---|---|\n| `--grace` | **10s** |\n";
        let parsed = blocks(text);
        assert_eq!(
            parsed,
            [Block::Table {
                header: vec!["flag".into(), "default".into()],
                rows: vec![vec!["`--grace`".into(), "10s".into()]],
            }]
        );
        assert_eq!(
            render(&parsed[0]),
            "| flag | default |\n|---|---|\n| `--grace` | 10s |"
        );
    }

    #[test]
    fn headings_lose_their_attributes() {
        assert_eq!(
            blocks("## Shutdown {#shutdown}\ntext"),
            [
                Block::Heading {
                    level: 2,
                    text: "Shutdown".into()
                },
                paragraph("text")
            ]
        );
    }

    #[test]
    fn rendering_round_trips() {
        let text = "# T\n\nPara.\n\n- a\n- b\n\n> q\n\n```sh\nls\n```";
        assert_eq!(render_all(&blocks(text)), text);
        assert_eq!(blocks(&render_all(&blocks(text))), blocks(text));
    }
}
