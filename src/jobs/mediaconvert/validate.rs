//! The MediaConvert model's rules (API 2017-08-29, botocore's
//! `service-2.json`) for every shape the broker writes or checks, held to a
//! CreateJob document in member names before any KMS call, and again once
//! the broker has filled its keys in.
//!
//! Owns those rules: `CreateJobRequest`'s required `Role` and `Settings`
//! and its `UserMetadata` map, `InputDecryptionSettings`,
//! `S3EncryptionSettings` (with `KmsEncryptionContext` a base64 JSON string
//! map), HLS and CMAF encryption settings and `StaticKeyProvider`: JSON
//! types, enums, patterns, lengths, unknown members. The rest of the
//! document is MediaConvert's to judge. Must never quote a key value in a
//! refusal: rules describe, they do not repeat secrets.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::custody::field::{FieldError, echo};

/// The output group types whose settings carry S3 destination settings.
pub const GROUP_SETTINGS: [&str; 5] =
    ["CmafGroupSettings", "DashIsoGroupSettings", "FileGroupSettings", "HlsGroupSettings", "MsSmoothGroupSettings"];

/// The pattern of `S3EncryptionSettings.KmsKeyArn`, spelled out.
const KMS_ARN_RULE: &str = "must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/UUID or key/mrk-HEX)";

type Checked = Result<(), FieldError>;

/// Checks the document; answers the first violation with its JSON path.
///
/// # Errors
/// [`FieldError`] naming the path (`Settings.Inputs[0].DecryptionSettings.DecryptionMode`)
/// and the rule.
pub fn check_job(job: &Value) -> Checked {
    let top = object(job, "create_job_json")?;
    let role = top.get("Role").ok_or_else(|| FieldError::new("Role", "is required"))?;
    string(role, "Role")?;
    let settings = top.get("Settings").ok_or_else(|| FieldError::new("Settings", "is required"))?;
    let settings = object(settings, "Settings")?;
    if let Some(token) = top.get("ClientRequestToken") {
        let token = string(token, "ClientRequestToken")?;
        if token.len() > 64 || !token.is_ascii() {
            return Err(FieldError::new("ClientRequestToken", "at most 64 ASCII characters"));
        }
    }
    if let Some(metadata) = top.get("UserMetadata") {
        for (name, value) in object(metadata, "UserMetadata")? {
            string(value, &format!("UserMetadata.{name}"))?;
        }
    }
    if let Some(inputs) = settings.get("Inputs") {
        for (i, input) in array(inputs, "Settings.Inputs")?.iter().enumerate() {
            let at = format!("Settings.Inputs[{i}]");
            let input = object(input, &at)?;
            if let Some(file) = input.get("FileInput") {
                string(file, &format!("{at}.FileInput"))?;
            }
            if let Some(block) = input.get("DecryptionSettings") {
                check_decryption(block, &format!("{at}.DecryptionSettings"))?;
            }
        }
    }
    if let Some(groups) = settings.get("OutputGroups") {
        for (i, group) in array(groups, "Settings.OutputGroups")?.iter().enumerate() {
            let at = format!("Settings.OutputGroups[{i}]");
            let Some(group_settings) = object(group, &at)?.get("OutputGroupSettings") else { continue };
            let at = format!("{at}.OutputGroupSettings");
            for (kind, settings) in object(group_settings, &at)? {
                if GROUP_SETTINGS.contains(&kind.as_str()) {
                    check_group(kind, settings, &format!("{at}.{kind}"))?;
                }
            }
        }
    }
    Ok(())
}

/// `InputDecryptionSettings`.
fn check_decryption(block: &Value, at: &str) -> Checked {
    let block = object(block, at)?;
    for (member, value) in block {
        let path = format!("{at}.{member}");
        let text = string(value, &path)?;
        match member.as_str() {
            "DecryptionMode" => one_of(text, &["AES_CTR", "AES_CBC", "AES_GCM"], &path)?,
            "EncryptedDecryptionKey" => {
                length(text, 24, 512, &path)?;
                base64_text(text, &path)?;
            }
            "InitializationVector" => {
                length(text, 16, 24, &path)?;
                let bytes = base64_text(text, &path)?;
                if !matches!(bytes, 12 | 16) || (bytes == 16) != (text.len() == 24) {
                    return Err(FieldError::new(path, "must be base64 of 16 bytes (any mode) or 12 bytes (GCM, CTR)"));
                }
            }
            "KmsKeyRegion" => {
                length(text, 9, 19, &path)?;
                if !is_region(text) {
                    return Err(FieldError::new(path, format!("{} is not a region name", echo(text))));
                }
            }
            _ => return Err(unknown(&path)),
        }
    }
    Ok(())
}

