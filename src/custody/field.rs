//! The one error of bad input: a request field and the rule it broke.
//!
//! Every parser at the edge and every domain check of caller input answers
//! with a [`FieldError`], so a status message always reads
//! `field: rule` (`key_bits: must be 128, 192 or 256 (0 means 256), got 64`).
//! Must never carry key bytes: rules describe, they do not quote secrets.
//! A rule that repeats what the caller sent repeats at most a short,
//! escaped prefix of it ([`echo`]), so a megabyte of input cannot become a
//! megabyte of status, log line and audit record.

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

/// The most characters of a caller's value a message repeats.
pub const ECHO_CHARS: usize = 32;

/// A caller's value as a message may repeat it: quoted and escaped, at most
/// [`ECHO_CHARS`] characters of it, and its length in bytes when cut.
pub fn echo(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_repeats_a_short_escaped_prefix_only() {
        assert_eq!(echo("aes-ofb"), "\"aes-ofb\"");
        assert_eq!(echo("a\nb\"c"), "\"a\\nb\\\"c\"");
        let long = "x".repeat(1_000_000);
        let shown = echo(&long);
        assert_eq!(shown, format!("\"{}\"… (1000000 bytes)", "x".repeat(ECHO_CHARS)));
        let wide = "é".repeat(40);
        assert!(echo(&wide).starts_with(&format!("\"{}\"…", "é".repeat(ECHO_CHARS))), "cut on a character boundary");
        assert_eq!(
            echo(&"y".repeat(ECHO_CHARS)),
            format!("{:?}", "y".repeat(ECHO_CHARS)),
            "exactly the limit is whole"
        );
    }

    #[test]
    fn reads_field_then_rule_and_nests() {
        let err = FieldError::new("mode", "must be aes-gcm");
        assert_eq!(err.to_string(), "mode: must be aes-gcm");
        assert_eq!(err.within("start").to_string(), "start.mode: must be aes-gcm");
    }

    proptest::proptest! {
        /// Whatever the caller sends, the echo is short and never panics.
        #[test]
        fn any_value_echoes_short(value in "\\PC{0,300}") {
            let shown = echo(&value);
            proptest::prop_assert!(shown.chars().count() <= 2 + 4 * ECHO_CHARS + 40, "{}", shown);
            proptest::prop_assert!(shown.starts_with('"'));
        }
    }
}
