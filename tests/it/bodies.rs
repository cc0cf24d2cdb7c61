//! Request bodies that are not what they claim: bytes that are not a
//! protobuf message, and messages over the size limit, sent by a real
//! gRPC client (tonic's, with a codec that sends the bytes as given).
//! Each is the caller's fault: `INVALID_ARGUMENT` naming the message type,
//! or `RESOURCE_EXHAUSTED` naming the limit, and each call is audited.

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::support::broker::{TestBroker, local_config};

/// Sends its message bytes as they are; reads answers as bytes.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Bodies that are not an `IssueDataKeyRequest`, by what is wrong.
fn not_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    let mut nested = vec![0x7b; 5000]; // 5,000 start-group tags of field 15
    nested.extend(vec![0x7c; 5000]);
    vec![
        ("invalid varint", vec![0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ("wrong wire type", vec![0x0d, 1, 2, 3, 4]), // kms_key_id (a string) as fixed32
        ("truncated length", vec![0x0a, 0x10, b'a']),
        ("invalid UTF-8", vec![0x1a, 0x02, 0xff, 0xfe]), // mode
        ("5,000 nested groups", nested),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_protobuf_are_invalid_argument_and_oversize_ones_resource_exhausted_all_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    let audit = dir.path().join("audit.jsonl");
    config.audit.file = Some(audit.clone());
    config.limits.max_message_bytes = MAX_MESSAGE_BYTES;
    let broker = TestBroker::start(config, None).await;
    let mut grpc = tonic::client::Grpc::new(broker.channel().await);
    let path = PathAndQuery::from_static("/keybroker.v1.KeyBroker/IssueDataKey");

    let mut expected = Vec::new();
    for (what, body) in not_protobuf() {
        grpc.ready().await.unwrap();
        let err = grpc.unary(tonic::Request::new(Bytes::from(body)), path.clone(), RawCodec).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("the body is not a valid keybroker.v1.IssueDataKeyRequest message"),
            "{what}: {}",
            err.message()
        );
        assert!(err.metadata().get("x-keybroker-undecodable").is_none(), "the internal mark stays inside");
        expected.push(("InvalidArgument", err.message().to_owned()));
    }

    // Over the limit: a well-formed message with a long mode string.
    let mut big = vec![0x1a];
    let len = MAX_MESSAGE_BYTES + 10;
    prost::encoding::encode_varint(len as u64, &mut big);
    big.extend(std::iter::repeat_n(b'a', len));
    grpc.ready().await.unwrap();
    let err = grpc.unary(tonic::Request::new(Bytes::from(big)), path.clone(), RawCodec).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(&format!("limit of {MAX_MESSAGE_BYTES} bytes (limits.max_message_bytes)")),
        "{}",
        err.message()
    );
    expected.push(("ResourceExhausted", err.message().to_owned()));

    // A stream message that is not protobuf ends the stream the same way.
    let stream_path = PathAndQuery::from_static("/keybroker.v1.KeyBroker/EncryptObject");
    grpc.ready().await.unwrap();
    let messages = futures::stream::iter([Bytes::from_static(&[0x0a, 0x10, b'a'])]);
    let outcome = match grpc.streaming(tonic::Request::new(messages), stream_path, RawCodec).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(outcome.code(), Code::InvalidArgument, "{outcome:?}");
    assert!(outcome.message().contains("keybroker.v1.EncryptObjectRequest"), "{}", outcome.message());

    // Every one of them is in the audit log with the status it answered.
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let unary: Vec<_> = records.iter().filter(|r| r["rpc"] == "IssueDataKey").collect();
    assert_eq!(unary.len(), expected.len(), "{records:#?}");
    for (record, (code, message)) in unary.iter().zip(&expected) {
        assert_eq!(record["code"], *code);
        assert_eq!(record["message"], message.as_str());
        assert_eq!(record["identity"], "anonymous");
    }
    assert!(records.iter().any(|r| r["rpc"] == "EncryptObject" && r["code"] == "InvalidArgument"), "{records:#?}");
}