/// One `<Type>GroupSettings`: its S3 encryption and, for HLS and CMAF, its
/// packaging encryption.
fn check_group(kind: &str, settings: &Value, at: &str) -> Checked {
    let settings = object(settings, at)?;
    if let Some(destination) = settings.get("DestinationSettings") {
        let at = format!("{at}.DestinationSettings");
        if let Some(s3) = object(destination, &at)?.get("S3Settings") {
            let at = format!("{at}.S3Settings");
            if let Some(encryption) = object(s3, &at)?.get("Encryption") {
                check_s3_encryption(encryption, &format!("{at}.Encryption"))?;
            }
        }
    }
    let Some(encryption) = settings.get("Encryption") else { return Ok(()) };
    let methods: &[&str] = match kind {
        "HlsGroupSettings" => &["AES128", "SAMPLE_AES"],
        "CmafGroupSettings" => &["SAMPLE_AES", "AES_CTR"],
        _ => return Ok(()),
    };
    let at = format!("{at}.Encryption");
    let encryption = object(encryption, &at)?;
    if let Some(method) = encryption.get("EncryptionMethod") {
        let path = format!("{at}.EncryptionMethod");
        one_of(string(method, &path)?, methods, &path)?;
    }
    if let Some(kind) = encryption.get("Type") {
        let path = format!("{at}.Type");
        one_of(string(kind, &path)?, &["SPEKE", "STATIC_KEY"], &path)?;
    }
    if let Some(iv) = encryption.get("ConstantInitializationVector") {
        let path = format!("{at}.ConstantInitializationVector");
        if !is_hex32(string(iv, &path)?) {
            return Err(FieldError::new(path, "must be 32 hexadecimal characters (^[0-9a-fA-F]{32}$)"));
        }
    }
    if let Some(provider) = encryption.get("StaticKeyProvider") {
        check_static_key(provider, &format!("{at}.StaticKeyProvider"))?;
    }
    Ok(())
}

/// `S3EncryptionSettings`.
fn check_s3_encryption(block: &Value, at: &str) -> Checked {
    for (member, value) in object(block, at)? {
        let path = format!("{at}.{member}");
        let text = string(value, &path)?;
        match member.as_str() {
            "EncryptionType" => one_of(text, &["SERVER_SIDE_ENCRYPTION_S3", "SERVER_SIDE_ENCRYPTION_KMS"], &path)?,
            "KmsKeyArn" if !is_kms_key_arn(text) => return Err(FieldError::new(path, KMS_ARN_RULE)),
            "KmsKeyArn" => {}
            "KmsEncryptionContext" => {
                base64_text(text, &path)?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| FieldError::new(&path, "must be base64"))?;
                let parsed: Result<std::collections::BTreeMap<String, String>, _> = serde_json::from_slice(&bytes);
                if parsed.is_err() {
                    return Err(FieldError::new(path, "must be base64 of a UTF-8 JSON object of string pairs"));
                }
            }
            _ => return Err(unknown(&path)),
        }
    }
    Ok(())
}

/// `StaticKeyProvider`.
fn check_static_key(block: &Value, at: &str) -> Checked {
    for (member, value) in object(block, at)? {
        let path = format!("{at}.{member}");
        let text = string(value, &path)?;
        match member.as_str() {
            // The value is a key: the rule is stated, the value never echoed.
            "StaticKeyValue" if !(text.len() == 32 && text.bytes().all(|b| b.is_ascii_alphanumeric())) => {
                return Err(FieldError::new(path, "must be 32 characters of [A-Za-z0-9] (a 128-bit key in hex)"));
            }
            "StaticKeyValue" | "Url" => {}
            "KeyFormat" if !is_key_format(text) => {
                return Err(FieldError::new(path, format!("{} is not `identity` or a reverse-DNS name", echo(text))));
            }
            "KeyFormatVersions" if !is_versions(text) => {
                return Err(FieldError::new(path, format!("{} is not versions like 1/2/3", echo(text))));
            }
            "KeyFormat" | "KeyFormatVersions" => {}
            _ => return Err(unknown(&path)),
        }
    }
    Ok(())
}

