//! The custody boundary every unary RPC passes: who is calling (from the
//! client certificate), whether the policy lets them (and their rate limit),
//! and one audit record per call, durable before the answer leaves. A call
//! whose record cannot be written fails with `UNAVAILABLE` and returns no
//! key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, AuditRecord, Expected, Timestamp};
use crate::custody::policy::{ANONYMOUS, Denial, Grant, PolicyStore};

/// What an RPC learned that belongs in its audit record.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// The pipeline.
    pub pipeline: String,
    /// The KMS key ARN.
    pub kms_key_arn: String,
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
    /// Reads the caller from a request's TLS session and metadata.
    pub fn of<T>(request: &Request<T>) -> Caller {
        let (identity, identified) = match request.peer_certs() {
            Some(certs) if !certs.is_empty() => match certs.first().and_then(crate::edge::tls::identity_of) {
                Some(identity) => (identity, true),
                None => (UNIDENTIFIED.to_owned(), false),
            },
            _ => (ANONYMOUS.to_owned(), true),
        };
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(next_request_id);
        Caller { identity, identified, peer: request.remote_addr(), request_id }
    }
}

/// The audit log's name for a caller whose certificate names no identity.
pub const UNIDENTIFIED: &str = "(certificate without SPIFFE ID or DNS SAN)";

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
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
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

/// A unary call not yet audited. hyper drops a call's future when its
/// caller cancels or goes away; then this writes the call's record
/// (`CANCELLED`) from a task of its own, so that every call that got past
/// the gate is in the audit log however it ended.
struct Unrecorded<'a> {
    gate: &'a Arc<Gate>,
    rpc: &'static str,
    /// Taken once the call is recorded.
    caller: Option<Caller>,
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        let Some(caller) = self.caller.take() else {
            return;
        };
        let (gate, rpc) = (self.gate.clone(), self.rpc);
        tracing::warn!(rpc, identity = ?caller.identity, request_id = %caller.request_id, "call cancelled by its caller");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let status = Status::cancelled("the caller cancelled the call or went away before it was answered");
                let _ = gate.record(rpc, &caller, &Facts::default(), &status, None).await;
            });
        }
    }
}

/// The status of a call that ran past its deadline.
pub fn deadline_exceeded(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call ran past its deadline of {} ms (the caller's grpc-timeout, capped by the server's limit)",
        limit.as_millis()
    ))
}

/// The status of a denial.
pub fn denial_status(denial: &Denial) -> Status {
    match denial {
        Denial::Forbidden(_) => Status::permission_denied(denial.to_string()),
        Denial::RateLimited { .. } => Status::resource_exhausted(denial.to_string()),
    }
}

impl Gate {
    /// Authorizes `rpc` for the caller, or answers the denial (audited,
    /// handing in `expected`, the call's announced record).
    ///
    /// # Errors
    /// The denial's status, or `UNAVAILABLE` when it could not be audited.
    pub async fn admit(
        &self,
        rpc: &'static str,
        caller: &Caller,
        expected: &mut Option<Expected<'_>>,
    ) -> Result<Grant, Status> {
        if !caller.identified {
            let status = Status::unauthenticated(
                "the client certificate has neither a SPIFFE ID URI SAN (spiffe://...) nor a DNS SAN: no identity to authorize",
            );
            tracing::warn!(rpc, peer = ?caller.peer, request_id = %caller.request_id, "call from a certificate without identity");
            self.record(rpc, caller, &Facts::default(), &status, expected.take()).await?;
            return Err(status);
        }
        match self.policy.authorize(&caller.identity, rpc, self.server_export) {
            Ok(grant) => Ok(grant),
            Err(denial) => {
                if matches!(denial, Denial::RateLimited { .. }) {
                    crate::app::metrics::record_rate_limited();
                }
                let status = denial_status(&denial);
                tracing::warn!(rpc, identity = %caller.identity, request_id = %caller.request_id, reason = %denial, "call denied");
                self.record(rpc, caller, &Facts::default(), &status, expected.take()).await?;
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

    /// Runs one unary call through the boundary: admit, run, audit, answer.
    ///
    /// # Errors
    /// The call's status; `UNAVAILABLE` when its record could not be written
    /// (and then its answer, keys included, is dropped).
    pub async fn call<Req, Resp, Fut>(
        self: &Arc<Self>,
        rpc: &'static str,
        request: Request<Req>,
        run: impl FnOnce(Req, Grant) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = (Result<Resp, Status>, Facts)>,
    {
        let started = std::time::Instant::now();
        let in_flight = InFlight::begin();
        let answer = self.call_inner(rpc, request, run).await;
        drop(in_flight);
        let code = answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        let took = started.elapsed();
        crate::app::metrics::record_request(rpc, code, took);
        tracing::debug!(rpc, ?code, ?took, "call answered");
        answer
    }

    async fn call_inner<Req, Resp, Fut>(
        self: &Arc<Self>,
        rpc: &'static str,
        request: Request<Req>,
        run: impl FnOnce(Req, Grant) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = (Result<Resp, Status>, Facts)>,
    {
        let mut guard = Unrecorded { gate: self, rpc, caller: Some(Caller::of(&request)) };
        let caller = guard.caller.as_ref().unwrap_or_else(|| unreachable!("taken only on drop"));
        let mut expected = self.expect();
        let limit = deadline_of(&request, self.request_timeout);
        let grant = match self.admit(rpc, caller, &mut expected).await {
            Ok(grant) => grant,
            Err(denied) => {
                // Denials are recorded by `admit`.
                guard.caller = None;
                return Err(denied);
            }
        };
        let (result, facts) = match tokio::time::timeout(limit, run(request.into_inner(), grant)).await {
            Ok(outcome) => outcome,
            Err(_) => (Err(deadline_exceeded(limit)), Facts::default()),
        };
        let status = match &result {
            Ok(_) => Status::ok(""),
            Err(status) => {
                tracing::warn!(
                    rpc,
                    identity = %caller.identity,
                    request_id = %caller.request_id,
                    code = ?status.code(),
                    message = status.message(),
                    "call failed"
                );
                status.clone()
            }
        };
        // Taken before the write: once the record is queued (at its first
        // poll) it is written even if this call is dropped.
        let caller = guard.caller.take().unwrap_or_else(|| unreachable!("taken only on drop"));
        self.record(rpc, &caller, &facts, &status, expected).await?;
        let mut response = Response::new(result?);
        if let Ok(value) = MetadataValue::try_from(caller.request_id.as_str()) {
            response.metadata_mut().insert("x-request-id", value);
        }
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
}
