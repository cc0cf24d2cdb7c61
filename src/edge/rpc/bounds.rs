//! The length of every string and bytes field of every request, bounded
//! before anything parses it: one table of limits ([`Limit`]), and for each
//! request message the list of its fields and their limits ([`Fields`]).
//!
//! Owns the ceilings only; the rules of each field (a mode's values, ET's
//! 255-character output keys) stay with the parsers and the ET model, and
//! every limit here lies at or above what those rules accept, so a valid
//! request never meets one. Object chunks are bounded by the server's
//! message limit (`limits.max_message_bytes`) instead, which tonic enforces
//! before a message is decoded.
//!
//! Must never repeat a refused value: the answer names the field, the limit
//! and the length, nothing of the value. A bytes field may be key material
//! (`WrapKeyRequest.plaintext_key`, `PlayReadyDrm.content_key`): a refused
//! request has every bytes field wiped before it is dropped.

use std::collections::HashMap;

use tonic::Status;
use zeroize::Zeroize;

use crate::custody::field::FieldError;
use crate::edge::pb;

/// The kinds of request field, each with the most bytes it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A KMS key id, key ARN, alias name or alias ARN: KMS's own limit.
    KmsKeyId,
    /// A word from a short list or grammar: a mode, method, format, policy,
    /// GUID, pipeline or preset id, a frame rate, size or time.
    Word,
    /// Base64 of a KMS ciphertext (KMS ciphertexts are at most 6144 bytes).
    WrappedKey,
    /// Base64 of an MD5 digest or an IV: ET's 255 characters.
    ShortBase64,
    /// AES key material: the longest AES key.
    KeyBytes,
    /// A raw IV: ET's 16 bytes.
    IvBytes,
    /// An S3 object key, key pattern or prefix: S3's limit.
    ObjectKey,
    /// An S3 bucket name: S3's limit.
    Bucket,
    /// Free text ET bounds at 255 or 256 characters (names, labels, user
    /// metadata), in UTF-8.
    Text,
    /// A URL ET bounds at 512 characters, in UTF-8.
    Url,
    /// A whole MediaConvert CreateJob document, JSON.
    JobDocument,
    /// An IAM role ARN: IAM's limit.
    RoleArn,
}

impl Limit {
    /// Every limit, for documentation and tests.
    pub const ALL: [Limit; 12] = [
        Limit::KmsKeyId,
        Limit::Word,
        Limit::WrappedKey,
        Limit::ShortBase64,
        Limit::KeyBytes,
        Limit::IvBytes,
        Limit::ObjectKey,
        Limit::Bucket,
        Limit::Text,
        Limit::Url,
        Limit::JobDocument,
        Limit::RoleArn,
    ];

    /// The most bytes a field of this kind may hold.
    pub const fn max_bytes(self) -> usize {
        match self {
            Limit::KmsKeyId => 2048,
            Limit::Word => 64,
            Limit::WrappedKey => 8192,
            Limit::ShortBase64 => 255,
            Limit::KeyBytes => 32,
            Limit::IvBytes => 16,
            Limit::ObjectKey => 1024,
            Limit::Bucket => 63,
            Limit::Text => 1024,
            Limit::Url => 2048,
            Limit::JobDocument => 256 * 1024,
            Limit::RoleArn => 2048,
        }
    }

    /// What the limit bounds, as a status message says it.
    pub const fn what(self) -> &'static str {
        match self {
            Limit::KmsKeyId => "a KMS key id, ARN or alias",
            Limit::Word => "a word of the field's grammar",
            Limit::WrappedKey => "base64 of a KMS ciphertext",
            Limit::ShortBase64 => "base64 of a digest or IV",
            Limit::KeyBytes => "the longest AES key",
            Limit::IvBytes => "an IV",
            Limit::ObjectKey => "an S3 object key",
            Limit::Bucket => "an S3 bucket name",
            Limit::Text => "255 characters of UTF-8",
            Limit::Url => "512 characters of UTF-8",
            Limit::JobDocument => "a MediaConvert job document",
            Limit::RoleArn => "an IAM role ARN",
        }
    }
}