fn unknown(path: &str) -> FieldError {
    FieldError::new(path, "is not a member of this shape in the MediaConvert model")
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, FieldError> {
    value.as_object().ok_or_else(|| FieldError::new(at, "must be a JSON object"))
}

fn array<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>, FieldError> {
    value.as_array().ok_or_else(|| FieldError::new(at, "must be a JSON array"))
}

fn string<'a>(value: &'a Value, at: &str) -> Result<&'a str, FieldError> {
    value.as_str().ok_or_else(|| FieldError::new(at, "must be a JSON string"))
}

fn one_of(text: &str, allowed: &[&str], at: &str) -> Checked {
    if allowed.contains(&text) {
        return Ok(());
    }
    Err(FieldError::new(at, format!("{} is not one of {}", echo(text), allowed.join(", "))))
}

fn length(text: &str, min: usize, max: usize, at: &str) -> Checked {
    let len = text.chars().count();
    if (min..=max).contains(&len) {
        return Ok(());
    }
    Err(FieldError::new(at, format!("must be {min} to {max} characters, got {len}")))
}

/// Checks `^[A-Za-z0-9+/]+={0,2}$` and a whole number of base64 quanta;
/// answers the decoded length.
fn base64_text(text: &str, at: &str) -> Result<usize, FieldError> {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    let alphabet = body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if body.is_empty() || padding > 2 || !alphabet {
        return Err(FieldError::new(at, "must be base64 (^[A-Za-z0-9+/]+={0,2}$)"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(|bytes| bytes.len())
        .map_err(|_| FieldError::new(at, "must be canonical, padded base64"))
}

/// `^[a-z-]{2,6}-(east|west|central|((north|south)(east|west)?))-[1-9]{1,2}$`.
pub(super) fn is_region(text: &str) -> bool {
    let mut parts = text.rsplitn(3, '-');
    let (Some(number), Some(direction), Some(area)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let directions = ["east", "west", "central", "north", "south", "northeast", "northwest", "southeast", "southwest"];
    (2..=6).contains(&area.len())
        && area.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && directions.contains(&direction)
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| (b'1'..=b'9').contains(&b))
}

/// An IAM role ARN (`arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`), as a
/// job's `Role` names it.
pub fn is_role_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    let [arn, partition, iam, region, account, resource] = parts.as_slice() else { return false };
    *arn == "arn"
        && partition.starts_with("aws")
        && *iam == "iam"
        && region.is_empty()
        && !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty() && !name.ends_with('/'))
        && !text.contains(char::is_whitespace)
}

/// The model's `KmsKeyArn` pattern.
pub fn is_kms_key_arn(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    let [arn, partition, kms, region, account, resource] = parts.as_slice() else { return false };
    let Some(key) = resource.strip_prefix("key/") else { return false };
    let uuid = key.len() == 36
        && key
            .bytes()
            .enumerate()
            .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() });
    let mrk = key.strip_prefix("mrk-").is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    *arn == "arn"
        && ["aws", "aws-us-gov", "aws-cn"].contains(partition)
        && *kms == "kms"
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (uuid || mrk)
}

