//! The Elastic Transcoder model rules, checked before any KMS call.
//!
//! Every violation names the field's path in the v1 API (snake_case, e.g.
//! `outputs[3].captions.caption_formats[1].encryption.mode`) and the rule.
//! Pure: no I/O, no keys.

use std::collections::HashSet;

use super::model::{CreateJob, Encryption, HlsContentProtection, PlayReadyDrm, Playlist};
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::{EncryptionMode, KeyBits, decode_base64, is_et_base64};
use crate::jobs::place::Place;

/// Most outputs in one job (`Output` and `Outputs` together).
pub const MAX_OUTPUTS: usize = 30;
/// Most playlists in one job.
pub const MAX_PLAYLISTS: usize = 30;
/// Most inputs in one job (`Input` and `Inputs` together).
pub const MAX_INPUTS: usize = 200;
/// Most caption sources per input.
pub const MAX_CAPTION_SOURCES: usize = 20;
/// Most caption formats per output.
pub const MAX_CAPTION_FORMATS: usize = 4;
/// Most user metadata pairs.
pub const MAX_USER_METADATA: usize = 10;

/// Fails with a violation at `place`.
pub fn violation<T>(place: &Place, rule: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError::new(place.api.clone(), rule))
}

fn check_len(place: &Place, text: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let len = text.chars().count();
    if len < min || len > max {
        let rule = if min == 0 {
            format!("must be at most {max} characters, got {len}")
        } else {
            format!("must be {min} to {max} characters, got {len}")
        };
        return violation(place, rule);
    }
    Ok(())
}

fn check_count(place: &Place, count: usize, max: usize, what: &str) -> Result<(), FieldError> {
    if count > max {
        return violation(place, format!("at most {max} {what} per job, got {count}"));
    }
    Ok(())
}

/// `^\d{13}-\w{6}$`
pub fn is_pipeline_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 20
        && bytes[..13].iter().all(u8::is_ascii_digit)
        && bytes[13] == b'-'
        && bytes[14..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// A GUID as PlayReady's `KeyId` takes it: 8-4-4-4-12 or 32 hex digits.
/// The length check keeps out the braced and `urn:uuid:` forms the parser
/// also reads.
pub fn is_guid(text: &str) -> bool {
    matches!(text.len(), 32 | 36) && uuid::Uuid::try_parse(text).is_ok()
}

/// An absolute URL written with an authority (`scheme://...`), as players
/// fetch keys from it. The parser forgives blanks before the scheme and a
/// missing `//`, so the text must also begin with the scheme and `://` and
/// go on after it.
fn is_absolute_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| {
        let (scheme, rest) = text.split_at_checked(url.scheme().len()).unwrap_or_default();
        scheme.eq_ignore_ascii_case(url.scheme()) && rest.strip_prefix("://").is_some_and(|rest| !rest.is_empty())
    })
}

/// Whether a block is the caller's (it carries a `Key`) or asks the broker
/// to make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// No key material involved (`s3`, `s3-aws-kms`).
    ServerSide,
    /// The broker makes a fresh key of this length.
    Generate(KeyBits),
    /// The caller brought a wrapped key: to be verified.
    Caller,
}

