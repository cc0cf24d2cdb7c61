//! A tokened MediaConvert submission whose outcome is unknown, resolved:
//! its job found at MediaConvert by the token's marker in `UserMetadata`
//! (ListJobs, newest first, a bounded number of pages), or, when
//! MediaConvert does not have it, the planned job POSTed again with the same
//! keys and `ClientRequestToken`.
//!
//! Owns the lookup and the rebuilding of the planned body: the ledger's
//! planned answer holds the document with its static keys redacted, so each
//! one is unwrapped again from the row the ledger recorded it in (KMS, the
//! MediaConvert context) and put back into the body that goes to
//! MediaConvert. Must never let a static key out of that body: not into an
//! answer, the ledger, or a log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::{McError, ServiceFailure};
use super::names;
use super::outputs::{REDACTED, redact_static_keys};
use super::request::McAnswer;
use super::submit::{self, Created, Ticket, service_failure};
use crate::custody::broker::{Broker, UnwrapRequest};
use crate::custody::keys::{ServiceContext, WrappedKey, decode_base64};
use crate::jobs::ticket::FindPlanned;
use crate::ledger::{Filter, METADATA_KEY, Usage};

/// The most ListJobs pages searched for a token's job.
pub(super) const MAX_PAGES: usize = 10;

/// Jobs per ListJobs page (the model's maximum).
const PAGE_SIZE: i32 = 20;

/// The job, newest first among `queue`'s (every queue's without one), whose
/// `UserMetadata` carries `marker`, searching at most [`MAX_PAGES`] pages.
///
/// # Errors
/// [`McError::Service`] when ListJobs fails.
pub(super) async fn find_job(
    client: &aws_sdk_mediaconvert::Client,
    queue: Option<&str>,
    marker: &str,
) -> Result<Option<Created>, McError> {
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_jobs()
            .order(aws_sdk_mediaconvert::types::Order::Descending)
            .max_results(PAGE_SIZE)
            .set_queue(queue.map(str::to_owned))
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| service_failure("ListJobs (finding a job by its request token): ", &e))?;
        let found = page
            .jobs()
            .iter()
            .find(|job| job.user_metadata().and_then(|m| m.get(METADATA_KEY)).is_some_and(|v| v == marker));
        if let Some(job) = found {
            return Ok(Some(submit::created(job)));
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_owned()),
            _ => break,
        }
    }
    Ok(None)
}

/// The queue a document (member names) names, if any.
pub(super) fn queue_of(job: &Value) -> Option<&str> {
    job.get("Queue").and_then(Value::as_str)
}

/// Fills MediaConvert's job into `answer` (redacted, member names).
pub(super) fn complete(answer: &mut McAnswer, created: &Created) {
    answer.job_id = Some(created.id.clone());
    answer.job_json = serde_json::to_string(&redact_static_keys(&names::from_wire(&created.job))).ok();
}

/// The least time between two lookups of one ticket's job while its call
/// waits for another (ListJobs pages are throttled per account).
const LOOKUP_EVERY: Duration = Duration::from_secs(1);

/// A ticket's planned jobs, as MediaConvert has them.
pub(super) struct PlannedJobs<'a> {
    /// Whose ledger records the answer.
    pub(super) broker: &'a Broker,
    /// MediaConvert, where configured.
    pub(super) client: Option<&'a aws_sdk_mediaconvert::Client>,
    /// The token.
    pub(super) ticket: &'a Ticket,
    /// When this call last looked.
    pub(super) looked: Mutex<Option<Instant>>,
}

impl<'a> PlannedJobs<'a> {
    /// The planned jobs of `ticket`, not looked up yet.
    pub(super) fn new(
        broker: &'a Broker,
        client: Option<&'a aws_sdk_mediaconvert::Client>,
        ticket: &'a Ticket,
    ) -> Self {
        PlannedJobs { broker, client, ticket, looked: Mutex::new(None) }
    }

    /// Whether a lookup is due: the first at once, then at most one per
    /// [`LOOKUP_EVERY`].
    fn due(&self) -> bool {
        let mut looked = self.looked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if looked.is_some_and(|at| now.duration_since(at) < LOOKUP_EVERY) {
            return false;
        }
        *looked = Some(now);
        true
    }
}

