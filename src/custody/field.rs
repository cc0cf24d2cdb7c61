//! The one error of bad input: a request field and the rule it broke.
//!
//! Every parser at the edge and every domain check of caller input answers
//! with a [`FieldError`], so a status message always reads
//! `field: rule` (`key_bits: must be 128, 192 or 256 (0 means 256), got 64`).
//! Must never carry key bytes: rules describe, they do not quote secrets.

/// A request field that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// The field as the caller wrote it, e.g. `key_bits` or
    /// `outputs[3].encryption.key`.
    pub field: String,
    /// The rule it broke.
    pub rule: String,
}

impl FieldError {
    /// `field` broke `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldError { field: field.into(), rule: rule.into() }
    }

    /// The same error for a field nested in `parent` (`start` makes
    /// `mode` into `start.mode`).
    #[must_use]
    pub fn within(self, parent: &str) -> Self {
        FieldError { field: format!("{parent}.{}", self.field), rule: self.rule }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_field_then_rule_and_nests() {
        let err = FieldError::new("mode", "must be aes-gcm");
        assert_eq!(err.to_string(), "mode: must be aes-gcm");
        assert_eq!(err.within("start").to_string(), "start.mode: must be aes-gcm");
    }
}
