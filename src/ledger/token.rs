//! A caller's idempotency token (`request_token`): 1 to 64 printable ASCII
//! characters, scoped to the caller's identity.
//!
//! Owns the token's rules and the value that travels in a job's
//! `UserMetadata`. Must never accept a token it could not echo safely.

use sha2::{Digest as _, Sha256};

use crate::custody::field::{FieldError, echo};

/// The `UserMetadata` key a job's token travels under.
pub const METADATA_KEY: &str = "keybroker-request-token";

/// The longest token, in characters.
pub const MAX_TOKEN_CHARS: usize = 64;

/// A parsed `request_token`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestToken(String);

impl RequestToken {
    /// Parses `text`; empty is no token.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when it is longer than 64 characters or
    /// holds anything but printable ASCII.
    pub fn parse_optional(text: &str, field: &str) -> Result<Option<RequestToken>, FieldError> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_TOKEN_CHARS {
            return Err(FieldError::new(field, format!("at most {MAX_TOKEN_CHARS} characters, got {}", text.len())));
        }
        if let Some(bad) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(FieldError::new(
                field,
                format!("{} holds {bad:?}: only printable ASCII (space to ~) is allowed", echo(text)),
            ));
        }
        Ok(Some(RequestToken(text.to_owned())))
    }

    /// The token as the caller wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `UserMetadata` value that names this token of `identity` in an
    /// Elastic Transcoder job: the SHA-256 of both, hex (ET allows only
    /// some characters in metadata, and a job names no caller).
    pub fn metadata_value(&self, identity: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(identity.as_bytes());
        hash.update([0]);
        hash.update(self.0.as_bytes());
        hex::encode(hash.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_one_to_64_printable_ascii_characters() {
        assert_eq!(RequestToken::parse_optional("", "request_token").unwrap(), None);
        let ok = RequestToken::parse_optional("job 42: retry-safe ~", "request_token").unwrap().unwrap();
        assert_eq!(ok.as_str(), "job 42: retry-safe ~");
        assert!(RequestToken::parse_optional(&"a".repeat(64), "t").unwrap().is_some());
        let long = RequestToken::parse_optional(&"a".repeat(65), "request_token").unwrap_err();
        assert_eq!(long.field, "request_token");
        assert!(long.rule.contains("at most 64"), "{}", long.rule);
        for bad in ["tab\there", "new\nline", "é", "nul\0"] {
            let err = RequestToken::parse_optional(bad, "request_token").unwrap_err();
            assert!(err.rule.contains("printable ASCII"), "{bad:?}: {}", err.rule);
        }
    }

    #[test]
    fn the_metadata_value_is_scoped_to_the_identity() {
        let token = RequestToken::parse_optional("t-1", "t").unwrap().unwrap();
        let a = token.metadata_value("spiffe://example.org/encoder");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, token.metadata_value("spiffe://example.org/other"));
        assert_eq!(a, token.metadata_value("spiffe://example.org/encoder"));
    }
}