impl FindPlanned<McAnswer> for PlannedJobs<'_> {
    type Error = McError;

    /// Looks the planned job up at MediaConvert; when it is there,
    /// completes `planned` and records it SUBMITTED (true).
    async fn find(&self, planned: &mut McAnswer, entry: &str) -> Result<bool, McError> {
        let client = self.client.ok_or_else(not_configured)?;
        if !self.due() {
            return Ok(false);
        }
        let document: Value = serde_json::from_str(&planned.create_job_json)?;
        let Some(found) = find_job(client, queue_of(&document), self.ticket.marker()).await? else {
            return Ok(false);
        };
        tracing::info!(job_id = %found.id, "MediaConvert job of a PENDING request token found by its marker");
        complete(planned, &found);
        submit::mark_submitted(self.broker.ledger(), Some(self.ticket), planned, &found.id, entry).await;
        Ok(true)
    }
}

/// The document of a planned answer, its static keys unwrapped again from
/// the ledger entry `entry` recorded them in.
///
/// # Errors
/// [`McError::Precondition`] when a redacted key has no recorded row,
/// [`McError::Key`] when KMS cannot unwrap one.
pub(super) async fn rebuild(broker: &Broker, planned: &McAnswer, entry: &str) -> Result<Value, McError> {
    let mut document: Value = serde_json::from_str(&planned.create_job_json)?;
    if !planned.static_keys_redacted {
        return Ok(document);
    }
    let rows = broker.ledger().find(&Filter::Entry(entry.to_owned())).await?;
    for row in rows {
        let Usage::Job { place, .. } = &row.key.usage else { continue };
        let Some(pointer) = provider_pointer(place) else { continue };
        let Some(provider) = document.pointer_mut(&pointer).and_then(Value::as_object_mut) else { continue };
        if provider.get("StaticKeyValue").and_then(Value::as_str) != Some(REDACTED) {
            continue;
        }
        let failed = |source| McError::Key { path: place.clone(), source };
        let wrapped = decode_base64(&row.key.wrapped_key, place).map_err(|e| failed(e.into()))?;
        let request = UnwrapRequest {
            key_id: None,
            wrapped: WrappedKey::new(wrapped),
            key_md5: None,
            context: ServiceContext::MediaConvert,
        };
        let key = broker.open(request, place).await.map_err(failed)?.key;
        provider.insert("StaticKeyValue".to_owned(), json!(hex::encode(key.expose_secret())));
    }
    if contains_redacted(&document) {
        return Err(McError::Precondition(
            "request_token: a planned job's static key has no recorded row; submit under a new token".to_owned(),
        ));
    }
    Ok(document)
}

/// `Settings.OutputGroups[i].OutputGroupSettings.Kind.Encryption.StaticKeyProvider`
/// as a JSON pointer.
fn provider_pointer(place: &str) -> Option<String> {
    let rest = place.strip_prefix("Settings.OutputGroups[")?;
    let (index, tail) = rest.split_once("].")?;
    let index: usize = index.parse().ok()?;
    tail.ends_with(".Encryption.StaticKeyProvider")
        .then(|| format!("/Settings/OutputGroups/{index}/{}", tail.replace('.', "/")))
}

fn contains_redacted(value: &Value) -> bool {
    match value {
        Value::String(text) => text == REDACTED,
        Value::Array(items) => items.iter().any(contains_redacted),
        Value::Object(members) => members.values().any(contains_redacted),
        _ => false,
    }
}

/// No MediaConvert to look a job up at or POST it to.
pub(super) fn not_configured() -> McError {
    McError::Service {
        kind: ServiceFailure::NotConfigured,
        message: "no MediaConvert is configured (mediaconvert.submit = false); use validate_only".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_key_place_is_its_provider_pointer() {
        assert_eq!(
            provider_pointer(
                "Settings.OutputGroups[2].OutputGroupSettings.HlsGroupSettings.Encryption.StaticKeyProvider"
            )
            .as_deref(),
            Some("/Settings/OutputGroups/2/OutputGroupSettings/HlsGroupSettings/Encryption/StaticKeyProvider")
        );
        assert_eq!(provider_pointer("Settings.Inputs[0].DecryptionSettings"), None);
        assert_eq!(
            provider_pointer("Settings.OutputGroups[x].OutputGroupSettings.A.Encryption.StaticKeyProvider"),
            None
        );
    }

    #[test]
    fn a_redacted_marker_is_found_anywhere_in_a_document() {
        assert!(contains_redacted(&json!({"a": [{"StaticKeyValue": REDACTED}]})));
        assert!(!contains_redacted(&json!({"a": [{"StaticKeyValue": "00"}]})));
    }
}
