//! The admission layer, in front of every call to the broker's service:
//! a call is authorised before it may hold any shared capacity.
//!
//! The caller's identity is known from the handshake and the RPC from the
//! path, so the policy decides (and a refusal is audited and answered)
//! before the body is read. An admitted call then takes a place under its
//! identity's cap (the policy rule's `max_concurrent`, else
//! `limits.max_concurrent_per_identity`) and one under the server's
//! (`limits.max_concurrent_requests`); with either full it is shed with
//! `RESOURCE_EXHAUSTED`, audited. A unary call's body must arrive within
//! `limits.read_timeout_ms`. The places, and the connection's count of
//! calls in flight ([`crate::edge::conn::Activity`]), go with the response
//! body, so a stream holds them until its last message.
//!
//! A call tonic ends before its handler runs (a body that is late, too
//! large, or not protobuf) is audited here, with the status the caller
//! should see ([`unreadable_body`]). Health checks and reflection pass
//! through unlimited, so probes still answer under load.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::custody::policy::Grant;
use crate::custody::rpc::Rpc;
use crate::edge::codec::UNDECODABLE;
use crate::edge::conn::{CallOnConn, ConnInfo};
use crate::edge::gate::{Admitted, Caller, Facts, Gate};
use crate::edge::status::unreadable_body;

/// The admission limits (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct AdmitLimits {
    /// Calls in flight at once, server-wide.
    pub max_concurrent: usize,
    /// Calls in flight at once per identity, unless its policy rule says.
    pub max_concurrent_per_identity: usize,
    /// The longest a unary call's body may take to arrive.
    pub read_timeout: Duration,
    /// The largest request message (for the status naming it).
    pub max_message_bytes: usize,
}

/// Makes [`Admit`] services.
#[derive(Clone)]
pub struct AdmitLayer {
    state: Arc<State>,
}

struct State {
    gate: Arc<Gate>,
    limits: AdmitLimits,
    server: Arc<Semaphore>,
    identities: Arc<Mutex<HashMap<String, usize>>>,
}

impl AdmitLayer {
    /// Admission through `gate` within `limits`.
    pub fn new(gate: Arc<Gate>, limits: AdmitLimits) -> Self {
        let server = Arc::new(Semaphore::new(limits.max_concurrent));
        AdmitLayer { state: Arc::new(State { gate, limits, server, identities: Arc::default() }) }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit { inner, state: self.state.clone() }
    }
}

/// The service [`AdmitLayer`] makes.
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    state: Arc<State>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> Service<http::Request<B>> for Admit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let on_conn = request.extensions().get::<ConnInfo>().map(|info| info.activity.begin());
        let method = request.uri().path().rsplit('/').next().unwrap_or("");
        let rpc = Rpc::from_name(method).filter(|_| !exempt(request.uri().path()));
        // Take the service that was made ready, leaving a clone for the next call.
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let Some(rpc) = rpc else {
            // Probes, reflection and unknown methods (UNIMPLEMENTED at once).
            let call = inner.call(request.map(Body::new));
            return Box::pin(async move { Ok(hold(call.await?, Places { _on_conn: on_conn, ..Places::default() })) });
        };
        let state = self.state.clone();
        Box::pin(async move {
            let started = Instant::now();
            let (parts, body) = request.into_parts();
            let caller = Caller::from_parts(&parts.headers, &parts.extensions);
            let (grant, places) = match state.admit(rpc, &caller).await {
                Ok(admitted) => admitted,
                Err(status) => {
                    crate::app::metrics::record_request(rpc.name(), status.code(), started.elapsed());
                    return Ok(answer(status, &caller));
                }
            };
            let reached = Arc::new(AtomicBool::new(false));
            let mut request = http::Request::from_parts(parts, body);
            request.extensions_mut().insert(Admitted::new(caller.clone(), grant, reached.clone()));
            let request = if rpc.is_streaming() {
                request.map(Body::new)
            } else {
                let deadline = tokio::time::Instant::now() + state.limits.read_timeout;
                request.map(|body| {
                    Body::new(ReadTimeout {
                        body,
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                        limit: state.limits.read_timeout,
                    })
                })
            };
            let response = inner.call(request).await?;
            let places = Places { _on_conn: on_conn, ..places };
            if reached.load(Ordering::Acquire) {
                return Ok(hold(response, places));
            }
            // Ended before its handler: tonic could not read the body.
            let status = Status::from_header_map(response.headers())
                .map(|status| unreadable_body(&status, state.limits.max_message_bytes))
                .unwrap_or_else(|| Status::internal("the call ended before it was handled"));
            crate::app::metrics::record_request(rpc.name(), status.code(), started.elapsed());
            tracing::warn!(%rpc, identity = %caller.identity, request_id = %caller.request_id, code = ?status.code(), message = status.message(), "call failed");
            let status = match state.gate.record(rpc.name(), &caller, &Facts::default(), &status, None).await {
                Ok(()) => status,
                Err(unavailable) => unavailable,
            };
            Ok(answer(status, &caller))
        })
    }
}