/// A string or bytes field as the walk hands it over.
pub enum Value<'a> {
    /// A `string` field.
    Text(&'a mut String),
    /// A `bytes` field.
    Bytes(&'a mut Vec<u8>),
}

impl Value<'_> {
    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Text(text) => text.len(),
            Value::Bytes(bytes) => bytes.len(),
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a walk does with each field: given its path (as the caller wrote
/// it, `outputs[2].encryption.encryption.key`), its limit and its value.
pub type Visit<'v> = dyn FnMut(&str, Limit, Value<'_>) + 'v;

/// A walk over a message's fields, keeping the path to the current one.
pub struct Walk<'v, 'f> {
    path: String,
    visit: &'v mut Visit<'f>,
}

impl<'v, 'f> Walk<'v, 'f> {
    /// A walk from `root` (empty, or `start` for a stream's first message).
    pub fn new(root: &str, visit: &'v mut Visit<'f>) -> Self {
        Walk { path: root.to_owned(), visit }
    }

    /// Runs `inner` with `name` appended to the path.
    fn within(&mut self, name: &str, inner: impl FnOnce(&mut Self)) {
        let len = self.path.len();
        if !self.path.is_empty() && !name.starts_with('[') {
            self.path.push('.');
        }
        self.path.push_str(name);
        inner(self);
        self.path.truncate(len);
    }

    /// A `string` field.
    pub fn text(&mut self, name: &str, limit: Limit, value: &mut String) {
        self.within(name, |walk| (walk.visit)(&walk.path, limit, Value::Text(value)));
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, name: &str, limit: Limit, value: &mut Vec<u8>) {
        self.within(name, |walk| (walk.visit)(&walk.path, limit, Value::Bytes(value)));
    }

    /// A `repeated string` field.
    pub fn texts(&mut self, name: &str, limit: Limit, values: &mut [String]) {
        self.within(name, |walk| {
            for (index, value) in values.iter_mut().enumerate() {
                walk.text(&format!("[{index}]"), limit, value);
            }
        });
    }

    /// A message field, when present.
    pub fn message<M: Fields>(&mut self, name: &str, value: Option<&mut M>) {
        if let Some(message) = value {
            self.within(name, |walk| message.walk(walk));
        }
    }

    /// A `repeated` message field.
    pub fn messages<M: Fields>(&mut self, name: &str, values: &mut [M]) {
        self.within(name, |walk| {
            for (index, message) in values.iter_mut().enumerate() {
                walk.message(&format!("[{index}]"), Some(message));
            }
        });
    }

    /// A `map<string, string>` field: its keys at `name.key`, its values at
    /// `name.value` (the map entry's own field names).
    pub fn map(&mut self, name: &str, limit: Limit, map: &mut HashMap<String, String>) {
        let mut entries: Vec<(String, String)> = std::mem::take(map).into_iter().collect();
        self.within(name, |walk| {
            for (key, value) in &mut entries {
                walk.text("key", limit, key);
                walk.text("value", limit, value);
            }
        });
        map.extend(entries);
    }
}

/// A request message whose string and bytes fields have limits. The walk
/// hands out each field mutably, so that the one list of a message's
/// fields serves both the check and the tests that overfill each field.
pub trait Fields {
    /// Hands every string and bytes field, nested ones included, to `walk`.
    fn walk(&mut self, walk: &mut Walk<'_, '_>);
}

/// Checks every string and bytes field of `message` against its limit,
/// naming fields from `root` (empty, or `start` for a stream's first
/// message).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its limit, the limit and
/// the field's length; the message's bytes fields are wiped then.
pub fn check<M: Fields>(message: &mut M, root: &str) -> Result<(), Status> {
    let mut first: Option<FieldError> = None;
    let mut visit = |path: &str, limit: Limit, value: Value<'_>| {
        if first.is_none() && value.len() > limit.max_bytes() {
            first = Some(FieldError::new(
                path,
                format!("must be at most {} bytes ({}), got {}", limit.max_bytes(), limit.what(), value.len()),
            ));
        }
    };
    message.walk(&mut Walk::new(root, &mut visit));
    let Some(err) = first else {
        return Ok(());
    };
    let mut wipe = |_: &str, _: Limit, value: Value<'_>| {
        if let Value::Bytes(bytes) = value {
            bytes.zeroize();
        }
    };
    message.walk(&mut Walk::new(root, &mut wipe));
    Err(Status::invalid_argument(err.to_string()))
}

