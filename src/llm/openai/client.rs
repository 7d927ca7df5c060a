//! The HTTP side of an upstream: opening a streaming request (with bounded
//! retries before the first token), discovering models, and mapping every
//! HTTP failure to the service's [`Error`] in one place.
//!
//! | upstream answer | gRPC code | retried |
//! |---|---|---|
//! | connection refused, reset, TLS failure, connect timeout | UNAVAILABLE | yes |
//! | 5xx, 408 | UNAVAILABLE | yes |
//! | 429 | RESOURCE_EXHAUSTED, with the retry-after hint (and `RetryInfo`) | yes, if the hint is at most [`MAX_RETRY_WAIT`] |
//! | 400, 413, 422 | INVALID_ARGUMENT with the upstream's explanation (redacted) | no |
//! | 401, 403 | FAILED_PRECONDITION: the server's key is wrong, not the caller's fault | no |
//! | 404 | FAILED_PRECONDITION: the configured URL or model does not exist there | no |
//! | no answer before the first-token timeout | UNAVAILABLE | no |
//!
//! Retries happen only here, before any event was read, so a client never
//! sees text twice.
//!
//! Clients never see the upstream's URL, host, port or raw body: each
//! message names the upstream as configured, the status class and at most
//! a redacted explanation ([`super::redact`]); the full detail (status,
//! body, error chain) is logged as a warning with the call's span.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Response, StatusCode, Url, header};
use tokio::time::{Instant, sleep, timeout_at};

use super::{
    config::{ApiKey, Timeouts, UpstreamSpec},
    redact::Redactor,
    wire::{ChatCompletionRequest, ModelList, UpstreamMessage},
};
use tracing::Span;

use crate::{
    error::Error,
    metrics::{Metrics, UpstreamCounters},
    telemetry,
};

/// First backoff between two attempts; it doubles with each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait before a retry: a longer retry-after fails the call at once
/// (the client can decide better than a hidden wait).
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Largest error body read from an upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest model list read at discovery.
const MAX_MODEL_LIST: usize = 4 * 1024 * 1024;
/// Time allowed for model discovery at start-up.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an upstream's models could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The request or its body failed (the text is scrubbed of the key).
    #[error("{0}")]
    Transport(String),
    /// No whole answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The upstream refused.
    #[error("HTTP {status}: {message}")]
    Status {
        /// Its status.
        status: StatusCode,
        /// What it said, scrubbed of the key.
        message: String,
    },
    /// The answer was not a model list.
    #[error("the model list is not the expected JSON")]
    Json(#[source] serde_json::Error),
}

/// An upstream's HTTP client and what it needs to call it.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    chat_url: Url,
    models_url: Url,
    key: Option<ApiKey>,
    /// Cleans the upstream's words before clients see them.
    redactor: Redactor,
    http: reqwest::Client,
    timeouts: Timeouts,
    retries: u32,
    counters: Option<UpstreamCounters>,
}

/// A failed attempt, and whether another one may help.
struct Failure {
    error: Error,
    retry: Retry,
}

enum Retry {
    Never,
    /// After the backoff, or after the upstream's hint when it gave one.
    After(Option<Duration>),
}

impl Upstream {
    /// The client for `spec`, authenticating with `key`.
    pub fn new(spec: &UpstreamSpec, key: Option<ApiKey>) -> Result<Self, reqwest::Error> {
        // reqwest is built without a TLS provider of its own: use ring's.
        // An error means one is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(spec.timeouts.connect)
            .tcp_nodelay(true)
            .user_agent(concat!("agentstream/", env!("CARGO_PKG_VERSION")));
        // HTTP(S)_PROXY applies, except to a model on this machine, which
        // no proxy could reach.
        if is_loopback(&spec.url) {
            builder = builder.no_proxy();
        }
        let http = builder.build()?;
        let redactor = Redactor::new(
            &spec.name,
            spec.url.host_str().unwrap_or_default(),
            key.clone(),
        );
        Ok(Self {
            name: spec.name.clone(),
            chat_url: spec.endpoint("chat/completions"),
            models_url: spec.endpoint("models"),
            key,
            redactor,
            http,
            timeouts: spec.timeouts,
            retries: spec.retries,
            counters: None,
        })
    }

