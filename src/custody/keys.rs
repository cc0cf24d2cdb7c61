//! Data keys, IVs and digests: the only module that holds plaintext key bytes.
//!
//! A [`DataKey`] lives in zeroizing memory, has no `Clone`, `Debug` output
//! without bytes, no `Display` and no `Serialize`; its bytes are reached only
//! through [`DataKey::expose_secret`]. Wrapped keys ([`WrappedKey`]) are a
//! distinct type, so a plaintext key cannot be put where a wrapped one belongs.
//! This module must never log, format or persist plaintext.

use std::collections::HashMap;
use std::fmt;

use crate::custody::field::{FieldError, echo};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest as _, Md5};
use secrecy::{ExposeSecret as _, ExposeSecretMut as _, SecretSlice};
use zeroize::Zeroizing;

/// Errors of key material and its text forms; every message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A value broke a documented rule of a request field.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The operating system's CSPRNG failed; no key was made.
    #[error("the operating system's random number generator failed")]
    Random,
}

impl KeyError {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        KeyError::Invalid(FieldError::new(field, rule))
    }
}

/// An AES key length Elastic Transcoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyBits {
    /// AES-128 (the only length HLS content protection takes).
    Aes128,
    /// AES-192.
    Aes192,
    /// AES-256, the default.
    Aes256,
}

impl KeyBits {
    /// Parses a request's `key_bits`, where 0 means the default, 256.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` for anything but 0, 128, 192, 256.
    pub fn parse(bits: u32, field: &str) -> Result<Self, KeyError> {
        match bits {
            0 | 256 => Ok(KeyBits::Aes256),
            128 => Ok(KeyBits::Aes128),
            192 => Ok(KeyBits::Aes192),
            other => Err(KeyError::invalid(field, format!("must be 128, 192 or 256 (0 means 256), got {other}"))),
        }
    }

    /// Parses a key's length in bytes.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` for anything but 16, 24 or 32.
    pub fn from_len(len: usize, field: &str) -> Result<Self, KeyError> {
        match len {
            16 => Ok(KeyBits::Aes128),
            24 => Ok(KeyBits::Aes192),
            32 => Ok(KeyBits::Aes256),
            other => {
                Err(KeyError::invalid(field, format!("must be 16, 24 or 32 bytes of AES key material, got {other}")))
            }
        }
    }

    /// The key length in bytes.
    pub fn bytes(self) -> usize {
        match self {
            KeyBits::Aes128 => 16,
            KeyBits::Aes192 => 24,
            KeyBits::Aes256 => 32,
        }
    }

    /// The key length in bits.
    pub fn bits(self) -> u32 {
        self.bytes() as u32 * 8
    }
}

/// An Elastic Transcoder `Encryption.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionMode {
    /// SSE-S3: nothing to broker.
    S3,
    /// SSE-KMS with the pipeline's key: nothing to broker.
    S3AwsKms,
    /// AES-CBC with PKCS#7 padding.
    AesCbcPkcs7,
    /// AES-CTR, the IV as the initial counter block.
    AesCtr,
    /// AES-GCM, the 16-byte IV as nonce, the tag appended.
    AesGcm,
}

impl EncryptionMode {
    /// Every mode, in ET's spelling, for error messages.
    pub const ALL: &'static str = "aes-cbc-pkcs7, aes-ctr, aes-gcm, s3 or s3-aws-kms";

    /// Parses ET's lower-case spelling.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` for any other text.
    pub fn parse(text: &str, field: &str) -> Result<Self, KeyError> {
        match text {
            "s3" => Ok(EncryptionMode::S3),
            "s3-aws-kms" => Ok(EncryptionMode::S3AwsKms),
            "aes-cbc-pkcs7" => Ok(EncryptionMode::AesCbcPkcs7),
            "aes-ctr" => Ok(EncryptionMode::AesCtr),
            "aes-gcm" => Ok(EncryptionMode::AesGcm),
            other => {
                Err(KeyError::invalid(field, format!("must be one of {} (lower case), got {}", Self::ALL, echo(other))))
            }
        }
    }

    /// Parses a mode that needs a key: one of the three AES modes; empty
    /// means `aes-cbc-pkcs7`.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` for `s3`, `s3-aws-kms` or unknown text.
    pub fn parse_aes(text: &str, field: &str) -> Result<Self, KeyError> {
        if text.is_empty() {
            return Ok(EncryptionMode::AesCbcPkcs7);
        }
        match Self::parse(text, field) {
            Ok(mode) if mode.is_aes() => Ok(mode),
            _ => Err(KeyError::invalid(
                field,
                format!("must be aes-cbc-pkcs7, aes-ctr or aes-gcm (lower case), got {}", echo(text)),
            )),
        }
    }

