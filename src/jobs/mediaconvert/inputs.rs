//! The keys of a MediaConvert job's encrypted inputs.
//!
//! Owns each input's `DecryptionSettings`: filled from the key ledger when
//! the broker encrypted the file (its S3 object is recorded, or the caller
//! names the key's fingerprint), or, when the caller brings a block,
//! verified through KMS under the MediaConvert context (key length, IV
//! length for the mode). A key wrapped under the Elastic Transcoder context
//! is refused naming `RewrapKeys`, or moved by KMS ReEncrypt when the
//! request asks and the policy grants `RewrapKeys`. Must never let a
//! plaintext key out of this file: an opened key is dropped (zeroized) as
//! soon as its length is known.

use serde_json::{Map, Value, json};

use super::error::McError;
use crate::custody::broker::{Broker, BrokerError, UnwrapRequest};
use crate::custody::field::{FieldError, echo};
use crate::custody::keys::{ServiceContext, WrappedKey, decode_base64};
use crate::custody::kms::{KmsErrorKind, KmsKeyId};
use crate::custody::policy::Grant;
use crate::custody::records::{self, Rewrap, Selector, Sources};
use crate::ledger::{Filter, KeyRow, Origin, RecordedKey};

/// What the job asks of its inputs' keys.
#[derive(Debug, Default, Clone)]
pub struct InputRequests {
    /// Key fingerprints the caller names, by input index.
    pub fingerprints: std::collections::BTreeMap<usize, String>,
    /// Move keys wrapped under the Elastic Transcoder context rather than
    /// refuse them.
    pub rewrap_et_keys: bool,
}

/// One input key as the job uses it.
#[derive(Debug, Clone)]
pub struct InputKey {
    /// `Settings.Inputs[i].DecryptionSettings`.
    pub place: String,
    /// The filled block (member names).
    pub block: Value,
    /// The key's ledger row, to record with the job.
    pub row: KeyRow,
    /// The fingerprint of the ET-context key it was rewrapped from.
    pub rewrapped_from: Option<String>,
}

/// The ET modes and the MediaConvert mode each file format decrypts as.
pub fn mediaconvert_mode(et_mode: &str) -> Option<&'static str> {
    match et_mode {
        "aes-cbc-pkcs7" => Some("AES_CBC"),
        "aes-ctr" => Some("AES_CTR"),
        "aes-gcm" => Some("AES_GCM"),
        _ => None,
    }
}

/// Resolves every input's key, filling `inputs` in place.
///
/// # Errors
/// [`McError`]: bad blocks (`INVALID_ARGUMENT`), ET keys not moved
/// (`FAILED_PRECONDITION`), KMS, ledger or policy failures.
pub async fn resolve(
    broker: &Broker,
    inputs: &mut [Value],
    requests: &InputRequests,
    grant: &Grant,
    origin: &Origin,
) -> Result<Vec<InputKey>, McError> {
    let mut keys = Vec::new();
    for (index, input) in inputs.iter_mut().enumerate() {
        let place = format!("Settings.Inputs[{index}].DecryptionSettings");
        let Some(input) = input.as_object_mut() else { continue };
        let brought = input.get("DecryptionSettings").and_then(Value::as_object).cloned();
        let key = match (brought, requests.fingerprints.get(&index)) {
            (Some(block), None) if block.contains_key("EncryptedDecryptionKey") => {
                brought_key(broker, &block, &place, requests, grant, origin).await?
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    format!("input_key_fingerprints[{index}]"),
                    "the input brings its own DecryptionSettings; name a fingerprint or bring a block, not both",
                )
                .into());
            }
            (Some(block), None) if !block.is_empty() => {
                return Err(FieldError::new(
                    format!("{place}.EncryptedDecryptionKey"),
                    "required when DecryptionSettings is given; leave DecryptionSettings out for the broker to fill \
                     it from the key ledger",
                )
                .into());
            }
            (_, Some(fingerprint)) => {
                let found = broker.ledger().find_at_most(&Filter::Fingerprint(fingerprint.clone()), 1).await?;
                let Some(recorded) = found.into_iter().next() else {
                    return Err(McError::Precondition(format!(
                        "input_key_fingerprints[{index}]: the key ledger has no key {}",
                        echo(fingerprint)
                    )));
                };
                Some(recorded_key(broker, recorded, &place, requests, grant, origin).await?)
            }
            (_, None) => match s3_object(input.get("FileInput")) {
                Some((bucket, key)) => {
                    let found = broker.ledger().find(&Filter::Object { bucket, key }).await?;
                    match found.into_iter().last() {
                        Some(recorded) => Some(recorded_key(broker, recorded, &place, requests, grant, origin).await?),
                        None => None,
                    }
                }
                None => None,
            },
        };
        if let Some(mut key) = key {
            set_kms_key_region(&mut key, &place)?;
            input.insert("DecryptionSettings".to_owned(), key.block.clone());
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The region of a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), when
/// it is one and names a region as MediaConvert's model spells them.
pub fn kms_key_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_prefix, _partition, service, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (arn_prefix == "arn" && service == "kms" && super::validate::is_region(region)).then_some(region)
}

