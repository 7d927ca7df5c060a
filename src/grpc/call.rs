//! The gRPC side of a call: what the server reads off tonic's request
//! (request id, `grpc-timeout`) and how results go back as tonic responses.
//!
//! The call's bookkeeping itself (span, deadline, drain, admission, the
//! closing log line) is protocol-free and lives in [`crate::server::call`];
//! this file only adapts it to tonic.

use std::time::Duration;

use futures::{
    Stream, TryStreamExt,
    stream::{BoxStream, MapErr},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    error::{Error, Result},
    server::{
        Call, CallMeta, CallStream, Calls, ConnectionStreams, Method, auth::Caller,
        call::REQUEST_ID_HEADER,
    },
    telemetry,
};

/// The response stream of every streaming RPC: the call's stream with its
/// errors converted to `Status` (named once, as tonic's examples do).
pub(crate) type GrpcStream<T> = GrpcStreamOf<BoxStream<'static, Result<T>>>;

/// [`GrpcStream`] over a named, unboxed stream of items.
pub(crate) type GrpcStreamOf<S> = MapErr<CallStream<S>, fn(Error) -> Status>;

/// Starts the call of `method` for `request`.
pub(crate) fn start<T>(calls: &Calls, method: Method, request: &Request<T>) -> Call {
    let metadata = request.metadata();
    let request_id = metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let call = calls.start(
        method,
        CallMeta {
            request_id,
            timeout: grpc_timeout(metadata),
            caller: request.extensions().get::<Caller>(),
            connection: request.extensions().get::<ConnectionStreams>(),
        },
    );
    telemetry::accept_trace_context(call.span(), metadata.as_ref());
    call
}

/// A unary call's result as tonic's response.
pub(crate) fn unary<T>(call: Call, result: Result<T>) -> Result<Response<T>, Status> {
    call.unary(result).map(Response::new).map_err(Status::from)
}

/// A streaming call's response: the stream, or the error that refused it.
pub(crate) fn stream<S, T>(
    result: Result<CallStream<S>>,
) -> Result<Response<GrpcStreamOf<S>>, Status>
where
    S: Stream<Item = Result<T>> + Unpin,
{
    match result {
        Ok(items) => Ok(Response::new(
            items.map_err(Status::from as fn(Error) -> Status),
        )),
        Err(error) => Err(error.into()),
    }
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        grpc_timeout(&metadata)
    }

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(timeout_of("10x"), None);
        assert_eq!(timeout_of("m"), None);
    }
}