    /// Counts requests, errors and retries in `metrics`.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.counters = Some(metrics.upstream_of(&self.name));
        self
    }

    /// Counts a failure of `class` (see the `agentstream_upstream_errors`
    /// metric).
    pub fn count_error(&self, class: &'static str) {
        if let Some(counters) = &self.counters {
            counters.error(class);
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What cleans the upstream's words for clients.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The upstream's timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends the streaming request; on success returns the response, whose
    /// body is the event stream, and the instant by which its first event
    /// must arrive. Retryable failures are retried with exponential backoff,
    /// at most `retries` times.
    pub async fn open_stream(
        &self,
        body: &ChatCompletionRequest<'_>,
    ) -> Result<(Response, Instant), Error> {
        let mut attempt = 0;
        loop {
            let first_token_deadline = Instant::now() + self.timeouts.first_token;
            let failure = match self.attempt(body, first_token_deadline).await {
                Ok(response) => return Ok((response, first_token_deadline)),
                Err(failure) => failure,
            };
            let wait = match failure.retry {
                Retry::After(hint) if attempt < self.retries => {
                    hint.unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt))
                }
                _ => return Err(failure.error),
            };
            if wait > MAX_RETRY_WAIT {
                return Err(failure.error);
            }
            attempt += 1;
            if let Some(counters) = &self.counters {
                counters.retry();
            }
            tracing::warn!(
                upstream = %self.name,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %failure.error,
                "upstream attempt failed; retrying"
            );
            sleep(wait).await;
        }
    }

    /// One attempt: the request, its status and, on failure, its error body.
    async fn attempt(
        &self,
        body: &ChatCompletionRequest<'_>,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        if let Some(counters) = &self.counters {
            counters.request();
        }
        // The trace context of the current (`upstream`) span, so a model
        // server that traces continues the caller's trace.
        let mut trace = header::HeaderMap::new();
        telemetry::inject_trace_context(&Span::current(), &mut trace);
        let request = self.authorized(
            self.http
                .post(self.chat_url.clone())
                .headers(trace)
                .json(body),
        );
        let response = match timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                self.count_error(if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                });
                return Err(self.transport_failure(&e));
            }
            Err(_) => {
                self.count_error("timeout");
                return Err(Failure {
                    error: Error::Unavailable(format!(
                        "upstream `{}` did not answer within its first-token timeout of {}",
                        self.name,
                        humantime::format_duration(self.timeouts.first_token)
                    )),
                    retry: Retry::Never,
                });
            }
        };
        if response.status().is_success() {
            return self
                .check_event_stream(response)
                .inspect_err(|_| self.count_error("protocol"));
        }
        let status = response.status();
        self.count_error(if status == StatusCode::TOO_MANY_REQUESTS {
            "rate_limited"
        } else if status.is_server_error() {
            "status_5xx"
        } else {
            "status_4xx"
        });
        Err(self.status_failure(response, deadline).await)
    }

    /// Refuses a 2xx answer that is not an event stream (an upstream that
    /// ignored `stream: true`).
    fn check_event_stream(&self, response: Response) -> Result<Response, Failure> {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/event-stream");
        if content_type.starts_with("text/event-stream") {
            return Ok(response);
        }
        Err(Failure {
            error: Error::Internal(format!(
                "upstream `{}` answered with `{content_type}` instead of an event stream",
                self.name
            )),
            retry: Retry::Never,
        })
    }

    fn transport_failure(&self, error: &reqwest::Error) -> Failure {
        let what = if error.is_connect() {
            "cannot connect to"
        } else {
            "lost the connection to"
        };
        tracing::warn!(
            upstream = %self.name,
            detail = %self.scrub(&error_chain(error)),
            "{what} the upstream"
        );
        Failure {
            error: Error::Unavailable(format!(
                "{what} upstream `{}`: {}",
                self.name,
                short_cause(error)
            )),
            retry: Retry::After(None),
        }
    }

    async fn status_failure(&self, response: Response, deadline: Instant) -> Failure {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_capped(response, MAX_ERROR_BODY, deadline)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let said = UpstreamMessage::parse(&body);
        tracing::warn!(
            upstream = %self.name,
            status = status.as_u16(),
            detail = %self.scrub(&said.message),
            "the upstream refused the request"
        );
        // What the client may read of it: a redacted explanation, only
        // when the upstream gave one in JSON; otherwise the status's name.
        let reason = said
            .explained
            .then(|| self.redactor.reason(&said.message))
            .flatten()
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").to_owned());
        let name = &self.name;
        let code = status.as_u16();
        let (error, retry) = match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let hint = retry_after.map_or_else(String::new, |d| {
                    format!("; retry after {}", humantime::format_duration(d))
                });
                let error = Error::RateLimited {
                    message: format!("upstream `{name}` is rate limiting: {reason}{hint}"),
                    retry_after,
                };
                (error, Retry::After(retry_after))
            }
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY => {
                let error = Error::UpstreamRejected {
                    message: format!("upstream `{name}` answered HTTP {code}: {reason}"),
                    field: self.redactor.field(said.param),
                };
                (error, Retry::Never)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let error = Error::FailedPrecondition(format!(
                    "upstream `{name}` refused this server's credentials (HTTP {code}): \
                     its API key is missing, wrong or lacks access; the operator must fix \
                     the key-env/key-file of `{name}` (the server log has the details)"
                ));
                (error, Retry::Never)
            }
            StatusCode::NOT_FOUND => {
                let error = Error::FailedPrecondition(format!(
                    "upstream `{name}` answered 404: its url or this model is misconfigured \
                     (the server log has the details)"
                ));
                (error, Retry::Never)
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                let error =
                    Error::Unavailable(format!("upstream `{name}` failed (HTTP {code}): {reason}"));
                (error, Retry::After(None))
            }
            _ => {
                let error = Error::Internal(format!(
                    "upstream `{name}` answered with unexpected HTTP {code}"
                ));
                (error, Retry::Never)
            }
        };
        Failure { error, retry }
    }

    /// The models listed at `GET {base}/models`.
    pub async fn discover_models(&self) -> Result<Vec<String>, DiscoveryError> {
        let deadline = Instant::now() + DISCOVERY_TIMEOUT;
        let request = self.authorized(self.http.get(self.models_url.clone()));
        let response = match timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(DiscoveryError::Transport(self.scrub(&error_chain(&e)))),
            Err(_) => return Err(DiscoveryError::Timeout(DISCOVERY_TIMEOUT)),
        };
        let status = response.status();
        let body = read_capped(response, MAX_MODEL_LIST, deadline)
            .await
            .map_err(DiscoveryError::Transport)?;
        if !status.is_success() {
            let said = UpstreamMessage::parse(&String::from_utf8_lossy(&body));
            return Err(DiscoveryError::Status {
                status,
                message: self.scrub(&said.message),
            });
        }
        let list: ModelList = serde_json::from_slice(&body).map_err(DiscoveryError::Json)?;
        Ok(list
            .data
            .into_iter()
            .map(|m| m.id)
            .filter(|id| !id.is_empty())
            .collect())
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            // `bearer_auth` marks the header sensitive, so it is never logged.
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    /// Removes the API key from text that came from the upstream (for the
    /// server's log; clients get [`Redactor::reason`]).
    pub fn scrub(&self, text: &str) -> String {
        self.redactor.scrub(text)
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads at most `cap` bytes of a body, by `deadline`.
async fn read_capped(response: Response, cap: usize, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    loop {
        match timeout_at(deadline, chunks.next()).await {
            Err(_) => return Err("timed out reading the body".into()),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => return Err(error_chain(&e)),
            Ok(Some(Ok(chunk))) => {
                let room = cap.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= cap {
                    return Ok(body);
                }
            }
        }
    }
}

/// The upstream's retry hint: `retry-after-ms` (OpenAI, Azure) or
/// `retry-after` in seconds. An HTTP date is ignored (no hint).
pub(crate) fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let seconds = value("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| value(header::RETRY_AFTER.as_str()))?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// A failure's cause in a few words a client may read ("connection
/// refused", "timed out"): the kind of the I/O error underneath, never
/// the error's text, which names the URL.
pub(crate) fn short_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind().to_string();
        }
        if let Some(http) = cause.downcast_ref::<reqwest::Error>()
            && http.is_timeout()
        {
            return "timed out".to_owned();
        }
        source = cause.source();
    }
    "transport error".to_owned()
}

/// An error and its causes, `outer: inner: root`, which is where reqwest
/// keeps the useful part ("Connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_hints_in_seconds_or_milliseconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&dated), None);
    }

    #[test]
    fn local_models_bypass_proxies() {
        for (url, local) in [
            ("http://localhost:11434/v1", true),
            ("http://127.0.0.1:8000/v1", true),
            ("http://[::1]:8000/v1", true),
            ("https://api.openai.com/v1", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).expect("url")), local, "{url}");
        }
    }
}