/// Fills the block's `KmsKeyRegion` from the ARN of the KMS key that wrapped
/// its key, so MediaConvert asks KMS in that key's region; a region the
/// caller wrote must be that one.
///
/// # Errors
/// [`FieldError`] naming `...DecryptionSettings.KmsKeyRegion` when the
/// caller's region is not the key's.
fn set_kms_key_region(key: &mut InputKey, place: &str) -> Result<(), FieldError> {
    let Some(region) = kms_key_region(&key.row.kms_key_arn) else { return Ok(()) };
    let Some(block) = key.block.as_object_mut() else { return Ok(()) };
    match block.get("KmsKeyRegion").and_then(Value::as_str) {
        Some(given) if given != region => Err(FieldError::new(
            format!("{place}.KmsKeyRegion"),
            format!("{} is not the region of the KMS key that wrapped the key ({region})", echo(given)),
        )),
        Some(_) => Ok(()),
        None => {
            block.insert("KmsKeyRegion".to_owned(), json!(region));
            Ok(())
        }
    }
}

/// `s3://bucket/key` as its parts.
fn s3_object(file: Option<&Value>) -> Option<(String, String)> {
    let rest = file?.as_str()?.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
}

/// A recorded key as a `DecryptionSettings` block; an ET-context key is
/// moved (when asked and granted) or refused.
async fn recorded_key(
    broker: &Broker,
    recorded: RecordedKey,
    place: &str,
    requests: &InputRequests,
    grant: &Grant,
    origin: &Origin,
) -> Result<InputKey, McError> {
    let row = recorded.key;
    grant.check_kms_key(&row.kms_key_arn)?;
    let Some(mode) = mediaconvert_mode(&row.mode) else {
        return Err(McError::Precondition(format!(
            "{place}: the recorded key is for {} files, which MediaConvert cannot decrypt (AES_CBC, AES_CTR, AES_GCM only)",
            echo(&row.mode)
        )));
    };
    let iv = row.iv.clone().ok_or_else(|| McError::Precondition(format!("{place}: the recorded key has no IV")))?;
    match row.context {
        ServiceContext::MediaConvert => Ok(InputKey {
            place: place.to_owned(),
            block: json!({"DecryptionMode": mode, "EncryptedDecryptionKey": row.wrapped_key, "InitializationVector": iv}),
            row,
            rewrapped_from: None,
        }),
        ServiceContext::ElasticTranscoder if requests.rewrap_et_keys => {
            grant.check_rewrap(place)?;
            let rewrap = Rewrap {
                sources: Sources::Recorded(Selector::Fingerprint(row.fingerprint.clone())),
                destination_key: None,
                destination_context: ServiceContext::MediaConvert,
            };
            let moved = records::rewrap(broker, rewrap, grant, origin).await?;
            let new_row = moved
                .into_iter()
                .next()
                .map(|m| m.row)
                .ok_or_else(|| McError::Precondition(format!("{place}: the rewrap moved no key")))?;
            Ok(InputKey {
                place: place.to_owned(),
                block: json!({
                    "DecryptionMode": mode,
                    "EncryptedDecryptionKey": new_row.wrapped_key,
                    "InitializationVector": iv,
                }),
                rewrapped_from: Some(row.fingerprint),
                row: new_row,
            })
        }
        other => Err(wrong_context(place, other)),
    }
}

fn wrong_context(place: &str, context: ServiceContext) -> McError {
    McError::Precondition(format!(
        "{place}: the key is wrapped under the {} encryption context, which MediaConvert cannot use; move it with \
         RewrapKeys (destination_context SERVICE_CONTEXT_MEDIACONVERT) or set rewrap_et_inputs",
        context.entry().1
    ))
}