/// Checks one `Encryption` element and says who makes its key.
/// `broker_may_generate` is true for files ET writes.
///
/// # Errors
/// The first [`FieldError`].
pub fn check_encryption(
    place: &Place,
    block: &Encryption,
    broker_may_generate: bool,
) -> Result<(EncryptionMode, BlockKind), FieldError> {
    let mode = EncryptionMode::parse(&block.mode, "mode").or_else(|_| {
        violation(&place.field("mode", "Mode"), format!("must be one of {} (lower case)", EncryptionMode::ALL))
    })?;
    if !mode.is_aes() {
        for (api, json, value) in [
            ("key", "Key", &block.key),
            ("key_md5", "KeyMd5", &block.key_md5),
            ("initialization_vector", "InitializationVector", &block.initialization_vector),
        ] {
            if !value.is_empty() {
                return violation(&place.field(api, json), format!("must be empty with mode {}", mode.as_str()));
            }
        }
        return Ok((mode, BlockKind::ServerSide));
    }
    if block.key.is_empty() {
        if !broker_may_generate {
            return violation(
                &place.field("key", "Key"),
                "required: the caller encrypted this file, so pass the block IssueDataKey returned for it",
            );
        }
        for (api, json, value) in [
            ("key_md5", "KeyMd5", &block.key_md5),
            ("initialization_vector", "InitializationVector", &block.initialization_vector),
        ] {
            if !value.is_empty() {
                return violation(
                    &place.field(api, json),
                    "must be empty when the broker makes the key (no key given)",
                );
            }
        }
        let bits = KeyBits::parse(block.key_bits, "key_bits")
            .or_else(|_| violation(&place.field("key_bits", "KeyBits"), "must be 128, 192 or 256 (0 means 256)"))?;
        return Ok((mode, BlockKind::Generate(bits)));
    }
    check_caller_fields(place, &block.key, &block.key_md5, &block.initialization_vector, 16)?;
    Ok((mode, BlockKind::Caller))
}

/// Checks the text fields of a caller's block: base64 key, 16-byte KeyMd5,
/// an IV of `iv_len` bytes.
///
/// # Errors
/// The first [`FieldError`].
pub fn check_caller_fields(place: &Place, key: &str, key_md5: &str, iv: &str, iv_len: usize) -> Result<(), FieldError> {
    if !is_et_base64(key) {
        return violation(&place.field("key", "Key"), "must be standard base64 with padding (ET's pattern)");
    }
    let md5_place = place.field("key_md5", "KeyMd5");
    match decode_base64(key_md5, "key_md5") {
        Ok(digest) if digest.len() == 16 => {}
        _ => return violation(&md5_place, "must be base64 of the 16-byte MD5 digest of the key"),
    }
    let iv_place = place.field("initialization_vector", "InitializationVector");
    check_len(&iv_place, iv, 0, 255)?;
    match decode_base64(iv, "initialization_vector") {
        Ok(bytes) if bytes.len() == iv_len => Ok(()),
        Ok(bytes) => violation(&iv_place, format!("must be base64 of exactly {iv_len} bytes, got {}", bytes.len())),
        Err(_) => violation(&iv_place, "must be standard base64 with padding"),
    }
}

/// Checks HLS content protection and says whether the broker makes the key.
///
/// # Errors
/// The first [`FieldError`].
pub fn check_hls(place: &Place, hls: &HlsContentProtection) -> Result<bool, FieldError> {
    if !hls.method.is_empty() && hls.method != "aes-128" {
        return violation(&place.field("method", "Method"), "must be aes-128");
    }
    match hls.key_storage_policy.as_str() {
        "NoStore" => {
            if hls.license_acquisition_url.is_empty() {
                return violation(
                    &place.field("license_acquisition_url", "LicenseAcquisitionUrl"),
                    "required with NoStore: players fetch the key from it",
                );
            }
        }
        "WithVariantPlaylists" => {
            if !hls.license_acquisition_url.is_empty() {
                return violation(
                    &place.field("license_acquisition_url", "LicenseAcquisitionUrl"),
                    "must be empty with WithVariantPlaylists",
                );
            }
        }
        _ => {
            return violation(
                &place.field("key_storage_policy", "KeyStoragePolicy"),
                "must be NoStore or WithVariantPlaylists",
            );
        }
    }
    if !hls.license_acquisition_url.is_empty() {
        let url_place = place.field("license_acquisition_url", "LicenseAcquisitionUrl");
        check_len(&url_place, &hls.license_acquisition_url, 1, 512)?;
        if !is_absolute_url(&hls.license_acquisition_url) {
            return violation(&url_place, "must be an absolute URL");
        }
    }
    if hls.key.is_empty() {
        if !hls.key_md5.is_empty() || !hls.initialization_vector.is_empty() {
            return violation(
                &place.field("key_md5", "KeyMd5"),
                "must be empty when the broker makes the key (no key given)",
            );
        }
        return Ok(true);
    }
    check_caller_fields(place, &hls.key, &hls.key_md5, &hls.initialization_vector, 16)?;
    Ok(false)
}

