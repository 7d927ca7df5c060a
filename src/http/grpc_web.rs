//! gRPC-Web on the HTTP port, for browser gRPC clients (connect-web,
//! grpc-web): the very services of the gRPC port, each wrapped in
//! tonic-web's translation layer, which speaks both the binary
//! (`application/grpc-web+proto`) and the text (`application/grpc-web-text`,
//! base64) modes and moves the status into the body's trailer frame.
//!
//! tonic-web answers in text mode only when `Accept` names it; a text-mode
//! request whose `Accept` names no gRPC-Web type (none, or curl's `*/*`) is
//! answered in text mode too, since a client that sends base64 reads base64.
//!
//! Calls take the same path as on the gRPC port from there on: the same
//! validation, limits, per-call span and counters. A plain gRPC call over
//! h2c reaches the services here too (tonic-web passes HTTP/2 requests that
//! are not gRPC-Web through); the gRPC port itself never goes through axum.

use axum::{
    Router,
    http::{HeaderValue, Request, header},
};
use tonic::server::NamedService;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;

use crate::grpc::Services;

/// Adds a gRPC-Web route for each service of `services` to `router`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    services: Services,
) -> Router<S> {
    let Services { chat, rag, tasks } = services;
    let web = || {
        ServiceBuilder::new()
            .map_request(text_mode_answers_in_text)
            .layer(GrpcWebLayer::new())
    };
    router
        .route_service(&path_of(&chat), web().service(chat))
        .route_service(&path_of(&rag), web().service(rag))
        .route_service(&path_of(&tasks), web().service(tasks))
}

/// The gRPC-Web content types, with and without the `+proto` suffix.
const GRPC_WEB_TYPES: [&str; 4] = [
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

/// A text-mode request that accepts no gRPC-Web type in particular is
/// answered in text mode (tonic-web would answer it in binary).
fn text_mode_answers_in_text<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers();
    let is_text = |v: &&HeaderValue| v.as_bytes().starts_with(b"application/grpc-web-text");
    let names_a_type =
        |v: &HeaderValue| GRPC_WEB_TYPES.iter().any(|t| v.as_bytes() == t.as_bytes());
    let text = headers.get(header::CONTENT_TYPE).filter(is_text).cloned();
    if let Some(text) = text
        && !headers.get(header::ACCEPT).is_some_and(names_a_type)
    {
        request.headers_mut().insert(header::ACCEPT, text);
    }
    request
}

/// Every method of a service: `/package.Service/{method}`.
fn path_of<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*method}}", S::NAME)
}