    /// ET's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionMode::S3 => "s3",
            EncryptionMode::S3AwsKms => "s3-aws-kms",
            EncryptionMode::AesCbcPkcs7 => "aes-cbc-pkcs7",
            EncryptionMode::AesCtr => "aes-ctr",
            EncryptionMode::AesGcm => "aes-gcm",
        }
    }

    /// Whether the mode needs a customer-provided key.
    pub fn is_aes(self) -> bool {
        matches!(self, EncryptionMode::AesCbcPkcs7 | EncryptionMode::AesCtr | EncryptionMode::AesGcm)
    }
}

/// The KMS encryption context that binds a wrapped key: the service that
/// will decrypt it, or the broker's own purpose for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceContext {
    /// `{"service":"elastictranscoder.amazonaws.com"}`
    #[default]
    ElasticTranscoder,
    /// `{"service":"mediaconvert.amazonaws.com"}`
    MediaConvert,
    /// `{"purpose":"keybroker-audit-chain"}`: the audit log's chain key,
    /// which only the broker (and `keybroker audit`) unwraps.
    AuditChain,
}

impl ServiceContext {
    /// The context's one entry, name and value.
    pub fn entry(self) -> (&'static str, &'static str) {
        match self {
            ServiceContext::ElasticTranscoder => ("service", "elastictranscoder.amazonaws.com"),
            ServiceContext::MediaConvert => ("service", "mediaconvert.amazonaws.com"),
            ServiceContext::AuditChain => ("purpose", "keybroker-audit-chain"),
        }
    }

    /// The KMS encryption context, exactly as the service decrypts with it.
    pub fn encryption_context(self) -> HashMap<String, String> {
        let (name, value) = self.entry();
        HashMap::from([(name.to_owned(), value.to_owned())])
    }
}

/// A plaintext AES data key in memory that is zeroized on drop
/// (`secrecy`'s boxed secret: one heap buffer, never reallocated, wiped
/// when dropped).
///
/// No `Clone`, no `Display`, no `Serialize`; `Debug` prints the length only.
pub struct DataKey {
    bytes: SecretSlice<u8>,
}

impl DataKey {
    /// Draws a fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS generator fails.
    pub fn generate(bits: KeyBits) -> Result<Self, KeyError> {
        let mut bytes = SecretSlice::from(vec![0u8; bits.bytes()]);
        getrandom::fill(bytes.expose_secret_mut()).map_err(|_| KeyError::Random)?;
        Ok(DataKey { bytes })
    }

    /// Takes ownership of key material without copying it (the `Vec` is
    /// moved into zeroizing storage, so its one buffer is wiped on drop).
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` unless it is 16, 24 or 32 bytes;
    /// the rejected bytes are zeroized too.
    pub fn from_vec(bytes: Vec<u8>, field: &str) -> Result<Self, KeyError> {
        let bytes = secret_from_vec(bytes);
        KeyBits::from_len(bytes.expose_secret().len(), field)?;
        Ok(DataKey { bytes })
    }

    /// The key's length.
    pub fn bits(&self) -> KeyBits {
        match self.bytes.expose_secret().len() {
            16 => KeyBits::Aes128,
            24 => KeyBits::Aes192,
            _ => KeyBits::Aes256,
        }
    }

    /// The plaintext bytes, for the few places that must have them (KMS
    /// wrapping, ciphers, permitted export).
    pub fn expose_secret(&self) -> &[u8] {
        self.bytes.expose_secret()
    }

    /// The MD5 digest of the plaintext key (ET's `KeyMd5`, first reading).
    pub fn md5(&self) -> [u8; 16] {
        md5_of(self.expose_secret())
    }
}

/// Moves key bytes into a secret without leaving a copy behind: a buffer
/// with spare capacity would be reallocated by `into_boxed_slice`, the old
/// one freed unwiped, so such bytes are copied into an exact-size buffer
/// and the original is wiped.
fn secret_from_vec(bytes: Vec<u8>) -> SecretSlice<u8> {
    if bytes.capacity() == bytes.len() {
        return SecretSlice::from(bytes);
    }
    let original = Zeroizing::new(bytes);
    SecretSlice::from(original.to_vec())
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({} bits, redacted)", self.expose_secret().len() * 8)
    }
}

/// A data key as KMS wrapped it: the ciphertext blob. Not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// Wraps a ciphertext blob as KMS returned it.
    pub fn new(blob: Vec<u8>) -> Self {
        WrappedKey(blob)
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The blob as ET's base64 `Key`.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

/// A 16-byte IV drawn from the OS CSPRNG, unique per file. Not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Iv16(pub [u8; 16]);

impl Iv16 {
    /// Draws a fresh IV.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).map_err(|_| KeyError::Random)?;
        Ok(Iv16(iv))
    }

    /// Takes a caller's IV.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field` unless it is exactly 16 bytes.
    pub fn from_slice(bytes: &[u8], field: &str) -> Result<Self, KeyError> {
        <[u8; 16]>::try_from(bytes)
            .map(Iv16)
            .map_err(|_| KeyError::invalid(field, format!("must be exactly 16 bytes, got {}", bytes.len())))
    }
}

