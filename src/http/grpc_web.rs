//! gRPC-Web on the HTTP port, for browser gRPC clients (connect-web,
//! grpc-web): the very services of the gRPC port, each wrapped in
//! tonic-web's translation layer, which speaks both the binary
//! (`application/grpc-web+proto`) and the text (`application/grpc-web-text`,
//! base64) modes and moves the status into the body's trailer frame.
//!
//! Calls take the same path as on the gRPC port from there on: the same
//! validation, limits, per-call span and counters. A plain gRPC call over
//! h2c reaches the services here too (tonic-web passes HTTP/2 requests that
//! are not gRPC-Web through); the gRPC port itself never goes through axum.

use axum::Router;
use tonic::server::NamedService;
use tonic_web::GrpcWebLayer;
use tower::Layer;

use crate::grpc::Services;

/// Adds a gRPC-Web route for each service of `services` to `router`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    services: Services,
) -> Router<S> {
    let Services { chat, rag, tasks } = services;
    router
        .route_service(&path_of(&chat), GrpcWebLayer::new().layer(chat))
        .route_service(&path_of(&rag), GrpcWebLayer::new().layer(rag))
        .route_service(&path_of(&tasks), GrpcWebLayer::new().layer(tasks))
}

/// Every method of a service: `/package.Service/{method}`.
fn path_of<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*method}}", S::NAME)
}