impl Fields for pb::Encryption {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("mode", Limit::Word, &mut self.mode);
        walk.text("key", Limit::WrappedKey, &mut self.key);
        walk.text("key_md5", Limit::ShortBase64, &mut self.key_md5);
        walk.text("initialization_vector", Limit::ShortBase64, &mut self.initialization_vector);
    }
}

impl Fields for pb::IssueDataKeyRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
        walk.text("mode", Limit::Word, &mut self.mode);
    }
}

impl Fields for pb::WrapKeyRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
        walk.bytes("plaintext_key", Limit::KeyBytes, &mut self.plaintext_key);
        walk.text("mode", Limit::Word, &mut self.mode);
        walk.bytes("initialization_vector", Limit::IvBytes, &mut self.initialization_vector);
    }
}

impl Fields for pb::UnwrapKeyRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.message("encryption", self.encryption.as_mut());
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
    }
}

impl Fields for pb::S3Location {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("bucket", Limit::Bucket, &mut self.bucket);
        walk.text("key", Limit::ObjectKey, &mut self.key);
    }
}

impl Fields for pb::EncryptObjectStart {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("mode", Limit::Word, &mut self.mode);
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
        walk.message("source", self.source.as_mut());
        walk.message("destination", self.destination.as_mut());
        walk.text("request_token", Limit::Word, &mut self.request_token);
    }
}

impl Fields for pb::DecryptObjectStart {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.message("encryption", self.encryption.as_mut());
        walk.message("source", self.source.as_mut());
        walk.message("destination", self.destination.as_mut());
    }
}

impl Fields for pb::SubmitMediaConvertJobRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("create_job_json", Limit::JobDocument, &mut self.create_job_json);
        walk.messages("input_keys", &mut self.input_keys);
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
        walk.text("request_token", Limit::Word, &mut self.request_token);
    }
}

impl Fields for pb::MediaConvertInputKey {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("key_fingerprint", Limit::Word, &mut self.key_fingerprint);
    }
}

impl Fields for pb::SubmitEncryptedJobRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("pipeline_id", Limit::Word, &mut self.pipeline_id);
        walk.message("input", self.input.as_mut());
        walk.messages("inputs", &mut self.inputs);
        walk.message("output", self.output.as_mut());
        walk.messages("outputs", &mut self.outputs);
        walk.text("output_key_prefix", Limit::ObjectKey, &mut self.output_key_prefix);
        walk.messages("playlists", &mut self.playlists);
        walk.map("user_metadata", Limit::Text, &mut self.user_metadata);
        walk.text("kms_key_id", Limit::KmsKeyId, &mut self.kms_key_id);
        walk.text("request_token", Limit::Word, &mut self.request_token);
    }
}

impl Fields for pb::Protection {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::TimeSpan {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("start_time", Limit::Word, &mut self.start_time);
        walk.text("duration", Limit::Word, &mut self.duration);
    }
}

impl Fields for pb::CaptionSource {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("key", Limit::ObjectKey, &mut self.key);
        walk.text("language", Limit::Text, &mut self.language);
        walk.text("time_offset", Limit::Word, &mut self.time_offset);
        walk.text("label", Limit::Text, &mut self.label);
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::InputCaptions {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("merge_policy", Limit::Word, &mut self.merge_policy);
        walk.messages("caption_sources", &mut self.caption_sources);
    }
}

