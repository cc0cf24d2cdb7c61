//! The custody boundary every RPC passes, unary or streaming: who is
//! calling (from the client certificate) and whether the policy lets them
//! (their rate limit, and plaintext export for the RPCs that always hand it
//! out), decided by [`Gate::admit`] in the admission layer before the body
//! is read; then the call's deadline, its metrics and request id, and one
//! audit record per call, durable before the answer leaves.
//!
//! Owns the call's life from headers to record. Must never let a key out
//! without its record: a call whose record cannot be written fails with
//! `UNAVAILABLE` and returns no key. Handlers only note facts ([`Notes`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, AuditRecord, Expected, Timestamp};
use crate::custody::policy::{ANONYMOUS, Denial, Grant, PolicyStore};
use crate::custody::rpc::Rpc;
use crate::edge::conn::ConnInfo;
use crate::edge::status::{bounded, denial_status};

/// What an RPC learned that belongs in its audit record.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// The pipeline.
    pub pipeline: String,
    /// The KMS key ARN.
    pub kms_key_arn: String,
    /// The IAM role checked or granted.
    pub role_arn: String,
    /// ET's job id.
    pub job_id: String,
    /// Fingerprints of the keys involved.
    pub key_fingerprints: Vec<String>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// SPIFFE ID, DNS SAN, or `anonymous` without a client certificate.
    pub identity: String,
    /// False when the caller presented a certificate with neither a
    /// SPIFFE ID URI SAN nor a DNS SAN: it is refused (`UNAUTHENTICATED`),
    /// never treated as `anonymous`.
    pub identified: bool,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The caller's `x-request-id`, or one made here.
    pub request_id: String,
}

impl Caller {
    /// Reads the caller from a call's headers and the [`ConnInfo`] of its
    /// connection (without one, an in-process call: `anonymous`).
    pub fn from_parts(headers: &http::HeaderMap, extensions: &http::Extensions) -> Caller {
        let conn = extensions.get::<ConnInfo>();
        let leaf = conn.and_then(|conn| conn.certs.as_deref()).and_then(|certs| certs.first());
        let (identity, identified) = match (conn, leaf) {
            // The certificate is parsed once per connection, not per call.
            (Some(conn), Some(leaf)) => match conn.identity.get_or_init(|| crate::edge::tls::identity_of(leaf)) {
                Some(identity) => (identity.clone(), true),
                None => (UNIDENTIFIED.to_owned(), false),
            },
            _ => (ANONYMOUS.to_owned(), true),
        };
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(next_request_id);
        Caller { identity, identified, peer: conn.and_then(|conn| conn.peer), request_id }
    }
}

/// A call the admission layer ([`crate::edge::admit`]) admitted, for the
/// gate to pick up from the request's extensions instead of admitting it
/// again.
#[derive(Clone)]
pub struct Admitted {
    /// The caller, as admitted (with its request id).
    pub caller: Caller,
    /// What the policy granted.
    pub grant: Grant,
    /// Set when the gate takes the call over (it then audits it).
    reached: Arc<AtomicBool>,
}

impl Admitted {
    /// `caller`, admitted with `grant`; `reached` is set when the gate
    /// takes the call over.
    pub fn new(caller: Caller, grant: Grant, reached: Arc<AtomicBool>) -> Self {
        Admitted { caller, grant, reached }
    }

    /// Marks the call as taken over by the gate.
    pub fn reached(&self) {
        self.reached.store(true, Ordering::Release);
    }
}

/// The audit log's name for a caller whose certificate names no identity.
pub const UNIDENTIFIED: &str = "(certificate without a usable SPIFFE ID or DNS SAN)";

/// A request id for a call that brought none: a random per-process prefix
/// and a counter (unique, cheap: no system call per call).
fn next_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Policy, audit and the server-wide export switch, shared by all RPCs.
#[derive(Clone)]
pub struct Gate {
    /// The policy (none: everything but export is granted).
    pub policy: PolicyStore,
    /// The audit log, when configured.
    pub audit: Option<AuditLog>,
    /// The server-wide plaintext-export switch (when no policy is set).
    pub server_export: bool,
    /// The longest a unary call may run (`limits.request_timeout_ms`).
    pub request_timeout: Duration,
    /// The longest an object stream may run (`limits.stream_timeout_ms`).
    pub stream_timeout: Duration,
    /// The longest a stream's next message may take to arrive
    /// (`limits.read_timeout_ms`).
    pub read_timeout: Duration,
    /// The largest request message (`limits.max_message_bytes`).
    pub max_message_bytes: usize,
}

