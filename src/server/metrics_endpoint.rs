//! The optional Prometheus endpoint (`--metrics-listen`): plain HTTP/1.1 on
//! its own address, so scrapers and clients in any language can observe the
//! server (for instance that cancelled streams leave no live generation).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, routing::get};

use super::{ServeError, Shutdown};
use crate::metrics::Metrics;

/// Binds `listen` and serves `GET /metrics` until shutdown is requested;
/// returns the bound address.
pub(super) async fn start(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<SocketAddr, ServeError> {
    let (listener, addr) = super::bind(listen).await?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [("content-type", crate::metrics::CONTENT_TYPE)],
                    metrics.render_prometheus(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let stopped = async move { shutdown.requested().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    tracing::info!(%addr, "metrics listening");
    Ok(addr)
}
