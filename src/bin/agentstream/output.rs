//! Standard output for text that streams in pieces.
//!
//! Answers arrive a few characters at a time, so the last thing written is
//! often half a line. Everything else the CLI prints (usage, an error, a
//! "cancelled") goes to standard error, which shares the terminal: it must
//! start on a fresh line, and the answer left on standard output should end
//! with a newline too. So writes go through here, which remembers whether
//! the last byte ended a line, and [`end_line`] finishes it when needed.
//!
//! Write errors are returned, never panicked on (as `println!` would): when
//! the reader goes away (`agentstream ask ... | head -3`), the command
//! stops quietly.

use std::{
    io::{self, Write},
    sync::atomic::{AtomicBool, Ordering},
};

/// Whether standard output holds an unfinished line.
static MID_LINE: AtomicBool = AtomicBool::new(false);

/// Writes `text` and flushes it, so the reader sees it now.
pub fn write(text: &str) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    MID_LINE.store(!text.ends_with('\n'), Ordering::Relaxed);
    Ok(())
}

/// Writes `text` and a newline, after ending an unfinished line.
pub fn line(text: &str) -> io::Result<()> {
    end_line()?;
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Ends the current line of standard output if it is unfinished.
pub fn end_line() -> io::Result<()> {
    if MID_LINE.swap(false, Ordering::Relaxed) {
        let mut out = io::stdout().lock();
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

/// `1 document`, `2 documents`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(plural(0, "document"), "0 documents");
        assert_eq!(plural(1, "document"), "1 document");
        assert_eq!(plural(2, "file"), "2 files");
    }
}
