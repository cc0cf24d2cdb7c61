//! Every string and bytes field of every request is held to its length
//! limit at the edge: read from the request messages' own descriptors (so a
//! field added to the proto without a limit fails here), each field
//! overfilled in turn through a real gRPC client is refused naming the field
//! and the limit, audited, and never reaches KMS.

use std::collections::BTreeSet;
use std::sync::Arc;

use keybroker::custody::kms::Kms;
use keybroker::edge::rpc::bounds::{self, Fields, Limit, Value, Walk};
use keybroker::pb;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::{Code, Status};

use crate::support::broker::{TestBroker, local_config, local_keyring};
use crate::support::kms::ScriptedKms;

/// The `keybroker.v1` descriptors.
struct Schema(FileDescriptorSet);

impl Schema {
    fn load() -> Schema {
        Schema(FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap())
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        let short = name.trim_start_matches(".keybroker.v1.");
        let file = self.0.file.iter().find(|f| f.package() == "keybroker.v1").unwrap();
        let (outer, nested) = short.split_once('.').map_or((short, None), |(o, n)| (o, Some(n)));
        let message = file.message_type.iter().find(|m| m.name() == outer).unwrap();
        match nested {
            None => message,
            Some(inner) => message.nested_type.iter().find(|m| m.name() == inner).unwrap(),
        }
    }

    fn is_map(&self, type_name: &str) -> bool {
        self.message(type_name).options.as_ref().is_some_and(|o| o.map_entry())
    }

    /// The encoding of `name` with every message field present, one element
    /// in every repeated field and map, and every scalar empty.
    fn full(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for field in &self.message(name).field {
            let number = u32::try_from(field.number()).unwrap();
            let body = match field.r#type() {
                Type::String | Type::Bytes => Vec::new(),
                Type::Message => self.full(field.type_name()),
                _ => continue,
            };
            encode_key(number, WireType::LengthDelimited, &mut out);
            encode_varint(body.len() as u64, &mut out);
            out.extend(body);
        }
        out
    }

    /// The path of every string and bytes field reachable from `name`, as
    /// the walk names them in a [`Schema::full`] message.
    fn paths(&self, name: &str, prefix: &str, out: &mut BTreeSet<String>) {
        for field in &self.message(name).field {
            let mut path =
                if prefix.is_empty() { field.name().to_owned() } else { format!("{prefix}.{}", field.name()) };
            match field.r#type() {
                Type::String | Type::Bytes => {
                    if field.label() == Label::Repeated {
                        path.push_str("[0]");
                    }
                    out.insert(path);
                }
                Type::Message if self.is_map(field.type_name()) => self.paths(field.type_name(), &path, out),
                Type::Message => {
                    if field.label() == Label::Repeated {
                        path.push_str("[0]");
                    }
                    self.paths(field.type_name(), &path, out);
                }
                _ => {}
            }
        }
    }
}

