//! Requests in flight, per connection (for the idle timeout) and per server
//! (for the end of the drain).
//!
//! A request counts from the moment the service is called until its
//! response body is dropped (sent to the end, reset, or cancelled), so a
//! long stream keeps its connection busy and the drain waiting.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

/// A count of requests in flight that can be waited on.
#[derive(Debug, Clone)]
pub(crate) struct Load(Arc<watch::Sender<usize>>);

impl Default for Load {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Load {
    /// Counts one more request here and in `server` until the guard drops.
    pub(crate) fn enter(&self, server: &Load) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        server.0.send_modify(|n| *n += 1);
        InFlight {
            connection: self.clone(),
            server: server.clone(),
        }
    }

    /// Resolves when no request is in flight.
    pub(crate) async fn idle(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Resolves once no request has been in flight for `period`.
    pub(crate) async fn idle_for(&self, period: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            let _ = rx.wait_for(|n| *n == 0).await;
            if tokio::time::timeout(period, rx.wait_for(|n| *n > 0))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight {
    connection: Load,
    server: Load,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connection.0.send_modify(|n| *n = n.saturating_sub(1));
        self.server.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