impl Fields for pb::JobInput {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("key", Limit::ObjectKey, &mut self.key);
        walk.text("frame_rate", Limit::Word, &mut self.frame_rate);
        walk.text("resolution", Limit::Word, &mut self.resolution);
        walk.text("aspect_ratio", Limit::Word, &mut self.aspect_ratio);
        walk.text("interlaced", Limit::Word, &mut self.interlaced);
        walk.text("container", Limit::Word, &mut self.container);
        walk.message("time_span", self.time_span.as_mut());
        walk.message("input_captions", self.input_captions.as_mut());
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::JobWatermark {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("preset_watermark_id", Limit::Word, &mut self.preset_watermark_id);
        walk.text("input_key", Limit::ObjectKey, &mut self.input_key);
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::Artwork {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("input_key", Limit::ObjectKey, &mut self.input_key);
        walk.text("max_width", Limit::Word, &mut self.max_width);
        walk.text("max_height", Limit::Word, &mut self.max_height);
        walk.text("sizing_policy", Limit::Word, &mut self.sizing_policy);
        walk.text("padding_policy", Limit::Word, &mut self.padding_policy);
        walk.text("album_art_format", Limit::Word, &mut self.album_art_format);
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::JobAlbumArt {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("merge_policy", Limit::Word, &mut self.merge_policy);
        walk.messages("artwork", &mut self.artwork);
    }
}

impl Fields for pb::CaptionFormat {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("format", Limit::Word, &mut self.format);
        walk.text("pattern", Limit::ObjectKey, &mut self.pattern);
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::Captions {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.messages("caption_formats", &mut self.caption_formats);
    }
}

impl Fields for pb::JobOutput {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("key", Limit::ObjectKey, &mut self.key);
        walk.text("thumbnail_pattern", Limit::ObjectKey, &mut self.thumbnail_pattern);
        walk.message("thumbnail_encryption", self.thumbnail_encryption.as_mut());
        walk.text("rotate", Limit::Word, &mut self.rotate);
        walk.text("preset_id", Limit::Word, &mut self.preset_id);
        walk.text("segment_duration", Limit::Word, &mut self.segment_duration);
        walk.messages("watermarks", &mut self.watermarks);
        walk.message("album_art", self.album_art.as_mut());
        walk.message("captions", self.captions.as_mut());
        walk.message("encryption", self.encryption.as_mut());
    }
}

impl Fields for pb::HlsContentProtection {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("method", Limit::Word, &mut self.method);
        walk.text("key", Limit::WrappedKey, &mut self.key);
        walk.text("key_md5", Limit::ShortBase64, &mut self.key_md5);
        walk.text("initialization_vector", Limit::ShortBase64, &mut self.initialization_vector);
        walk.text("license_acquisition_url", Limit::Url, &mut self.license_acquisition_url);
        walk.text("key_storage_policy", Limit::Word, &mut self.key_storage_policy);
    }
}

impl Fields for pb::PlayReadyDrm {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("format", Limit::Word, &mut self.format);
        walk.bytes("content_key", Limit::KeyBytes, &mut self.content_key);
        walk.text("key", Limit::WrappedKey, &mut self.key);
        walk.text("key_md5", Limit::ShortBase64, &mut self.key_md5);
        walk.text("key_id", Limit::Word, &mut self.key_id);
        walk.text("initialization_vector", Limit::ShortBase64, &mut self.initialization_vector);
        walk.text("license_acquisition_url", Limit::Url, &mut self.license_acquisition_url);
    }
}

impl Fields for pb::Playlist {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("name", Limit::Text, &mut self.name);
        walk.text("format", Limit::Word, &mut self.format);
        walk.texts("output_keys", Limit::ObjectKey, &mut self.output_keys);
        walk.message("hls_content_protection", self.hls_content_protection.as_mut());
        walk.message("play_ready_drm", self.play_ready_drm.as_mut());
    }
}

impl Fields for pb::CheckPipelineRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("pipeline_id", Limit::Word, &mut self.pipeline_id);
    }
}

impl Fields for pb::ConnectPipelineRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("pipeline_id", Limit::Word, &mut self.pipeline_id);
        walk.text("kms_key_arn", Limit::KmsKeyId, &mut self.kms_key_arn);
    }
}

impl Fields for pb::CheckMediaConvertRoleRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("role_arn", Limit::RoleArn, &mut self.role_arn);
        walk.text("kms_key_arn", Limit::KmsKeyId, &mut self.kms_key_arn);
        walk.text("input_bucket", Limit::Bucket, &mut self.input_bucket);
        walk.text("output_bucket", Limit::Bucket, &mut self.output_bucket);
    }
}