/// Every field the walk reports, with its limit.
fn walked<M: Fields>(message: &mut M, root: &str) -> Vec<(String, Limit)> {
    let mut fields = Vec::new();
    message.walk(&mut Walk::new(root, &mut |path: &str, limit, _: Value<'_>| fields.push((path.to_owned(), limit))));
    fields
}

/// `message` with the field at `target` filled to `len` bytes.
fn filled<M: Fields + Clone>(message: &M, root: &str, target: &str, len: usize) -> M {
    let mut message = message.clone();
    let mut found = false;
    message.walk(&mut Walk::new(root, &mut |path: &str, _, value: Value<'_>| {
        if path == target {
            found = true;
            match value {
                Value::Text(text) => *text = "a".repeat(len),
                Value::Bytes(bytes) => *bytes = vec![7; len],
            }
        }
    }));
    assert!(found, "{target}");
    message
}

struct Bench {
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    kms: Arc<ScriptedKms>,
    broker: TestBroker,
}

impl Bench {
    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Checks the walk of the message `name` against its descriptor, then
/// sends it once per field with that field one byte over its limit.
async fn refuses_every_oversize_field<M>(
    bench: &Bench,
    schema: &Schema,
    name: &str,
    root: &str,
    rpc: &str,
    mut call: impl AsyncFnMut(M) -> Status,
) where
    M: Fields + prost::Message + Default + Clone,
{
    let full = M::decode(schema.full(name).as_slice()).unwrap();
    let fields = walked(&mut full.clone(), root);
    let mut expected = BTreeSet::new();
    schema.paths(name, root, &mut expected);
    let walked_paths: BTreeSet<String> = fields.iter().map(|(path, _)| path.clone()).collect();
    assert_eq!(walked_paths, expected, "the limits of {name} and its fields differ");

    for (path, limit) in fields {
        let max = limit.max_bytes();
        let mut at_limit = filled(&full, root, &path, max);
        assert!(bounds::check(&mut at_limit, root).is_ok(), "{path} refused at its limit of {max} bytes");

        let (records, kms_calls) = (bench.audit_records().len(), bench.kms.count());
        let status = call(filled(&full, root, &path, max + 1)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {}", status.message());
        let expected = format!("{path}: must be at most {max} bytes ({}), got {}", limit.what(), max + 1);
        assert_eq!(status.message(), expected);
        // (The broker's start made one KMS call of its own: the audit chain key.)
        assert_eq!(bench.kms.count(), kms_calls, "{path} over its limit reached KMS");

        let audit = bench.audit_records();
        assert_eq!(audit.len(), records + 1, "{path}: one audit record per refusal");
        let record = audit.last().unwrap();
        assert_eq!((record["rpc"].as_str(), record["code"].as_str()), (Some(rpc), Some("InvalidArgument")), "{path}");
        assert_eq!(record["message"], expected, "{path}");
    }
}

async fn first_error<T>(answer: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Status {
    match answer {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.err().unwrap_or_else(|| Status::ok("no error")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_field_over_its_limit_is_refused_by_name_audited_and_never_reaches_kms() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    let audit = dir.path().join("audit.jsonl");
    config.audit.file = Some(audit.clone());
    let kms = ScriptedKms::counting(local_keyring(&config));
    let broker = TestBroker::start(config, Some(kms.clone() as Arc<dyn Kms>)).await;
    let bench = Bench { _dir: dir, audit, kms, broker };
    let schema = Schema::load();
    let client = bench.broker.client().await;

    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "IssueDataKeyRequest",
        "",
        "IssueDataKey",
        async |req: pb::IssueDataKeyRequest| c.clone().issue_data_key(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(&bench, &schema, "WrapKeyRequest", "", "WrapKey", async |req: pb::WrapKeyRequest| {
        c.clone().wrap_key(req).await.unwrap_err()
    })
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "UnwrapKeyRequest",
        "",
        "UnwrapKey",
        async |req: pb::UnwrapKeyRequest| c.clone().unwrap_key(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "SubmitEncryptedJobRequest",
        "",
        "SubmitEncryptedJob",
        async |req: pb::SubmitEncryptedJobRequest| c.clone().submit_encrypted_job(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "CheckPipelineRequest",
        "",
        "CheckPipeline",
        async |req: pb::CheckPipelineRequest| c.clone().check_pipeline(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "ConnectPipelineRequest",
        "",
        "ConnectPipeline",
        async |req: pb::ConnectPipelineRequest| c.clone().connect_pipeline(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "CheckMediaConvertRoleRequest",
        "",
        "CheckMediaConvertRole",
        async |req: pb::CheckMediaConvertRoleRequest| c.clone().check_media_convert_role(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "ConnectMediaConvertRoleRequest",
        "",
        "ConnectMediaConvertRole",
        async |req: pb::ConnectMediaConvertRoleRequest| c.clone().connect_media_convert_role(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "EncryptObjectStart",
        "start",
        "EncryptObject",
        async |start: pb::EncryptObjectStart| {
            let message = pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) };
            first_error(c.clone().encrypt_object(futures::stream::iter([message])).await).await
        },
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "DecryptObjectStart",
        "start",
        "DecryptObject",
        async |start: pb::DecryptObjectStart| {
            let message = pb::DecryptObjectRequest { message: Some(pb::decrypt_object_request::Message::Start(start)) };
            first_error(c.clone().decrypt_object(futures::stream::iter([message])).await).await
        },
    )
    .await;

    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "LookupKeysRequest",
        "",
        "LookupKeys",
        async |req: pb::LookupKeysRequest| c.clone().lookup_keys(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "RewrapKeysRequest",
        "",
        "RewrapKeys",
        async |req: pb::RewrapKeysRequest| c.clone().rewrap_keys(req).await.unwrap_err(),
    )
    .await;
    let c = client.clone();
    refuses_every_oversize_field(
        &bench,
        &schema,
        "SubmitMediaConvertJobRequest",
        "",
        "SubmitMediaConvertJob",
        async |req: pb::SubmitMediaConvertJobRequest| c.clone().submit_media_convert_job(req).await.unwrap_err(),
    )
    .await;

    // The object streams' other fields are their chunks, which the server's
    // message limit bounds; the start is the whole of the rest.
    for name in ["EncryptObjectRequest", "DecryptObjectRequest"] {
        let fields: Vec<&str> = schema.message(name).field.iter().map(|f| f.name()).collect();
        assert_eq!(fields, ["start", "chunk"], "{name}");
    }
}
