//! API keys: one check in front of both ports, for gRPC, gRPC-Web and HTTP
//! alike.
//!
//! With `--api-keys-file`, every request must carry `authorization: Bearer
//! KEY` with a configured key, except what a load balancer, a tool or a
//! browser must reach without one: gRPC health and reflection, `/healthz`,
//! `/readyz` and the demo page's static files (`/`, `/demo/...`). A request
//! without a valid key never reaches a service: gRPC and gRPC-Web callers
//! get UNAUTHENTICATED, HTTP callers 401 with OpenAI's error JSON, and the
//! server logs one line naming the request id and path, never the key.
//!
//! A request with a valid key carries its [`Caller`] (the key's name) in
//! its extensions; the call's bookkeeping records the name on the call's
//! log line and holds the call to the key's share of streams
//! (`--max-streams-per-key`).
//!
//! The check is a tower layer over `http::Request`, below the protocol: it
//! sits inside the request-id layers (refusals carry an `x-request-id`
//! too) and, on the HTTP port, inside CORS (a browser can read the 401, and
//! preflights, which carry no credentials, are answered by CORS).

mod keys;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::{
    TryFutureExt,
    future::{self, Either, MapOk, Ready},
};
use http::{HeaderMap, Request, Response, header};
use http_body_util::Either as EitherBody;
use tower::{Layer, Service};

pub(crate) use keys::{ApiKeys, Caller, KeysFileError, MAX_KEY_LEN};

use super::request_id::REQUEST_ID_HEADER;
use crate::error::Error;

/// The body of a refusal.
type RefusalBody = axum::body::Body;

/// Paths served without a key whatever the configuration.
fn is_open(path: &str) -> bool {
    const OPEN_PREFIXES: [&str; 4] = [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
        "/demo/",
    ];
    matches!(path, "/" | "/healthz" | "/readyz")
        || OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// What the check decided about one request.
#[derive(Debug)]
enum Decision<'a> {
    /// No key needed (open path, or no keys configured).
    Open,
    /// A configured key.
    Allowed(&'a Caller),
    /// No valid key: why, for the caller.
    Refused(&'static str),
}

/// Decides on a request for `path` with `headers` against `keys`.
fn decide<'a>(keys: Option<&'a ApiKeys>, path: &str, headers: &HeaderMap) -> Decision<'a> {
    let Some(keys) = keys else {
        return Decision::Open;
    };
    if is_open(path) {
        return Decision::Open;
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Decision::Refused(
            "missing API key: send the header `authorization: Bearer KEY` (once)",
        );
    };
    let Some(key) = bearer_token(value.as_bytes()) else {
        return Decision::Refused("the authorization header must be `Bearer KEY`");
    };
    match keys.find(key) {
        Some(caller) => Decision::Allowed(caller),
        None => Decision::Refused("unknown API key"),
    }
}

/// The token of an `authorization: Bearer TOKEN` value (the scheme is
/// case-insensitive, as RFC 9110 says).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty() && token.len() <= MAX_KEY_LEN).then_some(token)
}

/// The refusal of a request with `headers`: UNAUTHENTICATED in the
/// caller's protocol.
fn refusal(headers: &HeaderMap, reason: &'static str) -> Response<RefusalBody> {
    let error = Error::Unauthenticated(reason.into());
    let content_type = headers.get(header::CONTENT_TYPE);
    let is_grpc = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return crate::http::error_response(error);
    }
    // gRPC and gRPC-Web alike: a trailers-only response (the status in the
    // headers), in the caller's own content type.
    let mut response = tonic::Status::from(error).into_http::<RefusalBody>();
    if let Some(content_type) =
        content_type.filter(|v| v.as_bytes().starts_with(b"application/grpc-web"))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    response
}

/// The layer that checks API keys (a pass-through without keys).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequireKeyLayer {
    keys: Option<Arc<ApiKeys>>,
}

impl RequireKeyLayer {
    /// Checks against `keys`; `None` lets every request through.
    pub(crate) fn new(keys: Option<Arc<ApiKeys>>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for RequireKeyLayer {
    type Service = RequireKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKey {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service of [`RequireKeyLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequireKey<S> {
    inner: S,
    keys: Option<Arc<ApiKeys>>,
}

/// A response of the inner service or a refusal.
type Answer<B> = Response<EitherBody<B, RefusalBody>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireKey<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Answer<ResBody>;
    type Error = S::Error;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        MapOk<S::Future, fn(Response<ResBody>) -> Answer<ResBody>>,
        Ready<Result<Answer<ResBody>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let served: fn(Response<ResBody>) -> Answer<ResBody> =
            |response| response.map(EitherBody::Left);
        match decide(
            self.keys.as_deref(),
            request.uri().path(),
            request.headers(),
        ) {
            Decision::Open => {}
            Decision::Allowed(caller) => {
                let caller = caller.clone();
                request.extensions_mut().insert(caller);
            }
            Decision::Refused(reason) => {
                tracing::info!(
                    request_id = request
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                    path = request.uri().path(),
                    reason,
                    "call refused: no valid API key"
                );
                let response = refusal(request.headers(), reason).map(EitherBody::Right);
                return Either::Right(future::ready(Ok(response)));
            }
        }
        Either::Left(self.inner.call(request).map_ok(served))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys");
        std::fs::write(&path, "alice:sk-alice-0123456789abcdef\n").expect("write");
        ApiKeys::load(&path, None).expect("keys")
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    #[test]
    fn open_paths_need_no_key() {
        let keys = keys();
        for path in [
            "/healthz",
            "/readyz",
            "/",
            "/demo/app.js",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                matches!(decide(Some(&keys), path, &HeaderMap::new()), Decision::Open),
                "{path}"
            );
        }
        for path in [
            "/v1/models",
            "/metrics",
            "/agentstream.v1.ChatService/StreamChat",
            "/healthz/x",
            "/nope",
        ] {
            assert!(
                matches!(
                    decide(Some(&keys), path, &HeaderMap::new()),
                    Decision::Refused(_)
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn bearer_keys_are_checked() {
        let keys = keys();
        let path = "/v1/models";
        for ok in [
            "Bearer sk-alice-0123456789abcdef",
            "bearer  sk-alice-0123456789abcdef ",
        ] {
            match decide(Some(&keys), path, &with_auth(ok)) {
                Decision::Allowed(caller) => assert_eq!(caller.name(), "alice"),
                other => panic!("{ok}: {other:?}"),
            }
        }
        for bad in [
            "sk-alice-0123456789abcdef",
            "Basic sk-alice-0123456789abcdef",
            "Bearer ",
            "Bearer sk-alice",
            "Bearer sk-alice-0123456789abcdef0",
        ] {
            assert!(
                matches!(
                    decide(Some(&keys), path, &with_auth(bad)),
                    Decision::Refused(_)
                ),
                "{bad}"
            );
        }
        let mut twice = with_auth("Bearer sk-alice-0123456789abcdef");
        twice.append(
            header::AUTHORIZATION,
            "Bearer other".parse().expect("header"),
        );
        assert!(matches!(
            decide(Some(&keys), path, &twice),
            Decision::Refused(_)
        ));
        assert!(matches!(
            decide(None, path, &HeaderMap::new()),
            Decision::Open
        ));
    }
}
