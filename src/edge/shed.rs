//! tower layers around every gRPC call: load shedding at a global
//! concurrency limit (`RESOURCE_EXHAUSTED`, answered at once rather than
//! queued, and audited). Health checks and reflection pass through, so
//! probes still answer under load.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::custody::rpc::Rpc;
use crate::edge::gate::{Caller, Facts, Gate};

/// Sheds calls beyond `max` in flight.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    max: usize,
    gate: Arc<Gate>,
}

impl ShedLayer {
    /// At most `max` calls in flight; refusals are audited through `gate`.
    pub fn new(max: usize, gate: Arc<Gate>) -> Self {
        ShedLayer { permits: Arc::new(Semaphore::new(max)), max, gate }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, permits: self.permits.clone(), max: self.max, gate: self.gate.clone() }
    }
}

/// The service [`ShedLayer`] makes.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
    gate: Arc<Gate>,
}

/// Audits a shed call from a task of its own: the refusal is answered at
/// once (it returns no key, so it need not wait for the disk).
fn audit_shed<B>(gate: &Arc<Gate>, request: &http::Request<B>, status: &tonic::Status) {
    if gate.audit.is_none() {
        return;
    }
    let method = request.uri().path().rsplit('/').next().unwrap_or("");
    let rpc = Rpc::from_name(method).map_or("(unknown)", Rpc::name);
    let probe = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(request.headers().clone()),
        request.extensions().clone(),
        (),
    );
    let caller = Caller::of(&probe);
    let (gate, status) = (gate.clone(), status.clone());
    tokio::spawn(async move {
        let _ = gate.record(rpc, &caller, &Facts::default(), &status, None).await;
    });
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(path = request.uri().path(), max = self.max, "load shed: too many calls in flight");
            crate::app::metrics::record_shed();
            let status = tonic::Status::resource_exhausted(format!(
                "the broker is at its limit of {} calls in flight; retry with backoff",
                self.max
            ));
            audit_shed(&self.gate, &request, &status);
            return Box::pin(futures::future::ready(Ok(status.into_http())));
        };
        let call = self.inner.call(request);
        // The permit goes with the response body: a streaming call (an
        // object transfer) stays in flight until its last message is sent
        // or its caller goes away, not just until its headers are.
        Box::pin(async move { Ok(call.await?.map(|body| Body::new(Holding { body, _permit: permit }))) })
    }
}

/// A response body that holds its call's permit until it is dropped.
struct Holding {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

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
