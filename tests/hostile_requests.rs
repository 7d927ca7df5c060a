//! Requests built to hurt: absurd deadlines, thousands of bad fields,
//! bytes that are not protobuf.

mod common;
mod raw_h2;

use agentstream::pb::{self, StreamChatRequest};
use bytes::{BufMut, BytesMut};
use common::{TestServer, user};
use futures::StreamExt;
use raw_h2::RawClient;
use tonic_types::StatusExt;

fn short() -> StreamChatRequest {
    StreamChatRequest {
        messages: vec![user("go")],
        model: "synthetic".into(),
        max_tokens: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn absurd_grpc_timeouts_are_saturated_not_a_panic() {
    let server = TestServer::start().await;
    for timeout in [
        "18446744073709551615S",
        "9223372036854775807S",
        "5124095576030431H",
        "99999999H",
        "18446744073709551615n",
    ] {
        let mut request = tonic::Request::new(short());
        request
            .metadata_mut()
            .insert("grpc-timeout", timeout.parse().expect("ascii"));
        let mut stream = server
            .chat()
            .stream_chat(request)
            .await
            .unwrap_or_else(|status| panic!("{timeout}: {status:?}"))
            .into_inner();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            chunk.unwrap_or_else(|status| panic!("{timeout}: {status:?}"));
            chunks += 1;
        }
        assert!(chunks >= 3, "{timeout}: {chunks} chunks");
    }
}

#[tokio::test]
async fn thousands_of_violations_give_a_small_error() {
    let server = TestServer::start().await;
    // 2,000 empty stop sequences... only 4 are allowed, and each is wrong.
    let request = StreamChatRequest {
        stop: vec![String::new(); 2_000],
        messages: vec![
            pb::ChatMessage {
                role: 0,
                content: String::new(),
                name: "x".repeat(1_000),
                ..Default::default()
            };
            500
        ],
        ..short()
    };
    let status = server
        .chat()
        .stream_chat(request)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = status.get_details_bad_request().expect("BadRequest");
    assert!(
        details.field_violations.len() <= 21,
        "{} listed",
        details.field_violations.len()
    );
    let last = details.field_violations.last().expect("a count");
    assert_eq!(last.field, "request");
    assert!(
        last.description.contains("more violations not listed"),
        "{last:?}"
    );
    // The trailers: message + details, well under gRPC's 8 KiB default.
    let size = status.message().len() + status.details().len() * 4 / 3;
    assert!(size < 4096, "{size} bytes of error trailers");
    // The message names the first violation and a count, not the list.
    assert!(status.message().len() < 512, "{}", status.message());
    assert!(
        status
            .message()
            .contains(&details.field_violations[0].field)
    );
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.server.local_addr(), 65_535).await;
    // A length-prefixed gRPC message whose bytes are not protobuf: field 1
    // as a length-delimited value longer than the message.
    let garbage: &[u8] = &[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(garbage.len() as u32);
    frame.put_slice(garbage);
    let (response, _body) = client
        .call_raw("/agentstream.v1.ChatService/StreamChat", frame.freeze())
        .await;
    let response = response.await.expect("response");
    let map = if response.headers().contains_key("grpc-status") {
        response.headers().clone()
    } else {
        let mut body = response.into_body();
        while body.data().await.is_some() {}
        body.trailers().await.expect("trailers").expect("some")
    };
    let status = tonic::Status::from_header_map(&map).expect("a grpc-status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Like any bad argument, with a BadRequest detail (the field is the
    // request as a whole: these bytes are not protobuf at all).
    let bad = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    assert_eq!(bad.field_violations.len(), 1);
    assert!(
        bad.field_violations[0]
            .description
            .contains("not a valid protobuf message"),
        "{bad:?}"
    );
}
