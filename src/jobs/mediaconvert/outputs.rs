//! The protection of a MediaConvert job's outputs.
//!
//! Owns two things: S3 server-side encryption per output group destination
//! (`SERVER_SIDE_ENCRYPTION_KMS` with the configured KMS key and, where
//! asked or configured, a `KmsEncryptionContext` binding the job to its
//! request token and caller), and HLS/CMAF static-key packaging: a fresh
//! 128-bit key per group that asks for one (`Type: STATIC_KEY` without a
//! `StaticKeyValue`), wrapped by KMS under the MediaConvert context for the
//! ledger, its hex placed in the job body that goes to MediaConvert. Must
//! never log, record or echo a static key's hex: the ledger gets the
//! wrapped key only.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::error::McError;
use super::validate::GROUP_SETTINGS;
use crate::custody::broker::Broker;
use crate::custody::field::FieldError;
use crate::custody::keys::{DataKey, Iv16, KeyBits, ServiceContext, encode_base64};
use crate::custody::kms::KmsKeyId;
use crate::ledger::{KeyRow, Usage};

/// The `KmsEncryptionContext` entry naming the job's request token.
pub const CONTEXT_TOKEN: &str = "keybroker-request-token";
/// The `KmsEncryptionContext` entry naming the caller.
pub const CONTEXT_CALLER: &str = "keybroker-caller";

/// What the job asks of its outputs.
#[derive(Debug, Clone, Default)]
pub struct OutputRequests {
    /// Give every output group SSE-KMS with the configured key.
    pub encrypt_outputs: bool,
    /// Bind the SSE-KMS context to the job (request token, caller).
    pub bind_job_context: bool,
    /// Give static-key groups a fresh `ConstantInitializationVector`.
    pub constant_iv: bool,
}

/// A static key the broker made for a group.
pub struct StaticKey {
    /// The group's `...Encryption.StaticKeyProvider` path.
    pub place: String,
    /// The key's ledger row (wrapped key only).
    pub row: KeyRow,
}

/// Where the groups' protection comes from.
pub struct OutputPlan<'a> {
    /// The SSE-KMS key (configured, or the request's).
    pub sse_key: Option<&'a KmsKeyId>,
    /// The key that wraps static keys for the ledger (checked present
    /// before any KMS call when a group wants one).
    pub wrap_key: Option<&'a KmsKeyId>,
    /// The `Url` template (`{token}`, `{group}` replaced) for groups without one.
    pub url_template: Option<&'a str>,
    /// The job-binding context entries.
    pub context: Vec<(String, String)>,
}

/// The static-key groups: their paths in member names. Checked before any
/// KMS call, so a bad request costs nothing.
///
/// # Errors
/// [`FieldError`] for a caller-written key or a group without a `Url`.
pub fn plan_static_keys(groups: &[Value], url_template: Option<&str>) -> Result<Vec<(usize, String)>, FieldError> {
    let mut wanted = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        for kind in ["HlsGroupSettings", "CmafGroupSettings"] {
            let at = format!("Settings.OutputGroups[{index}].OutputGroupSettings.{kind}.Encryption");
            let Some(encryption) = group.pointer(&format!("/OutputGroupSettings/{kind}/Encryption")) else { continue };
            if encryption.get("Type").and_then(Value::as_str) != Some("STATIC_KEY") {
                continue;
            }
            let provider = encryption.get("StaticKeyProvider");
            if provider.and_then(|p| p.get("StaticKeyValue")).is_some() {
                return Err(FieldError::new(
                    format!("{at}.StaticKeyProvider.StaticKeyValue"),
                    "leave it out: the broker makes every static key, records it wrapped and fills it in",
                ));
            }
            if provider.and_then(|p| p.get("Url")).is_none() && url_template.is_none() {
                return Err(FieldError::new(
                    format!("{at}.StaticKeyProvider.Url"),
                    "required: where players fetch the key (or configure mediaconvert.key_url_template)",
                ));
            }
            wanted.push((index, kind.to_owned()));
        }
    }
    Ok(wanted)
}