/// Checks PlayReady settings; `has_content_key` says whether the caller
/// passed a plaintext content key for the broker to wrap.
///
/// # Errors
/// The first [`FieldError`].
pub fn check_play_ready(place: &Place, drm: &PlayReadyDrm, has_content_key: bool) -> Result<(), FieldError> {
    if !matches!(drm.format.as_str(), "microsoft" | "discretix-3.0") {
        return violation(&place.field("format", "Format"), "must be microsoft or discretix-3.0");
    }
    if !is_guid(&drm.key_id) {
        return violation(&place.field("key_id", "KeyId"), "must be a GUID: 8-4-4-4-12 or 32 hex digits");
    }
    let url_place = place.field("license_acquisition_url", "LicenseAcquisitionUrl");
    check_len(&url_place, &drm.license_acquisition_url, 1, 512)?;
    if !drm.initialization_vector.is_empty() {
        match decode_base64(&drm.initialization_vector, "initialization_vector") {
            Ok(iv) if iv.len() == 8 => {}
            _ => {
                return violation(
                    &place.field("initialization_vector", "InitializationVector"),
                    "must be base64 of exactly 8 bytes (or empty)",
                );
            }
        }
    }
    match (has_content_key, drm.key.is_empty()) {
        (true, true) => Ok(()),
        (true, false) => violation(place, "give content_key or key, not both"),
        (false, true) => violation(
            &place.field("content_key", "Key"),
            "required: the DRM provider's content key (or key, already wrapped)",
        ),
        (false, false) => {
            if !is_et_base64(&drm.key) {
                return violation(&place.field("key", "Key"), "must be standard base64 with padding (ET's pattern)");
            }
            match decode_base64(&drm.key_md5, "key_md5") {
                Ok(d) if d.len() == 16 => Ok(()),
                _ => {
                    violation(&place.field("key_md5", "KeyMd5"), "must be base64 of the 16-byte MD5 digest of the key")
                }
            }
        }
    }
}