/// 32 hexadecimal characters.
pub fn is_hex32(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `^(identity|[A-Za-z]{2,6}(\.[A-Za-z0-9-]{1,63})+)$`.
fn is_key_format(text: &str) -> bool {
    if text == "identity" {
        return true;
    }
    let mut labels = text.split('.');
    let first = labels.next().unwrap_or_default();
    let rest: Vec<&str> = labels.collect();
    (2..=6).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && !rest.is_empty()
        && rest.iter().all(|l| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// `^(\d+(\/\d+)*)$`.
fn is_versions(text: &str) -> bool {
    text.split('/').all(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job_with_input(block: Value) -> Value {
        json!({"Role": "arn:aws:iam::111122223333:role/R", "Settings": {"Inputs": [{"FileInput": "s3://b/k", "DecryptionSettings": block}]}})
    }

    #[test]
    fn decryption_settings_rules_name_the_path() {
        let key = "A".repeat(40);
        assert_eq!(
            check_job(&job_with_input(
                json!({"DecryptionMode": "AES_CBC", "EncryptedDecryptionKey": key, "InitializationVector": "AAAAAAAAAAAAAAAAAAAAAA=="})
            )),
            Ok(())
        );
        let bad_mode = check_job(&job_with_input(json!({"DecryptionMode": "AES_ECB"}))).unwrap_err();
        assert_eq!(bad_mode.field, "Settings.Inputs[0].DecryptionSettings.DecryptionMode");
        let short_key = check_job(&job_with_input(json!({"EncryptedDecryptionKey": "AAAA"}))).unwrap_err();
        assert!(short_key.rule.contains("24 to 512"), "{short_key}");
        let bad_iv = check_job(&job_with_input(json!({"InitializationVector": "AAAAAAAAAAAAAAAAAAAA"}))).unwrap_err();
        assert_eq!(bad_iv.field, "Settings.Inputs[0].DecryptionSettings.InitializationVector");
        let twelve = check_job(&job_with_input(json!({"InitializationVector": "AAAAAAAAAAAAAAAA"})));
        assert_eq!(twelve, Ok(()));
        let extra = check_job(&job_with_input(json!({"KeyMd5": "x"}))).unwrap_err();
        assert!(extra.rule.contains("not a member"), "{extra}");
        assert_eq!(check_job(&json!({"Settings": {}})).unwrap_err().field, "Role");
    }

    #[test]
    fn group_rules_cover_s3_encryption_and_static_keys() {
        let group = |settings: Value| json!({"Role": "r", "Settings": {"OutputGroups": [{"OutputGroupSettings": {"Type": "HLS_GROUP_SETTINGS", "HlsGroupSettings": settings}}]}});
        let arn = "arn:aws:kms:us-east-1:111122223333:key/12345678-1234-1234-1234-123456789012";
        let context = base64::engine::general_purpose::STANDARD.encode(br#"{"a":"b"}"#);
        let good = group(json!({
            "DestinationSettings": {"S3Settings": {"Encryption": {"EncryptionType": "SERVER_SIDE_ENCRYPTION_KMS", "KmsKeyArn": arn, "KmsEncryptionContext": context}}},
            "Encryption": {"EncryptionMethod": "AES128", "Type": "STATIC_KEY", "ConstantInitializationVector": "0123456789abcdef0123456789ABCDEF",
                           "StaticKeyProvider": {"StaticKeyValue": "0123456789abcdef0123456789abcdef", "Url": "https://k", "KeyFormat": "identity", "KeyFormatVersions": "1"}}
        }));
        assert_eq!(check_job(&good), Ok(()));
        let bad_arn = group(json!({"DestinationSettings": {"S3Settings": {"Encryption": {"KmsKeyArn": "alias/x"}}}}));
        assert!(check_job(&bad_arn).unwrap_err().field.ends_with("S3Settings.Encryption.KmsKeyArn"));
        let not_map = base64::engine::general_purpose::STANDARD.encode(b"[1]");
        let bad_context =
            group(json!({"DestinationSettings": {"S3Settings": {"Encryption": {"KmsEncryptionContext": not_map}}}}));
        assert!(check_job(&bad_context).unwrap_err().rule.contains("JSON object of string pairs"));
        let secret = "zz".repeat(20);
        let bad_key = group(json!({"Encryption": {"StaticKeyProvider": {"StaticKeyValue": secret}}}));
        let err = check_job(&bad_key).unwrap_err();
        assert!(!err.to_string().contains("zzzz"), "a refusal never repeats a key: {err}");
        let cmaf_method = json!({"Role": "r", "Settings": {"OutputGroups": [{"OutputGroupSettings": {"CmafGroupSettings": {"Encryption": {"EncryptionMethod": "AES128"}}}}]}});
        assert!(check_job(&cmaf_method).unwrap_err().field.ends_with("CmafGroupSettings.Encryption.EncryptionMethod"));
        assert!(is_kms_key_arn("arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"));
        assert!(!is_kms_key_arn("arn:aws:kms:us-east-1:111122223333:alias/x"));
    }
}