/// Fills each group's S3 encryption.
///
/// # Errors
/// [`FieldError`] when a group asks for SSE-KMS and no key is configured,
/// or binds a context it also writes itself.
pub fn fill_sse(groups: &mut [Value], requests: &OutputRequests, plan: &OutputPlan<'_>) -> Result<(), FieldError> {
    for (index, group) in groups.iter_mut().enumerate() {
        let Some(settings) = group.pointer_mut("/OutputGroupSettings").and_then(Value::as_object_mut) else {
            continue;
        };
        for (kind, type_settings) in settings.iter_mut() {
            if !GROUP_SETTINGS.contains(&kind.as_str()) {
                continue;
            }
            let at = format!(
                "Settings.OutputGroups[{index}].OutputGroupSettings.{kind}.DestinationSettings.S3Settings.Encryption"
            );
            let asked = type_settings
                .pointer("/DestinationSettings/S3Settings/Encryption/EncryptionType")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let asked_kms = asked.as_deref() == Some("SERVER_SIDE_ENCRYPTION_KMS");
            if !(requests.encrypt_outputs || asked_kms) {
                continue;
            }
            let Some(encryption) = type_settings
                .as_object_mut()
                .and_then(|t| object_at(t, "DestinationSettings"))
                .and_then(|d| object_at(d, "S3Settings"))
                .and_then(|s3| object_at(s3, "Encryption"))
            else {
                continue;
            };
            if encryption.get("EncryptionType").and_then(Value::as_str) == Some("SERVER_SIDE_ENCRYPTION_S3") {
                return Err(FieldError::new(
                    format!("{at}.EncryptionType"),
                    "encrypt_outputs asks for SSE-KMS, not SSE-S3",
                ));
            }
            encryption.insert("EncryptionType".to_owned(), json!("SERVER_SIDE_ENCRYPTION_KMS"));
            if !encryption.contains_key("KmsKeyArn") {
                let key = plan.sse_key.ok_or_else(|| {
                    FieldError::new(
                        format!("{at}.KmsKeyArn"),
                        "required: no mediaconvert.output_kms_key_arn is configured",
                    )
                })?;
                encryption.insert("KmsKeyArn".to_owned(), json!(key.as_str()));
            }
            if requests.bind_job_context {
                if encryption.contains_key("KmsEncryptionContext") {
                    return Err(FieldError::new(
                        format!("{at}.KmsEncryptionContext"),
                        "leave it out: the broker writes the job-binding context",
                    ));
                }
                let map: Map<String, Value> = plan.context.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let text = Value::Object(map).to_string();
                encryption.insert(
                    "KmsEncryptionContext".to_owned(),
                    json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
                );
            }
        }
    }
    Ok(())
}

/// The member `name` of `map` as an object, made when absent (the
/// document was checked already: a present member is an object).
fn object_at<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Map<String, Value>> {
    let value = map.entry(name.to_owned()).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut()
}

/// Makes a fresh key for each group `wanted` names, has KMS wrap it under
/// the MediaConvert context, and fills it in (hex), with the group's `Url`
/// and, when asked, a fresh `ConstantInitializationVector`.
///
/// # Errors
/// [`McError::Key`] when KMS (or the random source) fails; nothing is filled
/// for later groups.
pub async fn fill_static_keys(
    broker: &Broker,
    groups: &mut [Value],
    wanted: &[(usize, String)],
    requests: &OutputRequests,
    plan: &OutputPlan<'_>,
) -> Result<Vec<StaticKey>, McError> {
    let mut made = Vec::with_capacity(wanted.len());
    for (index, kind) in wanted {
        let place = format!("Settings.OutputGroups[{index}].OutputGroupSettings.{kind}.Encryption.StaticKeyProvider");
        let failed = |source| McError::Key { path: place.clone(), source };
        let wrap_key = plan.wrap_key.ok_or_else(|| FieldError::new("kms_key_id", "required for static keys"))?;
        let key = DataKey::generate(KeyBits::Aes128).map_err(|e| failed(e.into()))?;
        let sealed = broker.wrap_raw(wrap_key, &key, ServiceContext::MediaConvert).await.map_err(failed)?;
        let Some(encryption) = groups[*index]
            .pointer_mut(&format!("/OutputGroupSettings/{kind}/Encryption"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let method = encryption.get("EncryptionMethod").and_then(Value::as_str).unwrap_or("default").to_lowercase();
        let iv = match encryption.get("ConstantInitializationVector").and_then(Value::as_str) {
            Some(given) => Some(given.to_owned()),
            None if requests.constant_iv => {
                let iv = hex::encode(Iv16::generate().map_err(|e| failed(e.into()))?.0);
                encryption.insert("ConstantInitializationVector".to_owned(), json!(iv));
                Some(iv)
            }
            None => None,
        };
        let Some(provider) = object_at(encryption, "StaticKeyProvider") else { continue };
        if !provider.contains_key("Url")
            && let Some(template) = plan.url_template
        {
            let token = plan.context.iter().find(|(k, _)| k == CONTEXT_TOKEN).map_or("", |(_, v)| v.as_str());
            let url = template.replace("{token}", token).replace("{group}", &index.to_string());
            provider.insert("Url".to_owned(), json!(url));
        }
        // The one place a static key's plaintext is written: the job body.
        provider.insert("StaticKeyValue".to_owned(), json!(hex::encode(key.expose_secret())));
        drop(key);
        let row = KeyRow {
            wrapped_key: sealed.wrapped.to_base64(),
            kms_key_arn: sealed.key_arn,
            context: ServiceContext::MediaConvert,
            mode: format!("static-{method}"),
            key_bits: Some(128),
            iv: iv.and_then(|hex_iv| hex::decode(hex_iv).ok()).map(|bytes| encode_base64(&bytes)),
            key_md5: encode_base64(&sealed.key_md5),
            fingerprint: sealed.fingerprint,
            usage: Usage::Job { job_id: None, place: place.clone() },
            rewrapped_from: None,
        };
        made.push(StaticKey { place, row });
    }
    Ok(made)
}

/// The document with every `StaticKeyValue` replaced by a marker: what
/// answers, the token's stored answer and any log may hold.
pub fn redact_static_keys(job: &Value) -> Value {
    match job {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(name, value)| {
                    let value = if name == "StaticKeyValue" { json!(REDACTED) } else { redact_static_keys(value) };
                    (name.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_static_keys).collect()),
        other => other.clone(),
    }
}

/// What stands for a static key in a redacted document.
pub const REDACTED: &str = "(redacted: made by keybroker, recorded wrapped)";
