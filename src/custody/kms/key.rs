//! The key-id grammar: how a caller names a KMS key (key id, key ARN,
//! alias name, alias ARN), and the parts of an ARN. Refuses malformed ids
//! with a [`FieldError`] naming the field.

use std::fmt;

use crate::custody::field::FieldError;

/// The most characters a key id may have (the KMS API's limit).
pub const MAX_KEY_ID_LEN: usize = 2048;

/// A KMS key as a caller names it: key id, key ARN, alias name or alias ARN.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KmsKeyId(String);

impl KmsKeyId {
    /// Parses a key id from a request field.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` when empty, longer than 2,048
    /// characters, or holding whitespace or control characters.
    pub fn parse(text: &str, field: &str) -> Result<Self, FieldError> {
        let rule = if text.is_empty() {
            Some("must not be empty".to_owned())
        } else if text.chars().count() > MAX_KEY_ID_LEN {
            Some(format!("must be at most {MAX_KEY_ID_LEN} characters, got {}", text.chars().count()))
        } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must be a key id, key ARN, alias name or alias ARN without whitespace".to_owned())
        } else if text.starts_with("arn:") && KeyArn::parse(text).is_none() {
            Some("must be an ARN of the form arn:PARTITION:kms:REGION:ACCOUNT:key/ID or …:alias/NAME".to_owned())
        } else {
            None
        };
        match rule {
            Some(rule) => Err(FieldError::new(field, rule)),
            None => Ok(KmsKeyId(text.to_owned())),
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN's parts, when the id is an ARN.
    pub fn arn(&self) -> Option<KeyArn<'_>> {
        KeyArn::parse(&self.0)
    }
}

impl fmt::Debug for KmsKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsKeyId({})", self.0)
    }
}

impl fmt::Display for KmsKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts of a KMS key or alias ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyArn<'a> {
    /// `aws`, `aws-cn`, …
    pub partition: &'a str,
    /// The key's region.
    pub region: &'a str,
    /// The owning account.
    pub account: &'a str,
    /// `key/ID` or `alias/NAME`.
    pub resource: &'a str,
}

impl<'a> KeyArn<'a> {
    /// Splits `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` (or `alias/NAME`).
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(6, ':');
        let (arn, partition, service, region, account, resource) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let resource_ok = resource
            .strip_prefix("key/")
            .or_else(|| resource.strip_prefix("alias/"))
            .is_some_and(|rest| !rest.is_empty());
        (arn == "arn" && service == "kms" && !partition.is_empty() && !region.is_empty() && resource_ok)
            .then_some(KeyArn { partition, region, account, resource })
    }
}