/// A call's deadline: the caller's `grpc-timeout`, capped by `cap`.
pub fn deadline_of<T>(request: &Request<T>, cap: Duration) -> Duration {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(cap, |asked| asked.min(cap))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 specification defines it.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Counts a call in `keybroker_requests_in_flight` until dropped (also
/// when its caller cancels it).
struct InFlight;

impl InFlight {
    fn begin() -> Self {
        crate::app::metrics::in_flight(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::app::metrics::in_flight(-1.0);
    }
}

/// The status of a call that ran past its deadline.
pub fn deadline_exceeded(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call ran past its deadline of {} ms (the caller's grpc-timeout, capped by the server's limit)",
        limit.as_millis()
    ))
}

/// What a call learned that belongs in its audit record, noted by the
/// handler as it goes (so a failure still records what was known).
#[derive(Clone, Default)]
pub struct Notes(Arc<Mutex<Facts>>, Arc<str>);

impl Notes {
    /// The notes of the call `request_id` names.
    fn for_request(request_id: &str) -> Notes {
        Notes(Arc::default(), Arc::from(request_id))
    }

    /// The call's request id, as its audit record and the key ledger name it.
    pub fn request_id(&self) -> &str {
        &self.1
    }

    fn with(&self, note: impl FnOnce(&mut Facts)) {
        note(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// The pipeline a job runs in.
    pub fn pipeline(&self, pipeline: &str) {
        self.with(|facts| pipeline.clone_into(&mut facts.pipeline));
    }

    /// The KMS key that wrapped the call's keys.
    pub fn kms_key_arn(&self, arn: &str) {
        self.with(|facts| arn.clone_into(&mut facts.kms_key_arn));
    }

    /// The IAM role the call checked or granted a key to.
    pub fn role_arn(&self, arn: &str) {
        self.with(|facts| arn.clone_into(&mut facts.role_arn));
    }

    /// A key the call issued or used, by fingerprint.
    pub fn key(&self, fingerprint: &str) {
        self.with(|facts| facts.key_fingerprints.push(fingerprint.to_owned()));
    }

    /// The job Elastic Transcoder created.
    pub fn job_id(&self, job_id: &str) {
        self.with(|facts| job_id.clone_into(&mut facts.job_id));
    }

    fn take(&self) -> Facts {
        std::mem::take(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// A server-streaming response body.
pub type ResponseStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A response stream's sending half: chunks go out as they are ready; the
/// gate sends the last message after the call's record is durable.
pub type Outbound<T> = mpsc::Sender<Result<T, Status>>;

/// Response messages queued before the broker waits for the client: with
/// object chunks of at most 1 MiB, a few MiB per call at most.
const RESPONSE_DEPTH: usize = 4;

/// One call inside the boundary, from its headers to its audit record:
/// counted in flight, timed, and audited exactly once. Dropped before
/// [`Scope::finish`] (its caller cancelled or went away), it writes the
/// call's record (`CANCELLED`) from a task of its own, so that every call
/// that reached the gate is in the audit log however it ended.
struct Scope {
    gate: Arc<Gate>,
    rpc: Rpc,
    /// Taken once the call is recorded.
    caller: Option<Caller>,
    request_id: String,
    started: Instant,
    _in_flight: InFlight,
}

impl Scope {
    fn caller(&self) -> &Caller {
        self.caller.as_ref().unwrap_or_else(|| unreachable!("taken only when recorded"))
    }

    /// Opens the call's scope for the caller the admission layer admitted.
    fn open(gate: &Arc<Gate>, rpc: Rpc, caller: Caller) -> Scope {
        Scope {
            gate: gate.clone(),
            rpc,
            request_id: caller.request_id.clone(),
            caller: Some(caller),
            started: Instant::now(),
            _in_flight: InFlight::begin(),
        }
    }

    /// Audits the call's outcome and answers it: the result, the failure,
    /// or `UNAVAILABLE` (and no result) when the record could not be
    /// written.
    async fn finish<T>(
        mut self,
        result: Result<T, Status>,
        notes: &Notes,
        expected: Option<Expected<'_>>,
    ) -> Result<T, Status> {
        let result = result.map_err(bounded);
        let status = match &result {
            Ok(_) => Status::ok(""),
            Err(status) => {
                tracing::warn!(
                    rpc = %self.rpc,
                    identity = %self.caller().identity,
                    request_id = %self.request_id,
                    code = ?status.code(),
                    message = status.message(),
                    "call failed"
                );
                status.clone()
            }
        };
        // Taken before the write: once the record is queued (at its first
        // poll) it is written even if this call is dropped.
        let caller = self.caller.take().unwrap_or_else(|| unreachable!("taken only when recorded"));
        let answer = match self.gate.record(self.rpc.name(), &caller, &notes.take(), &status, expected).await {
            Ok(()) => result,
            Err(unavailable) => Err(unavailable),
        };
        self.measure(answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        answer
    }

    fn measure(&self, code: tonic::Code) {
        let took = self.started.elapsed();
        crate::app::metrics::record_request(self.rpc.name(), code, took);
        tracing::debug!(rpc = %self.rpc, ?code, ?took, "call answered");
    }
}

/// The admission layer's decision for a call, marked as taken over by the
/// gate (which from now on audits the call).
///
/// # Errors
/// `INTERNAL` for a call that did not pass the admission layer: a server
/// built without it would otherwise serve calls no policy admitted.
fn take_admitted<T>(mut request: Request<T>) -> Result<(Request<T>, Admitted), Status> {
    let admitted = request.extensions_mut().remove::<Admitted>().ok_or_else(|| {
        Status::internal("the call did not pass the admission layer (edge::admit); it was not served")
    })?;
    admitted.reached();
    Ok((request, admitted))
}

/// An answer's envelope: the request id goes back to the caller.
fn respond<T>(request_id: &str, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(value) = MetadataValue::try_from(request_id) {
        response.metadata_mut().insert("x-request-id", value);
    }
    response
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(caller) = self.caller.take() else {
            return;
        };
        let (gate, rpc) = (self.gate.clone(), self.rpc);
        tracing::warn!(%rpc, identity = ?caller.identity, request_id = %caller.request_id, "call cancelled by its caller");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let status = Status::cancelled("the caller cancelled the call or went away before it was answered");
                let _ = gate.record(rpc.name(), &caller, &Facts::default(), &status, None).await;
            });
        }
    }
}

impl Gate {
    /// Authorizes `rpc` for the caller (plaintext export too, for the RPCs
    /// that always hand plaintext out), or answers the denial (audited).
    /// The admission layer ([`crate::edge::admit`]) calls it before the
    /// call's body is read.
    ///
    /// # Errors
    /// The denial's status, or `UNAVAILABLE` when it could not be audited.
    pub async fn admit(&self, rpc: Rpc, caller: &Caller) -> Result<Grant, Status> {
        if !caller.identified {
            let status = Status::unauthenticated(
                "the client certificate has neither a SPIFFE ID URI SAN (spiffe://...) nor a DNS SAN that is a DNS name, \
                 or it names two SPIFFE IDs: no identity to authorize",
            );
            tracing::warn!(%rpc, peer = ?caller.peer, request_id = %caller.request_id, "call from a certificate without identity");
            self.record(rpc.name(), caller, &Facts::default(), &status, None).await?;
            return Err(status);
        }
        let granted = self.policy.authorize(&caller.identity, rpc, self.server_export).and_then(|grant| {
            if rpc.always_exports_plaintext() {
                grant.check_plaintext_export(rpc.name())?;
            }
            Ok(grant)
        });
        match granted {
            Ok(grant) => Ok(grant),
            Err(denial) => {
                if matches!(denial, Denial::RateLimited { .. }) {
                    crate::app::metrics::record_rate_limited();
                }
                let status = bounded(denial_status(&denial));
                tracing::warn!(%rpc, identity = %caller.identity, request_id = %caller.request_id, reason = %denial, "call denied");
                self.record(rpc.name(), caller, &Facts::default(), &status, None).await?;
                Err(status)
            }
        }
    }

    /// Writes the call's audit record; `expected` is the announcement made
    /// when the call started ([`Gate::expect`]), if any.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the record could not be made durable.
    pub async fn record(
        &self,
        rpc: &'static str,
        caller: &Caller,
        facts: &Facts,
        status: &Status,
        expected: Option<Expected<'_>>,
    ) -> Result<(), Status> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let code = status.code();
        let outcome = match code {
            tonic::Code::Ok => "ok",
            tonic::Code::PermissionDenied | tonic::Code::ResourceExhausted | tonic::Code::Unauthenticated => "denied",
            _ => "error",
        };
        let record = AuditRecord {
            identity: &caller.identity,
            peer: caller.peer,
            rpc,
            request_id: &caller.request_id,
            outcome,
            code: crate::app::metrics::code_name(code),
            message: if code == tonic::Code::Ok { "" } else { status.message() },
            pipeline: &facts.pipeline,
            kms_key_arn: &facts.kms_key_arn,
            role_arn: &facts.role_arn,
            job_id: &facts.job_id,
            key_fingerprints: &facts.key_fingerprints,
            time: Timestamp::now(),
        };
        audit.write(&record, expected).await.map_err(|e| {
            crate::app::metrics::record_audit_failure();
            tracing::error!(rpc, request_id = %caller.request_id, error = %e, "audit record not written; call failed closed");
            Status::unavailable("the audit log cannot be written; the call was not completed")
        })
    }

    /// Announces a short call's record to the audit log, so a group commit
    /// may wait for it (see [`crate::audit::GroupCommit`]).
    pub fn expect(&self) -> Option<Expected<'_>> {
        self.audit.as_ref().map(AuditLog::expect)
    }

    /// Runs one unary call through the boundary: admit, run within the
    /// call's deadline, audit, answer. `run` gets the request, the grant and
    /// the call's [`Notes`].
    ///
    /// # Errors
    /// The call's status; `UNAVAILABLE` when its record could not be written
    /// (and then its answer, keys included, is dropped).
    pub async fn call<Req, Resp, Fut>(
        self: &Arc<Self>,
        rpc: Rpc,
        request: Request<Req>,
        run: impl FnOnce(Req, Grant, Notes) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, Status>>,
    {
        let (request, admitted) = take_admitted(request)?;
        let scope = Scope::open(self, rpc, admitted.caller);
        let limit = deadline_of(&request, self.request_timeout);
        let expected = self.expect();
        let grant = admitted.grant;
        let notes = Notes::for_request(&scope.request_id);
        let result = tokio::time::timeout(limit, run(request.into_inner(), grant, notes.clone()))
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded(limit)));
        let request_id = scope.request_id.clone();
        Ok(respond(&request_id, scope.finish(result, &notes, expected).await?))
    }

    /// Runs one streaming call through the same boundary: admit (a refusal
    /// is the call's status), then answer a stream fed by a task that runs
    /// `run` within the call's deadline. `run` sends its chunks through the
    /// [`Outbound`] it is given and returns the last message, which the
    /// gate sends only after the call's record is durable.
    ///
    /// # Errors
    /// The refusal's status when the caller is not admitted; every later
    /// failure ends the response stream instead.
    pub async fn stream<Req, Resp, Fut>(
        self: &Arc<Self>,
        rpc: Rpc,
        request: Request<Req>,
        run: impl FnOnce(Req, Grant, Notes, Outbound<Resp>) -> Fut,
    ) -> Result<Response<ResponseStream<Resp>>, Status>
    where
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
        Resp: Send + 'static,
    {
        let (request, admitted) = take_admitted(request)?;
        let scope = Scope::open(self, rpc, admitted.caller);
        let limit = deadline_of(&request, self.stream_timeout);
        let grant = admitted.grant;
        let (tx, rx) = mpsc::channel(RESPONSE_DEPTH);
        let notes = Notes::for_request(&scope.request_id);
        let call = run(request.into_inner(), grant, notes.clone(), tx.clone());
        let response = respond(&scope.request_id, Box::pin(ReceiverStream::new(rx)) as ResponseStream<Resp>);
        tokio::spawn(async move {
            let result = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| Err(deadline_exceeded(limit)));
            let last = scope.finish(result, &notes, None).await;
            let _ = tx.send(last).await;
        });
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_specification_writes_them_and_the_cap_wins() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "100", "100x", "123456789m", "-1S", "1.5S", " 1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let cap = Duration::from_secs(30);
        let mut request = Request::new(());
        assert_eq!(deadline_of(&request, cap), cap, "no header: the cap");
        request.metadata_mut().insert("grpc-timeout", "200m".parse().unwrap());
        assert_eq!(deadline_of(&request, cap), Duration::from_millis(200), "a shorter deadline wins");
        request.metadata_mut().insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(deadline_of(&request, cap), cap, "a longer one is capped");
    }

    proptest::proptest! {
        /// Any `grpc-timeout` text parses or is refused, never panics; what
        /// parses is what the specification's grammar allows.
        #[test]
        fn any_grpc_timeout_text_is_parsed_or_refused(text in "\\PC{0,12}") {
            if let Some(parsed) = parse_grpc_timeout(&text) {
                let (digits, unit) = text.split_at(text.len() - 1);
                proptest::prop_assert!(digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()));
                proptest::prop_assert!("HMSmun".contains(unit));
                proptest::prop_assert!(parsed <= Duration::from_secs(99_999_999 * 3600));
            }
        }

        #[test]
        fn valid_grpc_timeouts_round_trip(n in 0u64..100_000_000, unit in proptest::sample::select(vec!['S', 'm', 'u', 'n'])) {
            let expected = match unit {
                'S' => Duration::from_secs(n),
                'm' => Duration::from_millis(n),
                'u' => Duration::from_micros(n),
                _ => Duration::from_nanos(n),
            };
            proptest::prop_assert_eq!(parse_grpc_timeout(&format!("{n}{unit}")), Some(expected));
        }
    }
}