impl Fields for pb::ConnectMediaConvertRoleRequest {
    fn walk(&mut self, walk: &mut Walk<'_, '_>) {
        walk.text("role_arn", Limit::RoleArn, &mut self.role_arn);
        walk.text("kms_key_arn", Limit::KmsKeyId, &mut self.kms_key_arn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<M: Fields>(mut message: M, root: &str) -> String {
        check(&mut message, root).unwrap_err().message().to_owned()
    }

    #[test]
    fn a_field_at_its_limit_passes_and_one_byte_more_is_refused_by_path() {
        let max = Limit::KmsKeyId.max_bytes();
        let mut at_limit = pb::IssueDataKeyRequest { kms_key_id: "k".repeat(max), ..Default::default() };
        assert!(check(&mut at_limit, "").is_ok());
        let over = pb::IssueDataKeyRequest { kms_key_id: "k".repeat(max + 1), ..Default::default() };
        assert_eq!(refusal(over, ""), "kms_key_id: must be at most 2048 bytes (a KMS key id, ARN or alias), got 2049");
        let start = pb::EncryptObjectStart {
            destination: Some(pb::S3Location { bucket: "b".repeat(64), key: String::new() }),
            ..Default::default()
        };
        assert!(refusal(start, "start").starts_with("start.destination.bucket: must be at most 63 bytes"));
    }

    #[test]
    fn nested_repeated_and_map_fields_are_named_as_the_caller_wrote_them() {
        let job = pb::SubmitEncryptedJobRequest {
            outputs: vec![
                pb::JobOutput::default(),
                pb::JobOutput {
                    captions: Some(pb::Captions {
                        caption_formats: vec![pb::CaptionFormat {
                            encryption: Some(pb::Protection {
                                encryption: Some(pb::Encryption { key: "K".repeat(9000), ..Default::default() }),
                                key_bits: 0,
                            }),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(refusal(job, "").starts_with(
            "outputs[1].captions.caption_formats[0].encryption.encryption.key: must be at most 8192 bytes"
        ),);
        let playlist = pb::Playlist { output_keys: vec!["a".into(), "o".repeat(1025)], ..Default::default() };
        let job = pb::SubmitEncryptedJobRequest { playlists: vec![playlist], ..Default::default() };
        assert!(refusal(job, "").starts_with("playlists[0].output_keys[1]: must be at most 1024 bytes"));
        let metadata = [("k".to_owned(), "v".repeat(1025))].into_iter().collect();
        let job = pb::SubmitEncryptedJobRequest { user_metadata: metadata, ..Default::default() };
        assert!(refusal(job, "").starts_with("user_metadata.value: must be at most 1024 bytes"));
    }

    #[test]
    fn the_map_survives_a_check_unchanged() {
        let metadata: HashMap<String, String> = (0..5).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let mut job = pb::SubmitEncryptedJobRequest { user_metadata: metadata.clone(), ..Default::default() };
        assert!(check(&mut job, "").is_ok());
        assert_eq!(job.user_metadata, metadata);
    }

    #[test]
    fn a_refused_request_has_its_bytes_fields_wiped_and_nothing_of_the_value_in_its_message() {
        let mut request = pb::WrapKeyRequest {
            mode: "x".repeat(65),
            plaintext_key: vec![0xAB; 32],
            initialization_vector: vec![0xCD; 16],
            ..Default::default()
        };
        let status = check(&mut request, "").unwrap_err();
        assert!(request.plaintext_key.is_empty() && request.initialization_vector.is_empty());
        assert_eq!(status.message(), "mode: must be at most 64 bytes (a word of the field's grammar), got 65");
    }

    #[test]
    fn every_limit_is_at_least_what_the_rules_behind_it_accept() {
        use crate::custody::kms::MAX_KEY_ID_LEN;
        assert_eq!(Limit::KmsKeyId.max_bytes(), MAX_KEY_ID_LEN);
        // KMS ciphertexts are at most 6144 bytes; their base64 is 8192.
        assert_eq!(Limit::WrappedKey.max_bytes(), 6144 / 3 * 4);
        // ET's 255 characters of text and 512 of URL, at 4 bytes a character.
        assert!(Limit::Text.max_bytes() >= 255 * 4 && Limit::Url.max_bytes() >= 512 * 4);
        assert!(Limit::ALL.iter().all(|limit| limit.max_bytes() > 0 && !limit.what().is_empty()));
    }
}
