//! The accept loop: a cap on open connections, and a backoff when the
//! process runs out of file descriptors instead of a busy retry.
//!
//! At the cap, a new connection is accepted and closed at once, so its
//! client sees a clean reset rather than a hang in the listen backlog.
//! When `accept` fails for lack of resources (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM), retrying at once would fail again and burn a core; the loop
//! sleeps 5 ms, doubling up to 1 s while the failures last.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// First pause after a failed accept.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause between accepts while they fail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one "connection limit reached" line per this period.
const CAP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Accepts connections until `closed`, handing each, with its slot of
/// `slots`, to `serve`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    closed: CancellationToken,
    mut serve: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    let mut backoff: Option<Duration> = None;
    let mut cap_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = closed.cancelled() => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = None;
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        // Chunks are small and latency matters more than
                        // packet count.
                        let _ = stream.set_nodelay(true);
                        serve(stream, slot);
                    }
                    Err(_) => {
                        if cap_logged.is_none_or(|at| at.elapsed() >= CAP_LOG_PERIOD) {
                            tracing::warn!(
                                "connection limit reached (--max-connections): closing new connections"
                            );
                            cap_logged = Some(Instant::now());
                        }
                        drop(stream);
                    }
                }
            }
            // The failed connection's own problem: the next accept is fine.
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                let delay = backoff.map_or(FIRST_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
                backoff = Some(delay);
                tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = closed.cancelled() => return,
                }
            }
        }
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
