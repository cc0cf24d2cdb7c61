//! Where S3 mode reads and writes, and how its failures are told apart:
//! [`S3Location`], [`S3Transfer`], the [`Cancel`] token that stops a
//! transfer, and [`S3ErrorKind`], the S3 error codes sorted by what a
//! caller can do about them.
//!
//! Owns the checks of a request's bucket and key. Must never talk to S3
//! itself (the upload machinery does) and never sees key material.

use std::fmt;

use tokio::sync::watch;

use crate::app::aws::SdkFailure;
use crate::custody::keys::KeyError;

/// An S3 object: a bucket and a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    bucket: String,
    key: String,
}

impl S3Location {
    /// Checks a request's location.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming `field.bucket` or `field.key`.
    pub fn parse(bucket: &str, key: &str, field: &str) -> Result<Self, KeyError> {
        if bucket.is_empty() || bucket.len() > 255 || bucket.contains('/') {
            return Err(KeyError::invalid(
                format!("{field}.bucket"),
                "must be an S3 bucket name (1 to 255 characters, no '/')",
            ));
        }
        if key.is_empty() || key.len() > 1024 {
            return Err(KeyError::invalid(format!("{field}.key"), "must be an S3 object key of 1 to 1024 bytes"));
        }
        Ok(S3Location { bucket: bucket.to_owned(), key: key.to_owned() })
    }

    /// Reads an `s3://bucket/key` URL; `None` when `text` is no `s3://` URL.
    ///
    /// # Errors
    /// `Some(Err)` when it is one but names no bucket or no key.
    pub fn from_url(text: &str) -> Option<Result<Self, KeyError>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(Self::parse(bucket, key, text))
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// S3 mode: where the broker reads and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Transfer {
    /// The object read.
    pub source: S3Location,
    /// The object written, only once the whole stream succeeded.
    pub destination: S3Location,
}

/// What S3 answered for an object the broker wrote: its version id (on a
/// versioned bucket) and its ETag.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredObject {
    /// The version S3 made; `None` on a bucket without versioning.
    pub version_id: Option<String>,
    /// The ETag S3 answered.
    pub etag: Option<String>,
}

impl StoredObject {
    /// From an SDK answer's fields; S3 answers `null` for the version of
    /// an object written where versioning is suspended.
    pub(super) fn answered(version_id: Option<&str>, etag: Option<&str>) -> Self {
        let given = |text: Option<&str>| text.filter(|t| !t.is_empty() && *t != "null").map(str::to_owned);
        StoredObject { version_id: given(version_id), etag: etag.filter(|t| !t.is_empty()).map(str::to_owned) }
    }
}

/// The kinds of S3 failure a caller can act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// No such bucket or object.
    NotFound,
    /// S3 denied the broker access.
    AccessDenied,
    /// Throttling, an outage, a timeout or a broken connection: retry.
    Unavailable,
    /// S3 found the request malformed (a bad bucket name, say).
    Invalid,
    /// Any other refusal.
    Rejected,
}

impl S3ErrorKind {
    pub(super) fn of(failure: &SdkFailure) -> Self {
        if failure.transport {
            return S3ErrorKind::Unavailable;
        }
        match failure.code.as_deref().unwrap_or("") {
            "NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload" => S3ErrorKind::NotFound,
            "AccessDenied"
            | "AllAccessDisabled"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "AccountProblem"
            | "Forbidden" => S3ErrorKind::AccessDenied,
            "SlowDown"
            | "ServiceUnavailable"
            | "InternalError"
            | "RequestTimeout"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeTooSkewed" => S3ErrorKind::Unavailable,
            "InvalidBucketName" | "KeyTooLongError" | "InvalidArgument" => S3ErrorKind::Invalid,
            _ => S3ErrorKind::Rejected,
        }
    }
}

/// Tells a running S3 transfer to stop, and its multipart upload to be
/// aborted: the caller broke the stream or went away.
#[derive(Debug, Clone)]
pub struct Cancel(watch::Receiver<bool>);

impl Cancel {
    /// A token and the switch that fires it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Cancel) {
        let (tx, rx) = watch::channel(false);
        (tx, Cancel(rx))
    }

    /// A token that never fires.
    pub fn never() -> Cancel {
        Cancel(watch::channel(false).1)
    }

    /// Resolves once cancelled; never, if the switch was dropped unfired.
    pub(super) async fn cancelled(&mut self) {
        if self.0.wait_for(|cancelled| *cancelled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_bucket_and_key() {
        let location = S3Location::from_url("s3://media/in/clip.mov").unwrap().unwrap();
        assert_eq!((location.bucket(), location.key()), ("media", "in/clip.mov"));
        assert_eq!(location.to_string(), "s3://media/in/clip.mov");
        assert!(S3Location::from_url("/tmp/clip.mov").is_none());
        assert!(S3Location::from_url("s3://media").unwrap().is_err());
        assert!(S3Location::from_url("s3:///key").unwrap().is_err());
    }

    #[test]
    fn a_null_or_empty_version_is_none() {
        let stored = StoredObject::answered(Some("3HL4kqtJlcpXroDTDmJ"), Some("\"abc-2\""));
        assert_eq!(stored.version_id.as_deref(), Some("3HL4kqtJlcpXroDTDmJ"));
        assert_eq!(stored.etag.as_deref(), Some("\"abc-2\""));
        assert_eq!(StoredObject::answered(Some("null"), Some("")), StoredObject::default());
        assert_eq!(StoredObject::answered(None, None), StoredObject::default());
    }

    #[test]
    fn s3_codes_map_to_kinds() {
        let failure = |code: &str| SdkFailure { code: Some(code.to_owned()), message: String::new(), transport: false };
        assert_eq!(S3ErrorKind::of(&failure("NoSuchKey")), S3ErrorKind::NotFound);
        assert_eq!(S3ErrorKind::of(&failure("NoSuchBucket")), S3ErrorKind::NotFound);
        assert_eq!(S3ErrorKind::of(&failure("AccessDenied")), S3ErrorKind::AccessDenied);
        assert_eq!(S3ErrorKind::of(&failure("SlowDown")), S3ErrorKind::Unavailable);
        assert_eq!(S3ErrorKind::of(&failure("Whatever")), S3ErrorKind::Rejected);
        let transport = SdkFailure { code: None, message: String::new(), transport: true };
        assert_eq!(S3ErrorKind::of(&transport), S3ErrorKind::Unavailable);
    }
}