impl State {
    /// Authorises the call and takes its places, or answers why not
    /// (audited).
    async fn admit(&self, rpc: Rpc, caller: &Caller) -> Result<(Grant, Places), Status> {
        let grant = self.gate.admit(rpc, caller).await?;
        let cap = grant.max_concurrent().unwrap_or(self.limits.max_concurrent_per_identity);
        let Some(identity) = IdentityPlace::take(&self.identities, &caller.identity, cap) else {
            crate::app::metrics::record_shed("identity");
            let status = Status::resource_exhausted(format!(
                "{} already has {cap} calls in flight, the most its policy allows \\
                 (the rule's max_concurrent, else limits.max_concurrent_per_identity); retry with backoff",
                caller.identity
            ));
            return Err(self.shed(rpc, caller, status).await);
        };
        let Ok(server) = self.server.clone().try_acquire_owned() else {
            crate::app::metrics::record_shed("server");
            let status = Status::resource_exhausted(format!(
                "the broker is at its limit of {} calls in flight; retry with backoff",
                self.limits.max_concurrent
            ));
            return Err(self.shed(rpc, caller, status).await);
        };
        Ok((grant, Places { _identity: Some(identity), _server: Some(server), _on_conn: None }))
    }

    /// Audits a shed call and answers its status (or `UNAVAILABLE`).
    async fn shed(&self, rpc: Rpc, caller: &Caller, status: Status) -> Status {
        tracing::warn!(%rpc, identity = %caller.identity, message = status.message(), "load shed");
        match self.gate.record(rpc.name(), caller, &Facts::default(), &status, None).await {
            Ok(()) => status,
            Err(unavailable) => unavailable,
        }
    }
}

/// An answer that carries only a status, with the caller's request id.
fn answer(status: Status, caller: &Caller) -> http::Response<Body> {
    let mut response = status.into_http::<Body>();
    response.headers_mut().remove(UNDECODABLE);
    if let Ok(value) = http::HeaderValue::from_str(&caller.request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A call's places under the limits, returned when its response body is
/// dropped.
#[derive(Default)]
struct Places {
    _identity: Option<IdentityPlace>,
    _server: Option<OwnedSemaphorePermit>,
    _on_conn: Option<CallOnConn>,
}

/// One call under its identity's cap. The map holds only identities with
/// calls in flight, so it cannot grow with the number of callers seen.
struct IdentityPlace {
    identities: Arc<Mutex<HashMap<String, usize>>>,
    identity: String,
}

impl IdentityPlace {
    fn take(identities: &Arc<Mutex<HashMap<String, usize>>>, identity: &str, cap: usize) -> Option<Self> {
        let mut map = identities.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(identity.to_owned()).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                map.remove(identity);
            }
            return None;
        }
        *count += 1;
        Some(IdentityPlace { identities: identities.clone(), identity: identity.to_owned() })
    }
}

impl Drop for IdentityPlace {
    fn drop(&mut self) {
        let mut map = self.identities.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.identity);
            }
        }
    }
}

fn hold(response: http::Response<Body>, places: Places) -> http::Response<Body> {
    response.map(|body| Body::new(Holding { body, _places: places }))
}

/// A response body that holds its call's places until it is dropped.
struct Holding {
    body: Body,
    _places: Places,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A unary request body that must arrive whole by a deadline.
struct ReadTimeout<B> {
    body: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl<B> http_body::Body for ReadTimeout<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(|e| Status::from_error(e.into()))));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Status::new(
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {} ms (limits.read_timeout_ms)",
                    self.limit.as_millis()
                ),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_places_are_capped_per_identity_and_forgotten_when_free() {
        let map = Arc::default();
        let a = IdentityPlace::take(&map, "spiffe://t/a", 2).unwrap();
        let b = IdentityPlace::take(&map, "spiffe://t/a", 2).unwrap();
        assert!(IdentityPlace::take(&map, "spiffe://t/a", 2).is_none(), "a third call over a cap of 2");
        let other = IdentityPlace::take(&map, "spiffe://t/b", 2).unwrap();
        assert!(IdentityPlace::take(&map, "spiffe://t/c", 0).is_none());
        drop((a, b, other));
        assert!(map.lock().unwrap().is_empty(), "no entry stays for an identity with nothing in flight");
    }
}
