//! `agentstream docs list|delete`: what the document index holds, and
//! removing documents from it.

use agentstream::pb::{self, rag_service_client::RagServiceClient};
use clap::{Args, Subcommand};

use crate::{
    CliError,
    client::ClientArgs,
    output::{self, plural},
};

/// Documents asked for per ListDocuments call (the server's maximum).
const PAGE_SIZE: u32 = 1000;

#[derive(Debug, Args)]
pub struct DocsArgs {
    #[command(subcommand)]
    command: DocsCommand,
}

#[derive(Debug, Subcommand)]
enum DocsCommand {
    /// List every indexed document (id, title, size, when ingested), by id.
    List(ListArgs),
    /// Delete documents by id (as `docs list` shows them).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The documents' ids.
    #[arg(required = true)]
    ids: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: DocsArgs) -> Result<(), CliError> {
    match args.command {
        DocsCommand::List(args) => list(args).await,
        DocsCommand::Delete(args) => delete(args).await,
    }
}

/// Prints every document, page after page.
async fn list(args: ListArgs) -> Result<(), CliError> {
    let mut client = RagServiceClient::new(args.client.connect().await?);
    let mut page_token = String::new();
    let mut count = 0;
    loop {
        let request = pb::ListDocumentsRequest {
            page_size: PAGE_SIZE,
            page_token,
        };
        let page = client.list_documents(request).await?.into_inner();
        for document in &page.documents {
            output::line(&describe(document))?;
        }
        count += page.documents.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    eprintln!("{}", plural(count, "document"));
    Ok(())
}

/// Deletes each id in turn; stops at the first that fails.
async fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let mut client = RagServiceClient::new(args.client.connect().await?);
    for id in args.ids {
        let request = pb::DeleteDocumentRequest {
            document_id: id.clone(),
        };
        client.delete_document(request).await?;
        output::line(&format!("deleted {id}"))?;
    }
    Ok(())
}

/// `id  title  (12.3 KB, ingested 2026-11-25T20:58:32Z)`
fn describe(document: &pb::DocumentInfo) -> String {
    let mut line = format!(
        "{}  {}  ({}",
        document.id,
        document.title,
        size(document.size_bytes)
    );
    if let Some(time) = document.ingest_time.as_ref().and_then(pb::system_time) {
        line.push_str(&format!(
            ", ingested {}",
            humantime::format_rfc3339_seconds(time)
        ));
    }
    line.push(')');
    line
}

/// `812 B`, `12.3 KB`, `4.0 MB` (powers of 1024).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KB", "MB", "GB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_the_nearest_unit() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(12_595), "12.3 KB");
        assert_eq!(size(4 << 20), "4.0 MB");
    }
}