/// Which bytes ET's `KeyMd5` digests (ET-ENCRYPTION.md: the API reference says
/// the plaintext key, the tutorial the KMS ciphertext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMd5Source {
    /// MD5 of the plaintext AES key (the API reference's reading; default).
    #[default]
    Plaintext,
    /// MD5 of the KMS ciphertext blob (the tutorial's reading).
    Ciphertext,
}

impl KeyMd5Source {
    /// The digest this source names.
    pub fn digest(self, plaintext: &DataKey, wrapped: &WrappedKey) -> [u8; 16] {
        match self {
            KeyMd5Source::Plaintext => plaintext.md5(),
            KeyMd5Source::Ciphertext => md5_of(wrapped.as_bytes()),
        }
    }
}

/// MD5 of any bytes; a transit checksum, never a security control.
pub fn md5_of(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

/// An ET `Encryption` element of a key the broker made or checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionBlock {
    /// The mode.
    pub mode: EncryptionMode,
    /// The KMS-wrapped key.
    pub wrapped: WrappedKey,
    /// The `KeyMd5` digest.
    pub key_md5: [u8; 16],
    /// The IV.
    pub iv: Iv16,
}

impl EncryptionBlock {
    /// The block in ET's text form: (mode, Key, KeyMd5, InitializationVector).
    pub fn to_text(&self) -> EncryptionText {
        EncryptionText {
            mode: self.mode.as_str().to_owned(),
            key: self.wrapped.to_base64(),
            key_md5: BASE64.encode(self.key_md5),
            initialization_vector: BASE64.encode(self.iv.0),
        }
    }
}

/// An `Encryption` element in ET's text form, as callers send and receive it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionText {
    /// `Mode`.
    #[serde(default)]
    pub mode: String,
    /// `Key`, KMS-wrapped, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `KeyMd5`, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_md5: String,
    /// `InitializationVector`, base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initialization_vector: String,
}

/// Whether `text` matches ET's base64 pattern
/// `^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$`.
pub fn is_et_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return false;
    }
    bytes[..bytes.len() - pad].iter().all(|&b| alphabet(b))
}

/// Decodes one base64 field of an `Encryption` element.
///
/// # Errors
/// [`KeyError::Invalid`] naming `field` when it is not ET's base64.
pub fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, KeyError> {
    if !is_et_base64(text) {
        return Err(KeyError::invalid(field, "must be standard base64 with padding (ET's pattern)"));
    }
    BASE64.decode(text).map_err(|_| KeyError::invalid(field, "must be standard base64 with padding"))
}

/// Encodes bytes as ET's base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bits_accepts_only_aes_lengths() {
        assert_eq!(KeyBits::parse(0, "key_bits"), Ok(KeyBits::Aes256));
        assert_eq!(KeyBits::parse(128, "key_bits"), Ok(KeyBits::Aes128));
        assert_eq!(KeyBits::parse(192, "key_bits"), Ok(KeyBits::Aes192));
        let err = KeyBits::parse(64, "key_bits").unwrap_err().to_string();
        assert!(err.starts_with("key_bits: must be 128, 192 or 256"), "{err}");
    }

    #[test]
    fn generated_keys_have_the_asked_length_and_differ() {
        for bits in [KeyBits::Aes128, KeyBits::Aes192, KeyBits::Aes256] {
            let a = DataKey::generate(bits).unwrap();
            let b = DataKey::generate(bits).unwrap();
            assert_eq!(a.expose_secret().len(), bits.bytes());
            assert_ne!(a.expose_secret(), b.expose_secret());
        }
    }

    #[test]
    fn debug_of_a_data_key_shows_no_bytes() {
        let key = DataKey::from_vec(vec![0xAB; 32], "k").unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "DataKey(256 bits, redacted)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn md5_matches_rfc1321_vector() {
        // RFC 1321 appendix A.5: MD5("abc").
        assert_eq!(hex::encode(md5_of(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn et_base64_pattern() {
        for good in ["", "AAAA", "AA==", "AAA=", "ab+/cd9="] {
            assert!(is_et_base64(good), "{good}");
        }
        for bad in ["A", "AAA", "A===", "AA-_", "AA=A", "AAAA\n"] {
            assert!(!is_et_base64(bad), "{bad}");
        }
    }

    #[test]
    fn modes_parse_in_lower_case_only() {
        assert_eq!(EncryptionMode::parse_aes("", "mode"), Ok(EncryptionMode::AesCbcPkcs7));
        assert!(EncryptionMode::parse("AES-GCM", "mode").is_err());
        assert!(EncryptionMode::parse_aes("s3", "mode").is_err());
        assert_eq!(EncryptionMode::parse("s3-aws-kms", "mode"), Ok(EncryptionMode::S3AwsKms));
    }

    #[test]
    fn ivs_are_16_bytes() {
        assert!(Iv16::from_slice(&[0; 12], "iv").is_err());
        assert_ne!(Iv16::generate().unwrap(), Iv16::generate().unwrap());
    }
}