/// Checks everything but the encryption blocks: ids, counts, keys, lengths,
/// playlists and the protections that exclude each other.
///
/// # Errors
/// The first [`FieldError`].
pub fn check_structure(job: &CreateJob) -> Result<(), FieldError> {
    let root = Place::root();
    if !is_pipeline_id(&job.pipeline_id) {
        return violation(&root.field("pipeline_id", "PipelineId"), r"must match ^\d{13}-\w{6}$");
    }
    let inputs = usize::from(job.input.is_some()) + job.inputs.len();
    check_count(&root.field("inputs", "Inputs"), inputs, MAX_INPUTS, "inputs")?;
    if inputs == 0 {
        return violation(&root.field("input", "Input"), "required: a job needs an input (input or inputs)");
    }
    let outputs = usize::from(job.output.is_some()) + job.outputs.len();
    check_count(&root.field("outputs", "Outputs"), outputs, MAX_OUTPUTS, "outputs")?;
    if outputs == 0 {
        return violation(&root.field("outputs", "Outputs"), "required: a job needs at least one output");
    }
    check_count(&root.field("playlists", "Playlists"), job.playlists.len(), MAX_PLAYLISTS, "playlists")?;
    check_len(&root.field("output_key_prefix", "OutputKeyPrefix"), &job.output_key_prefix, 0, 255)?;

    for (place, input) in super::plan::inputs(job) {
        check_len(&place.field("key", "Key"), &input.key, 1, 1024)?;
        if let Some(captions) = &input.input_captions {
            let captions_place = place.field("input_captions", "InputCaptions");
            let sources = captions.caption_sources.len();
            if sources > MAX_CAPTION_SOURCES {
                return violation(
                    &captions_place.field("caption_sources", "CaptionSources"),
                    format!("at most {MAX_CAPTION_SOURCES} caption sources per input, got {sources}"),
                );
            }
            for (i, source) in captions.caption_sources.iter().enumerate() {
                check_len(
                    &captions_place.item("caption_sources", "CaptionSources", i).field("key", "Key"),
                    &source.key,
                    1,
                    1024,
                )?;
            }
        }
    }

    let mut output_keys = HashSet::new();
    for (place, output) in super::plan::outputs(job) {
        check_len(&place.field("key", "Key"), &output.key, 1, 255)?;
        output_keys.insert(output.key.as_str());
        for (i, mark) in output.watermarks.iter().enumerate() {
            let key_place = place.item("watermarks", "Watermarks", i).field("input_key", "InputKey");
            check_len(&key_place, &mark.input_key, 1, 1024)?;
            if ![".jpg", ".jpeg", ".png"].iter().any(|ext| mark.input_key.ends_with(ext)) {
                return violation(&key_place, "must end in .jpg, .jpeg or .png");
            }
        }
        if let Some(captions) = &output.captions {
            let formats = captions.caption_formats.len();
            if formats > MAX_CAPTION_FORMATS {
                return violation(
                    &place.field("captions", "Captions").field("caption_formats", "CaptionFormats"),
                    format!("at most {MAX_CAPTION_FORMATS} caption formats per output, got {formats}"),
                );
            }
        }
    }

    for (i, playlist) in job.playlists.iter().enumerate() {
        check_playlist(&root.item("playlists", "Playlists", i), playlist, job, &output_keys)?;
    }

    let metadata = root.field("user_metadata", "UserMetadata");
    if job.user_metadata.len() > MAX_USER_METADATA {
        return violation(&metadata, format!("at most {MAX_USER_METADATA} pairs, got {}", job.user_metadata.len()));
    }
    for (key, value) in &job.user_metadata {
        let place =
            Place { api: format!("{}[{}]", metadata.api, echo(key)), json: format!("{}.{}", metadata.json, echo(key)) };
        check_len(&place, key, 1, 128)?;
        check_len(&place, value, 0, 256)?;
    }
    Ok(())
}

