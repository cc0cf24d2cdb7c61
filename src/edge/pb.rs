//! The generated `keybroker.v1` protobuf and gRPC code, with `Debug`
//! impls that redact the messages carrying plaintext keys.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("keybroker.v1");

/// The encoded descriptors of `keybroker.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keybroker_descriptor");

use std::fmt;

/// Stands in for a plaintext key in `Debug` output: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

// The messages build.rs lists in KEY_MESSAGES: every field but the key.

impl fmt::Debug for IssueDataKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueDataKeyResponse")
            .field("encryption", &self.encryption)
            .field("kms_key_arn", &self.kms_key_arn)
            .field("plaintext_key", &Redacted(self.plaintext_key.len()))
            .field("key_fingerprint", &self.key_fingerprint)
            .finish()
    }
}

impl fmt::Debug for WrapKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapKeyRequest")
            .field("kms_key_id", &self.kms_key_id)
            .field("plaintext_key", &Redacted(self.plaintext_key.len()))
            .field("mode", &self.mode)
            .field("context", &self.context)
            .field("initialization_vector", &self.initialization_vector)
            .finish()
    }
}

impl fmt::Debug for UnwrapKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapKeyResponse")
            .field("plaintext_key", &Redacted(self.plaintext_key.len()))
            .field("kms_key_arn", &self.kms_key_arn)
            .field("initialization_vector", &self.initialization_vector)
            .field("key_fingerprint", &self.key_fingerprint)
            .finish()
    }
}

impl fmt::Debug for PlayReadyDrm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlayReadyDrm")
            .field("format", &self.format)
            .field("content_key", &Redacted(self.content_key.len()))
            .field("key", &self.key)
            .field("key_md5", &self.key_md5)
            .field("key_id", &self.key_id)
            .field("initialization_vector", &self.initialization_vector)
            .field("license_acquisition_url", &self.license_acquisition_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key's bytes in every form a leak could take.
    fn forms(key: &[u8]) -> Vec<String> {
        use base64::Engine as _;
        vec![
            hex::encode(key),
            base64::engine::general_purpose::STANDARD.encode(key),
            format!("{key:?}"),
            format!("{:?}", key.to_vec()),
        ]
    }

    #[test]
    fn messages_carrying_plaintext_keys_never_show_them_in_debug_output() {
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let shown = [
            format!("{:#?}", IssueDataKeyResponse { plaintext_key: key.clone(), ..Default::default() }),
            format!("{:?}", WrapKeyRequest { plaintext_key: key.clone(), ..Default::default() }),
            format!("{:?}", UnwrapKeyResponse { plaintext_key: key.clone(), ..Default::default() }),
            format!("{:?}", PlayReadyDrm { content_key: key.clone(), ..Default::default() }),
            format!(
                "{:?}",
                Playlist {
                    play_ready_drm: Some(PlayReadyDrm { content_key: key.clone(), ..Default::default() }),
                    ..Default::default()
                }
            ),
        ];
        for text in &shown {
            assert!(text.contains("<redacted 32 bytes>"), "{text}");
            for form in forms(&key) {
                assert!(!text.contains(&form), "{text} shows the key as {form}");
            }
        }
        // The other fields still show.
        let wrap = WrapKeyRequest { kms_key_id: "alias/media".to_owned(), ..Default::default() };
        assert!(format!("{wrap:?}").contains("alias/media"));
    }
}
