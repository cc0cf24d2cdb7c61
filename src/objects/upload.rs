//! The multipart upload behind S3 mode: how large the parts are, and a
//! destination written as one `PutObject` below one part or as a multipart
//! upload with at most one part in flight.
//!
//! Owns S3's part rules (5 MiB minimum, 10,000 parts) and the mapping of SDK
//! errors to [`ObjectError::S3`]. Must never make the destination appear
//! before [`Upload::finish`] is called, which the caller does only after the
//! cipher authenticated the whole stream; anything else ends in
//! [`Upload::abort`]. Sees ciphertext or authenticated plaintext parts only,
//! never a key.

use std::fmt;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinHandle;

use crate::app::aws::sdk_failure;
use crate::objects::error::ObjectError;
use crate::objects::s3::{S3ErrorKind, S3Location, StoredObject};

/// The default S3 part: 8 MiB, well above S3's 5 MiB minimum.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Maps an SDK failure of `operation` on `location` to [`ObjectError::S3`].
pub(super) fn s3_error<E, R>(
    operation: &'static str,
    location: &S3Location,
) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, R>) -> ObjectError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let location = location.clone();
    move |err| {
        let failure = sdk_failure(&err);
        ObjectError::S3 { operation, location, kind: S3ErrorKind::of(&failure), message: failure.message }
    }
}

/// The part size for a source of `len` bytes: the configured size, grown
/// (in whole MiB) so the object fits in S3's 10,000 parts.
pub(super) fn part_size_for(configured: usize, len: Option<i64>) -> usize {
    let configured = configured.max(MIN_PART_SIZE);
    let Some(len) = len.and_then(|l| u64::try_from(l).ok()) else {
        return configured;
    };
    // Ciphertext may be one block longer; leave room for it.
    let needed = (len + 32).div_ceil(MAX_PARTS - 1);
    let needed = usize::try_from(needed.div_ceil(1 << 20) << 20).unwrap_or(usize::MAX);
    configured.max(needed)
}

/// A destination being written: nothing until the first full part, then a
/// multipart upload with at most one part in flight.
pub(super) struct Upload {
    s3: aws_sdk_s3::Client,
    destination: S3Location,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    next_part: i32,
    in_flight: Option<JoinHandle<Result<CompletedPart, ObjectError>>>,
}

impl Upload {
    pub(super) fn new(s3: aws_sdk_s3::Client, destination: S3Location) -> Self {
        Upload { s3, destination, upload_id: None, parts: Vec::new(), next_part: 1, in_flight: None }
    }

    /// Starts uploading `body` as the next part, once the one before is done.
    pub(super) async fn send_part(&mut self, body: Vec<u8>) -> Result<(), ObjectError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(self.destination.bucket())
                    .key(self.destination.key())
                    .send()
                    .await
                    .map_err(s3_error("CreateMultipartUpload", &self.destination))?;
                let id = created.upload_id().map(str::to_owned).ok_or_else(|| ObjectError::S3 {
                    operation: "CreateMultipartUpload",
                    location: self.destination.clone(),
                    kind: S3ErrorKind::Rejected,
                    message: "S3 answered no upload id".to_owned(),
                })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        self.wait_in_flight().await?;
        let number = self.next_part;
        self.next_part += 1;
        let request = self
            .s3
            .upload_part()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body));
        let destination = self.destination.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let sent = request.send().await.map_err(s3_error("UploadPart", &destination))?;
            let mut part = CompletedPart::builder().part_number(number);
            if let Some(tag) = sent.e_tag() {
                part = part.e_tag(tag);
            }
            Ok(part.build())
        }));
        Ok(())
    }

    async fn wait_in_flight(&mut self) -> Result<(), ObjectError> {
        if let Some(handle) = self.in_flight.take() {
            let part = handle.await.map_err(|e| ObjectError::Internal(format!("S3 part upload task: {e}")))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Writes `last` and makes the object appear; answers the version id
    /// and ETag S3 gave it.
    pub(super) async fn finish(&mut self, last: Vec<u8>) -> Result<StoredObject, ObjectError> {
        let Some(upload_id) = self.upload_id.clone() else {
            let put = self
                .s3
                .put_object()
                .bucket(self.destination.bucket())
                .key(self.destination.key())
                .body(ByteStream::from(last))
                .send()
                .await
                .map_err(s3_error("PutObject", &self.destination))?;
            return Ok(StoredObject::answered(put.version_id(), put.e_tag()));
        };
        if !last.is_empty() {
            self.send_part(last).await?;
        }
        self.wait_in_flight().await?;
        let parts = std::mem::take(&mut self.parts);
        let completed = self
            .s3
            .complete_multipart_upload()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(s3_error("CompleteMultipartUpload", &self.destination))?;
        self.upload_id = None;
        Ok(StoredObject::answered(completed.version_id(), completed.e_tag()))
    }

    /// Stops the part in flight and aborts the multipart upload, so no
    /// object appears; failures are logged (S3 lifecycle rules reap what
    /// is left).
    pub(super) async fn abort(&mut self) {
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
            let _ = handle.await;
        }
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let aborted = self
            .s3
            .abort_multipart_upload()
            .bucket(self.destination.bucket())
            .key(self.destination.key())
            .upload_id(&upload_id)
            .send()
            .await;
        if let Err(e) = aborted {
            tracing::error!(
                destination = %self.destination,
                upload_id,
                error = %sdk_failure(&e).message,
                "could not abort the multipart upload; an incomplete upload is left for S3 lifecycle rules"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_to_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(DEFAULT_PART_SIZE, Some(20 << 20)), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(1, None), MIN_PART_SIZE);
        let huge = 200u64 << 30;
        let size = part_size_for(DEFAULT_PART_SIZE, Some(huge as i64));
        assert!(size > DEFAULT_PART_SIZE && size.is_multiple_of(1 << 20));
        assert!((huge + 16).div_ceil(size as u64) < MAX_PARTS);
    }
}