fn check_playlist(
    place: &Place,
    playlist: &Playlist,
    job: &CreateJob,
    output_keys: &HashSet<&str>,
) -> Result<(), FieldError> {
    check_len(&place.field("name", "Name"), &playlist.name, 1, 255)?;
    if !matches!(playlist.format.as_str(), "HLSv3" | "HLSv4" | "MPEG-DASH" | "Smooth") {
        return violation(&place.field("format", "Format"), "must be HLSv3, HLSv4, MPEG-DASH or Smooth");
    }
    if playlist.output_keys.is_empty() || playlist.output_keys.len() > MAX_OUTPUTS {
        return violation(
            &place.field("output_keys", "OutputKeys"),
            format!("must name 1 to {MAX_OUTPUTS} outputs of the job"),
        );
    }
    for (i, key) in playlist.output_keys.iter().enumerate() {
        if !output_keys.contains(key.as_str()) {
            return violation(
                &place.item("output_keys", "OutputKeys", i),
                format!("{} is not an output of this job", echo(key)),
            );
        }
    }
    let protected = match (&playlist.hls_content_protection, &playlist.play_ready_drm) {
        (Some(_), Some(_)) => {
            return violation(place, "hls_content_protection and play_ready_drm exclude each other");
        }
        (Some(_), None) => {
            if !matches!(playlist.format.as_str(), "HLSv3" | "HLSv4") {
                return violation(
                    &place.field("hls_content_protection", "HlsContentProtection"),
                    "needs an HLSv3 or HLSv4 playlist",
                );
            }
            true
        }
        (None, Some(_)) => {
            if !matches!(playlist.format.as_str(), "HLSv3" | "Smooth") {
                return violation(&place.field("play_ready_drm", "PlayReadyDrm"), "needs an HLSv3 or Smooth playlist");
            }
            true
        }
        (None, None) => false,
    };
    if protected {
        for (out_place, output) in super::plan::outputs(job) {
            let file_aes = output
                .encryption
                .as_ref()
                .is_some_and(|e| EncryptionMode::parse(&e.mode, "mode").is_ok_and(EncryptionMode::is_aes));
            if file_aes && playlist.output_keys.contains(&output.key) {
                return violation(
                    &out_place.field("encryption", "Encryption"),
                    format!(
                        "file-level AES encryption excludes the content protection of playlist {:?}, which names this output",
                        playlist.name
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::et::model::JobOutput;

    #[test]
    fn pipeline_ids() {
        assert!(is_pipeline_id("1111111111111-abcd_1"));
        assert!(!is_pipeline_id("111111111111-abcde1"));
        assert!(!is_pipeline_id("1111111111111-abcd-1"));
    }

    #[test]
    fn guids() {
        assert!(is_guid("0123abcd-0123-4567-89ab-0123456789AB"));
        assert!(is_guid("0123abcd0123456789ab0123456789ab"));
        assert!(!is_guid("0123abcd-0123-4567-89ab-0123456789"));
    }

    #[test]
    fn a_generated_block_must_not_carry_an_iv() {
        let place = Place::root().item("outputs", "Outputs", 0).field("encryption", "Encryption");
        let block = Encryption { mode: "aes-ctr".into(), initialization_vector: "AAAA".into(), ..Default::default() };
        let err = check_encryption(&place, &block, true).unwrap_err();
        assert_eq!(err.field, "outputs[0].encryption.initialization_vector");
        let ok = Encryption { mode: "aes-ctr".into(), key_bits: 128, ..Default::default() };
        assert_eq!(check_encryption(&place, &ok, true).unwrap().1, BlockKind::Generate(KeyBits::Aes128));
        assert!(check_encryption(&place, &ok, false).is_err(), "inputs never get broker keys");
    }

    #[test]
    fn counts_are_enforced() {
        let job = CreateJob {
            pipeline_id: "1111111111111-abcdef".into(),
            input: Some(crate::jobs::et::model::JobInput { key: "in.mp4".into(), ..Default::default() }),
            outputs: (0..31).map(|i| JobOutput { key: format!("o{i}"), ..Default::default() }).collect(),
            ..Default::default()
        };
        let err = check_structure(&job).unwrap_err();
        assert_eq!(err.to_string(), "outputs: at most 30 outputs per job, got 31");
    }

    proptest::proptest! {
        /// Any CreateJob a caller can write (shapes drawn from the model's
        /// fields) is accepted or refused naming a place; never a panic.
        #[test]
        fn any_job_is_validated_without_panicking(
            outputs in proptest::collection::vec(("[a-z./]{0,12}", "[a-zA-Z0-9+/=-]{0,30}", "[a-z0-9-]{0,16}"), 0..33),
            playlist_keys in proptest::collection::vec("[a-z./]{0,12}", 0..4),
            metadata in proptest::collection::btree_map("\\PC{0,20}", "\\PC{0,20}", 0..12),
        ) {
            let job = CreateJob {
                pipeline_id: "1111111111111-abcdef".to_owned(),
                outputs: outputs
                    .into_iter()
                    .map(|(key, iv, mode)| JobOutput {
                        key,
                        encryption: Some(Encryption { mode, initialization_vector: iv, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
                playlists: vec![Playlist { name: "p".to_owned(), output_keys: playlist_keys, ..Default::default() }],
                user_metadata: metadata.into_iter().collect(),
                ..Default::default()
            };
            if let Err(err) = check_structure(&job) {
                proptest::prop_assert!(!err.field.is_empty() && err.to_string().len() < 600, "{}", err);
            }
        }
    }
}
