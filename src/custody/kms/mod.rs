//! KMS backends behind one trait: wrapping and unwrapping data keys under a
//! service's encryption context.
//!
//! [`backend`] holds the trait and its failures, [`key`] the key-id grammar;
//! [`aws`] and [`local`] implement the trait. Backends must never log key
//! bytes.

pub mod aws;
pub mod backend;
pub mod key;
pub mod local;

pub use aws::AwsKms;
pub use backend::{Described, Kms, KmsError, KmsErrorKind, Rewrapped, Unwrapped, Wrapped};
pub use key::{KeyArn, KmsKeyId, MAX_KEY_ID_LEN};
pub use local::LocalKeyring;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_of_every_form_parse() {
        for id in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/media",
            "arn:aws:kms:us-east-2:111122223333:alias/media",
        ] {
            assert!(KmsKeyId::parse(id, "kms_key_id").is_ok(), "{id}");
        }
    }

    #[test]
    fn bad_key_ids_name_field_and_rule() {
        let long = "k".repeat(2049);
        for (id, rule) in [
            ("", "must not be empty"),
            (long.as_str(), "at most 2048"),
            ("alias/a b", "without whitespace"),
            ("arn:aws:s3:::bucket", "must be an ARN"),
        ] {
            let err = KmsKeyId::parse(id, "kms_key_id").unwrap_err().to_string();
            assert!(err.starts_with("kms_key_id: ") && err.contains(rule), "{err}");
        }
        assert!(KmsKeyId::parse(&"k".repeat(2048), "kms_key_id").is_ok());
    }

    #[test]
    fn arn_parts() {
        let arn = KeyArn::parse("arn:aws:kms:eu-west-1:111122223333:key/abc").unwrap();
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "111122223333");
        assert_eq!(arn.resource, "key/abc");
    }

    proptest::proptest! {
        /// Whatever a caller names a key, it is parsed or refused naming the
        /// field; what is accepted has no whitespace and fits KMS's limit.
        #[test]
        fn any_key_id_is_parsed_or_refused(text in "\\PC{0,60}|arn:[a-z:/-]{0,40}") {
            match KmsKeyId::parse(&text, "kms_key_id") {
                Ok(id) => {
                    proptest::prop_assert!(!id.as_str().is_empty() && id.as_str().chars().count() <= MAX_KEY_ID_LEN);
                    proptest::prop_assert!(!id.as_str().chars().any(char::is_whitespace));
                }
                Err(err) => proptest::prop_assert_eq!(err.field, "kms_key_id"),
            }
        }
    }
}
