//! tower layers around every gRPC call: load shedding at a global
//! concurrency limit (`RESOURCE_EXHAUSTED`, answered at once rather than
//! queued). Health checks and reflection pass through, so probes still
//! answer under load.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

/// Sheds calls beyond `max` in flight.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ShedLayer {
    /// At most `max` calls in flight.
    pub fn new(max: usize) -> Self {
        ShedLayer { permits: Arc::new(Semaphore::new(max)), max }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, permits: self.permits.clone(), max: self.max }
    }
}

/// The service [`ShedLayer`] makes.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
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
            crate::metrics::record_shed();
            let status = tonic::Status::resource_exhausted(format!(
                "the broker is at its limit of {} calls in flight; retry with backoff",
                self.max
            ));
            return Box::pin(futures::future::ready(Ok(status.into_http())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(permit);
            response
        })
    }
}
