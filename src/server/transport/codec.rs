//! The gRPC codec of every generated service and client: prost, with
//! response batches capped at [`YIELD_THRESHOLD`] bytes, and malformed
//! messages answered with INVALID_ARGUMENT and a BadRequest detail.
//! StreamChat and ResumeStream send their chunks with [`ChunkCodec`]: the
//! same, but each call's chunks are written by a [`ChunkWriter`] (it keeps
//! the call's repeated fields encoded, see `pb/chunk.rs`).
//!
//! A message that is not valid protobuf is the client's fault; tonic's
//! prost decoder reports it as INTERNAL, which the API reserves for the
//! server's own bugs.
//!
//! tonic encodes ready messages into one buffer and hands it to HTTP/2 once
//! it passes the threshold (32 KiB by default). A stream whose client has
//! stopped reading keeps that batch and the next one alive, so the
//! threshold is part of what one stream may hold; 8 KiB batches keep it
//! small while still carrying hundreds of chunks per DATA frame.
//!
//! Each call's encode buffer starts at [`ENCODE_BUFFER`] bytes and lives as
//! long as the call, so with ten thousand paced streams its size counts
//! (tonic's default is 8 KiB; this was 4 KiB before). A chunk is about a
//! hundred bytes, and once HTTP/2 has sent what was split off the buffer,
//! the next chunks reuse the same memory; a fast stream's batch grows past
//! it by doubling, as any `BytesMut` does (one fast stream measured the
//! same instructions a chunk with 1 KiB and with 256 bytes).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::{
    error::{Error, FieldViolation},
    pb::{ChunkWriter, StreamChatResponseOut},
};

/// Initial size of a call's encode buffer (two chunks).
pub(crate) const ENCODE_BUFFER: usize = 256;

/// Encoded bytes batched before they are handed to HTTP/2.
pub(crate) const YIELD_THRESHOLD: usize = 8 * 1024;

/// The encoding side of every codec here: [`ENCODE_BUFFER`] bytes to start,
/// batches of [`YIELD_THRESHOLD`].
fn encoding() -> BufferSettings {
    BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
}

/// prost encoding with [`YIELD_THRESHOLD`] batches (named by `build.rs`).
#[derive(Debug, Clone)]
pub(crate) struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ClientFaultDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(encoding())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFaultDecoder::new()
    }
}

/// [`BoundedCodec`] for the methods that send chat chunks (named by
/// `build.rs`): requests of type `U`, [`StreamChatResponseOut`] responses.
#[derive(Debug, Clone)]
pub(crate) struct ChunkCodec<U>(PhantomData<U>);

impl<U> Default for ChunkCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<U: Message + Default + Send + 'static> Codec for ChunkCodec<U> {
    type Encode = StreamChatResponseOut;
    type Decode = U;
    type Encoder = ChunkEncoder;
    type Decoder = ClientFaultDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ChunkEncoder(ChunkWriter::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFaultDecoder::new()
    }
}

/// One call's chunk encoder.
#[derive(Debug)]
pub(crate) struct ChunkEncoder(ChunkWriter);

impl Encoder for ChunkEncoder {
    type Item = StreamChatResponseOut;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.0.write(item, dst).map_err(|bug| {
            // tonic ends the call with this status; the server's own log
            // must say why, since no stream error will.
            tracing::error!(error = %bug, "a chat chunk could not be written");
            Error::Internal(bug.to_string()).into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        encoding()
    }
}

/// prost decoding, with undecodable messages reported as INVALID_ARGUMENT.
#[derive(Debug)]
pub(crate) struct ClientFaultDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Send + 'static> ClientFaultDecoder<U> {
    fn new() -> Self {
        Self(ProstCodec::<U, U>::raw_decoder(BufferSettings::default()))
    }
}

impl<U: Message + Default> Decoder for ClientFaultDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Error::InvalidArgument(vec![undecodable(status.message())]).into()
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The violation of a request prost could not decode, from its error
/// (`failed to decode Protobuf message: ChatMessage.content:
/// StreamChatRequest.messages: invalid string value: ...`, innermost field
/// first): the field's path (`messages.content`), or `""` (the request as
/// a whole) when the bytes are not protobuf at all.
fn undecodable(prost_error: &str) -> FieldViolation {
    let mut rest = prost_error
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(prost_error);
    let is_name =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut fields = Vec::new();
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        // Field names are Rust's (`r#type` for `type`).
        let field = field.trim_start_matches("r#");
        if !(is_name(message) && is_name(field)) {
            break;
        }
        fields.push(field);
        rest = tail;
    }
    fields.reverse();
    FieldViolation::new(
        fields.join("."),
        format!("the request is not a valid protobuf message: {rest}"),
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    #[test]
    fn an_undecodable_request_names_the_field_it_broke_at() {
        // messages[0].content with bytes that are not UTF-8.
        let mut bytes = pb::StreamChatRequest {
            messages: vec![pb::ChatMessage {
                content: "\u{ff}".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let at = bytes
            .iter()
            .rposition(|&b| b == 0xbf)
            .expect("the UTF-8 of ÿ");
        bytes[at] = 0xff;
        let error = pb::StreamChatRequest::decode(bytes.as_slice()).expect_err("not UTF-8");
        let violation = undecodable(&error.to_string());
        assert_eq!(violation.field, "messages.content");
        assert!(
            violation
                .description
                .contains("not a valid protobuf message: invalid string value"),
            "{}",
            violation.description
        );

        let garbage = pb::StreamChatRequest::decode(&[0xff, 0xff, 0xff][..]).expect_err("garbage");
        let violation = undecodable(&garbage.to_string());
        assert_eq!(violation.field, "");
        assert!(
            violation
                .description
                .starts_with("the request is not a valid protobuf message")
        );
    }
}
