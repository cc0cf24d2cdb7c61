//! Each AES block checked through KMS, and the JSON helpers the checks
//! share.

use super::*;

pub(super) async fn verify_block(
    shared: &Shared,
    pipeline: &PipelineFixture,
    block: &AesBlock,
) -> Result<VerifiedKey, Invalid> {
    let path = &block.path;
    let wrapped_key = B64.decode(&block.key).map_err(|e| format!("{path}.Key: is not valid base64 ({e})"))?;
    let decrypted = shared
        .kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped_key.clone()))
        .encryption_context(ET_CONTEXT_KEY, ET_CONTEXT_VALUE)
        .send()
        .await
        .map_err(|e| {
            // The KMS error code (InvalidCiphertextException, NotFoundException,
            // ...) is what a test wants to read; the raw response is noise.
            let reason = match e.as_service_error() {
                Some(kms) => match (kms.code(), kms.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_owned(),
                    (None, _) => kms.to_string(),
                },
                None => aws_sdk_kms::error::DisplayErrorContext(&e).to_string(),
            };
            format!(
                "{path}.Key: AWS KMS cannot decrypt the key under the encryption context \
                 {{\"{ET_CONTEXT_KEY}\":\"{ET_CONTEXT_VALUE}\"}} ({reason})"
            )
        })?;
    let kms_key_id = decrypted.key_id().unwrap_or_default().to_owned();
    if let Some(expected) = &pipeline.kms_key_arn
        && !same_kms_key(expected, &kms_key_id)
    {
        return Err(format!(
            "{path}.Key: was encrypted under KMS key {kms_key_id}, not the pipeline's AwsKmsKeyArn {expected}"
        ));
    }
    let key = decrypted.plaintext().map(|blob| blob.as_ref().to_vec()).unwrap_or_default();
    let sizes: &[usize] = if block.kind == BlockKind::Hls { &[16] } else { &[16, 24, 32] };
    if !sizes.contains(&key.len()) {
        let rule = if block.kind == BlockKind::Hls {
            "HLS content protection keys are 16 bytes (128 bits)"
        } else {
            "AES keys are 16, 24 or 32 bytes (128, 192 or 256 bits)"
        };
        return Err(format!("{path}.Key: decrypts to {} bytes; {rule}", key.len()));
    }
    let key_md5 = B64.decode(&block.key_md5).map_err(|e| format!("{path}.KeyMd5: is not valid base64 ({e})"))?;
    if key_md5.len() != 16 {
        return Err(format!("{path}.KeyMd5: decodes to {} bytes; an MD5 digest is 16", key_md5.len()));
    }
    let (digest_of, what) = match shared.md5 {
        KeyMd5Reading::Plaintext => (&key, "the decrypted key"),
        KeyMd5Reading::Ciphertext => (&wrapped_key, "the KMS ciphertext blob"),
    };
    if Md5::digest(digest_of).as_slice() != key_md5.as_slice() {
        return Err(format!("{path}.KeyMd5: is not the MD5 digest of {what}"));
    }
    let iv = if block.iv.is_empty() {
        None
    } else {
        let iv =
            B64.decode(&block.iv).map_err(|e| format!("{path}.InitializationVector: is not valid base64 ({e})"))?;
        let wanted = if block.kind == BlockKind::PlayReady { 8 } else { 16 };
        if iv.len() != wanted {
            return Err(format!(
                "{path}.InitializationVector: decodes to {} bytes; it must be exactly {wanted}",
                iv.len()
            ));
        }
        Some(iv)
    };
    Ok(VerifiedKey {
        job_id: String::new(),
        path: path.clone(),
        mode: block.mode.clone(),
        wrapped_key,
        key,
        iv,
        key_md5,
        kms_key_id,
    })
}

/// KMS reports a key ARN; a fixture may hold the ARN or the bare key id.
pub(super) fn same_kms_key(expected: &str, reported: &str) -> bool {
    let key_id = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    expected == reported || key_id(expected) == key_id(reported)
}

// ---------------------------------------------------------------- helpers

pub(super) fn at(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

/// A member, treating JSON `null` as absent (as ET's deserializer does).
pub(super) fn member<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

pub(super) fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a str>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{}: must be a string", at(path, field))),
    }
}

pub(super) fn req_str<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Invalid> {
    opt_str(obj, field, path)?.ok_or_else(|| format!("{}: is required", at(path, field)))
}

pub(super) fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("{}: must be an object", at(path, field))),
    }
}

pub(super) fn opt_list<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Option<&'a [Value]>, Invalid> {
    match member(obj, field) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(format!("{}: must be a list", at(path, field))),
    }
}

pub(super) fn as_obj<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value.as_object().ok_or_else(|| format!("{path}: must be an object"))
}

/// An optional base64 member (`Base64EncodedString`); absent reads as "".
pub(super) fn opt_base64<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Invalid> {
    let value = opt_str(obj, field, path)?.unwrap_or("");
    if !is_base64(value) {
        return Err(format!("{}: is not base64 (padded, standard alphabet)", at(path, field)));
    }
    Ok(value)
}

pub(super) fn require_non_empty(path: &str, field: &str, value: &str, context: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(format!("{}: is required with {context}", at(path, field)));
    }
    Ok(())
}

pub(super) fn check_len(path: &str, value: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(format!("{path}: length {len} is outside {min}..={max}"));
    }
    Ok(())
}

pub(super) fn check_enum_opt(
    obj: &Map<String, Value>,
    field: &str,
    path: &str,
    allowed: &[&str],
) -> Result<(), Invalid> {
    if let Some(value) = opt_str(obj, field, path)?
        && !allowed.contains(&value)
    {
        return Err(format!("{}: {value:?} is not one of {}", at(path, field), allowed.join(", ")));
    }
    Ok(())
}

/// Whether `id` has the shape of ET's pipeline and job ids:
/// `^\d{13}-\w{6}$` with Java's ASCII `\w`.
pub fn is_et_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 20
        && bytes[..13].iter().all(u8::is_ascii_digit)
        && bytes[13] == b'-'
        && bytes[14..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`
pub(super) fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `(^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$)|(^[0-9A-Fa-f]{32}$)`
pub(super) fn is_guid(s: &str) -> bool {
    let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 32 {
        return hex(s, 32);
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(part, len)| hex(part, len))
}

/// `\d{1,5}x\d{1,5}`
pub(super) fn is_resolution(s: &str) -> bool {
    let digits = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('x').is_some_and(|(w, h)| digits(w) && digits(h))
}

pub(super) fn is_absolute_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    })
}
