//! The gRPC codec of every generated service and client: prost, with
//! response batches capped at [`YIELD_THRESHOLD`] bytes, and malformed
//! messages answered with INVALID_ARGUMENT.
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
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode buffer (two chunks).
pub(crate) const ENCODE_BUFFER: usize = 256;

/// Encoded bytes batched before they are handed to HTTP/2.
pub(crate) const YIELD_THRESHOLD: usize = 8 * 1024;

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
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClientFaultDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// prost decoding, with undecodable messages reported as INVALID_ARGUMENT.
#[derive(Debug)]
pub(crate) struct ClientFaultDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ClientFaultDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "the request is not a valid protobuf message: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