/// A block the caller brought: the ledger decides its context when it
/// knows the key; otherwise KMS opens it under the MediaConvert context
/// and its key and IV lengths are checked.
async fn brought_key(
    broker: &Broker,
    block: &Map<String, Value>,
    place: &str,
    requests: &InputRequests,
    grant: &Grant,
    origin: &Origin,
) -> Result<Option<InputKey>, McError> {
    let text = |member: &str| block.get(member).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mode = text("DecryptionMode");
    if mode.is_empty() {
        return Err(FieldError::new(format!("{place}.DecryptionMode"), "required with EncryptedDecryptionKey").into());
    }
    let iv_text = text("InitializationVector");
    let iv_field = format!("{place}.InitializationVector");
    let iv =
        decode_base64(&iv_text, &iv_field).map_err(|_| FieldError::new(&iv_field, "required: base64 of the IV"))?;
    let iv_ok = iv.len() == 16 || (iv.len() == 12 && mode != "AES_CBC");
    if !iv_ok {
        return Err(
            FieldError::new(iv_field, format!("{mode} takes a 16-byte IV (or 12 bytes for AES_GCM, AES_CTR)")).into()
        );
    }
    let key_field = format!("{place}.EncryptedDecryptionKey");
    let wrapped = WrappedKey::new(
        decode_base64(&text("EncryptedDecryptionKey"), &key_field)
            .map_err(|e| FieldError::new(&key_field, e.to_string()))?,
    );
    let fingerprint = broker.fingerprint(&wrapped);
    if let Some(recorded) = broker.ledger().find_at_most(&Filter::Fingerprint(fingerprint), 1).await?.pop()
        && recorded.key.context != ServiceContext::MediaConvert
    {
        return recorded_key(broker, recorded, place, requests, grant, origin).await.map(Some);
    }
    let request =
        UnwrapRequest { key_id: None, wrapped: wrapped.clone(), key_md5: None, context: ServiceContext::MediaConvert };
    let kept = wrapped.clone();
    let opened = match broker.open(request, &key_field).await {
        Ok(opened) => opened,
        Err(BrokerError::Kms(kms)) if kms.kind == KmsErrorKind::InvalidCiphertext => {
            let as_et =
                UnwrapRequest { key_id: None, wrapped, key_md5: None, context: ServiceContext::ElasticTranscoder };
            return Err(match broker.open(as_et, &key_field).await {
                Ok(_) => wrong_context(place, ServiceContext::ElasticTranscoder),
                Err(_) => FieldError::new(
                    key_field,
                    format!("KMS cannot decrypt it under the MediaConvert context {{\"service\":\"mediaconvert.amazonaws.com\"}} ({kms})"),
                )
                .into(),
            });
        }
        Err(source) => return Err(McError::Key { path: key_field, source }),
    };
    grant.check_kms_key(&opened.key_arn)?;
    let bits = opened.key.bits().bits();
    let key_md5 = crate::custody::keys::encode_base64(&broker.settings().key_md5.digest(&opened.key, &kept));
    drop(opened.key);
    let row = KeyRow {
        wrapped_key: text("EncryptedDecryptionKey"),
        kms_key_arn: opened.key_arn,
        context: ServiceContext::MediaConvert,
        mode: et_mode(&mode).to_owned(),
        key_bits: Some(bits),
        iv: Some(iv_text),
        key_md5,
        fingerprint: opened.fingerprint,
        usage: crate::ledger::Usage::Unattached,
        rewrapped_from: None,
    };
    Ok(Some(InputKey { place: place.to_owned(), block: Value::Object(block.clone()), row, rewrapped_from: None }))
}

/// The keybroker file mode of a MediaConvert decryption mode.
fn et_mode(mode: &str) -> &'static str {
    match mode {
        "AES_CTR" => "aes-ctr",
        "AES_GCM" => "aes-gcm",
        _ => "aes-cbc-pkcs7",
    }
}

/// Checks a KMS key the job names for its outputs.
///
/// # Errors
/// [`McError::Denied`] when the policy does not grant it.
pub fn check_output_key(grant: &Grant, key: &KmsKeyId) -> Result<(), McError> {
    Ok(grant.check_kms_key(key.as_str())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kms_key_arn_names_its_region() {
        assert_eq!(kms_key_region("arn:aws:kms:eu-west-1:111122223333:key/1234abcd"), Some("eu-west-1"));
        assert_eq!(kms_key_region("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k"), Some("us-gov-west-1"));
        assert_eq!(kms_key_region("arn:aws:kms:ap-southeast-2:111122223333:alias/a"), Some("ap-southeast-2"));
        for not_one in ["alias/media", "1234abcd", "arn:aws:s3:::bucket", "arn:aws:kms::111122223333:key/k", "local:k"]
        {
            assert_eq!(kms_key_region(not_one), None, "{not_one}");
        }
    }
}
