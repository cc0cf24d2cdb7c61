//! The protobuf codec of the `keybroker.v1` service: prost's, except that a
//! body that is not a valid message is the sender's fault.
//!
//! tonic's prost codec answers an undecodable body (a bad varint, a wrong
//! wire type, a truncated length, invalid UTF-8 in a string, nesting past
//! prost's recursion limit) with `INTERNAL`. Here it is `INVALID_ARGUMENT`
//! naming the message type, and the status carries a [`UNDECODABLE`] mark
//! so the admission layer can audit calls that ended before their handler.
//! prost's description of the fault is kept; it quotes none of the body.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// The metadata key marking a status made here (stripped before it leaves).
pub const UNDECODABLE: &str = "x-keybroker-undecodable";

/// prost's codec with `INVALID_ARGUMENT` for undecodable bodies (see the module documentation).
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes `U`, answering `INVALID_ARGUMENT` for a body that is not one.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes one `U` from `buf`, or answers why the bytes are not one.
fn decode_message<U: Message + Default>(buf: impl bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|e| undecodable(message_name::<U>(), &e))
}

/// `keybroker.v1.NAME` for a generated message type.
fn message_name<U>() -> String {
    let rust = std::any::type_name::<U>();
    format!("keybroker.v1.{}", rust.rsplit("::").next().unwrap_or(rust))
}

/// The status of a body that is not a valid `message`.
fn undecodable(message: String, error: &prost::DecodeError) -> Status {
    let mut status = Status::invalid_argument(format!("the body is not a valid {message} message: {error}"));
    status.metadata_mut().insert(UNDECODABLE, tonic::metadata::MetadataValue::from_static("1"));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::pb;

    fn decode(bytes: &[u8]) -> Result<pb::IssueDataKeyRequest, Status> {
        decode_message(bytes)
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_invalid_argument_naming_the_message() {
        // Field 1 as a varint whose continuation bit never ends.
        for body in [&[0x08, 0xff, 0xff][..], &[0x0a, 0x10, b'a'], &[0x0a, 0x02, 0xff, 0xfe], &[0x0f]] {
            let status = decode(body).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{body:?}: {status:?}");
            assert!(
                status.message().starts_with("the body is not a valid keybroker.v1.IssueDataKeyRequest message: "),
                "{}",
                status.message()
            );
            assert!(status.metadata().get(UNDECODABLE).is_some());
        }
        assert!(decode(&[]).is_ok(), "an empty body is the default message");
    }
}
