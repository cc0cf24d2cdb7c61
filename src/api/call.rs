//! The custody boundary every unary RPC passes: who is calling (from the
//! client certificate), whether the policy lets them (and their rate limit),
//! and one audit record per call, durable before the answer leaves. A call
//! whose record cannot be written fails with `UNAVAILABLE` and returns no
//! key.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, AuditRecord};
use crate::policy::{ANONYMOUS, Denial, Grant, PolicyStore};

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
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The caller's `x-request-id`, or one made here.
    pub request_id: String,
}

impl Caller {
    /// Reads the caller from a request's TLS session and metadata.
    pub fn of<T>(request: &Request<T>) -> Caller {
        let identity = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(crate::tls::identity_of))
            .unwrap_or_else(|| ANONYMOUS.to_owned());
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(next_request_id);
        Caller { identity, peer: request.remote_addr(), request_id }
    }
}

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
}

/// The status of a denial.
pub fn denial_status(denial: &Denial) -> Status {
    match denial {
        Denial::Forbidden(_) => Status::permission_denied(denial.to_string()),
        Denial::RateLimited { .. } => Status::resource_exhausted(denial.to_string()),
    }
}

impl Gate {
    /// Authorizes `rpc` for the caller, or answers the denial (audited).
    ///
    /// # Errors
    /// The denial's status, or `UNAVAILABLE` when it could not be audited.
    pub async fn admit(&self, rpc: &'static str, caller: &Caller) -> Result<Grant, Status> {
        match self.policy.authorize(&caller.identity, rpc, self.server_export) {
            Ok(grant) => Ok(grant),
            Err(denial) => {
                if matches!(denial, Denial::RateLimited { .. }) {
                    crate::metrics::record_rate_limited();
                }
                let status = denial_status(&denial);
                tracing::warn!(rpc, identity = %caller.identity, request_id = %caller.request_id, reason = %denial, "call denied");
                self.record(rpc, caller, &Facts::default(), &status).await?;
                Err(status)
            }
        }
    }

    /// Writes the call's audit record.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the record could not be made durable.
    pub async fn record(
        &self,
        rpc: &'static str,
        caller: &Caller,
        facts: &Facts,
        status: &Status,
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
            identity: caller.identity.clone(),
            peer: caller.peer.map(|p| p.to_string()).unwrap_or_default(),
            rpc: rpc.to_owned(),
            request_id: caller.request_id.clone(),
            outcome: outcome.to_owned(),
            code: format!("{code:?}"),
            message: if code == tonic::Code::Ok { String::new() } else { status.message().to_owned() },
            pipeline: facts.pipeline.clone(),
            kms_key_arn: facts.kms_key_arn.clone(),
            job_id: facts.job_id.clone(),
            key_fingerprints: facts.key_fingerprints.clone(),
            ..AuditRecord::now()
        };
        audit.write(record).await.map_err(|e| {
            crate::metrics::record_audit_failure();
            tracing::error!(rpc, request_id = %caller.request_id, error = %e, "audit record not written; call failed closed");
            Status::unavailable("the audit log cannot be written; the call was not completed")
        })
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
        crate::metrics::in_flight(1.0);
        let answer = self.call_inner(rpc, request, run).await;
        crate::metrics::in_flight(-1.0);
        let code = answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        let took = started.elapsed();
        crate::metrics::record_request(rpc, code, took);
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
        let caller = Caller::of(&request);
        let grant = self.admit(rpc, &caller).await?;
        let (result, facts) = run(request.into_inner(), grant).await;
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
        self.record(rpc, &caller, &facts, &status).await?;
        let mut response = Response::new(result?);
        if let Ok(value) = MetadataValue::try_from(caller.request_id.as_str()) {
            response.metadata_mut().insert("x-request-id", value);
        }
        Ok(response)
    }
}
