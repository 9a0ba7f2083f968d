//! Load shedding: a request is worked on only with one of `MAX_IN_FLIGHT` permits, held until its answer's head is
//! ready; without one it is answered `503 overloaded` at once (try again in a second, here or at another node),
//! instead of queueing without bound.
//!
//! A tower layer of its own, like [`super::deadline::BodyDeadlineLayer`] and for the same reason: on the redirect
//! path `axum::middleware::from_fn` costs a clone of the inner service and a boxed future per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub fn new(max_in_flight: usize) -> Self {
        ShedLayer { permits: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, permits: self.permits.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> tower::Service<Request> for Shed<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Shedding<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Shedding { inner: Some(self.inner.call(req)), permit: Some(permit) },
            Err(_) => Shedding { inner: None, permit: None },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, with its permit held until it is ready; or `503` without one.
    pub struct Shedding<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F, E> Future for Shedding<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else { return Poll::Ready(Ok(overloaded())) };
        let res = ready!(inner.poll(cx));
        this.permit.take();
        Poll::Ready(res)
    }
}

fn overloaded() -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the node is working on as many requests as it takes at once; retry in a second",
    );
    e.headers.push(("retry-after", "1".to_owned()));
    e.into_response()
}
