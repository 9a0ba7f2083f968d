//! Request bodies must keep arriving: at most `BODY_IDLE_TIMEOUT_SECS` between two pieces and `BODY_TIMEOUT_SECS`
//! for the whole body. A client that sends slower (a slow-body attack holds a connection and a request slot for as
//! long as it likes otherwise) is answered `408 request_timeout`, whichever handler was reading.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// How long a request body may take (`BODY_TIMEOUT_SECS`, `BODY_IDLE_TIMEOUT_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    pub total: Duration,
    pub idle: Duration,
}

/// Wraps every request body that is not empty in a [`TimedBody`]; answers `408` if it ran out of time.
///
/// A tower layer of its own rather than `axum::middleware::from_fn`: that clones the inner service and boxes a
/// future on every request, and with this layer and the load shedding ([`super::shed`]) as `from_fn` the redirect
/// path served 0.90x the requests of the node without them (same build profile, alternating wrk rounds).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlineLayer(pub BodyTimeouts);

impl<S> tower::Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyDeadline { inner, limits: self.0 }
    }
}

#[derive(Debug, Clone)]
pub struct BodyDeadline<S> {
    inner: S,
    limits: BodyTimeouts,
}

impl<S> tower::Service<Request> for BodyDeadline<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Deadlined<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // a request without a body (every click, pixel and postback) goes through untouched
        if http_body::Body::is_end_stream(req.body()) {
            return Deadlined { inner: self.inner.call(req), timed_out: None, limits: self.limits };
        }
        let timed_out = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| Body::new(TimedBody::new(body, self.limits, timed_out.clone())));
        Deadlined { inner: self.inner.call(req), timed_out: Some(timed_out), limits: self.limits }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, or `408` if the request's body ran out of time while the handler read it.
    pub struct Deadlined<F> {
        #[pin]
        inner: F,
        timed_out: Option<Arc<AtomicBool>>,
        limits: BodyTimeouts,
    }
}

impl<F, E> Future for Deadlined<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        if !this.timed_out.as_ref().is_some_and(|t| t.load(Ordering::Relaxed)) {
            return Poll::Ready(Ok(res));
        }
        Poll::Ready(Ok(timed_out(*this.limits)))
    }
}

fn timed_out(limits: BodyTimeouts) -> Response {
    let message = format!(
        "the request body arrived too slowly (at most {} s between pieces and {} s in all)",
        limits.idle.as_secs(),
        limits.total.as_secs()
    );
    let mut res = ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message).into_response();
    // the rest of the body is not read: the connection cannot carry another request
    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

pin_project_lite::pin_project! {
    /// A body that fails once no piece arrived for `idle`, or the whole did not within `total`.
    struct TimedBody {
        #[pin]
        inner: Body,
        #[pin]
        idle: Sleep,
        #[pin]
        total: Sleep,
        idle_for: Duration,
        timed_out: Arc<AtomicBool>,
    }
}

impl TimedBody {
    fn new(inner: Body, limits: BodyTimeouts, timed_out: Arc<AtomicBool>) -> Self {
        let now = Instant::now();
        TimedBody {
            inner,
            idle: tokio::time::sleep_until(now + limits.idle),
            total: tokio::time::sleep_until(now + limits.total),
            idle_for: limits.idle,
            timed_out,
        }
    }
}

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct BodyTimedOut;

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_some() {
                this.idle.as_mut().reset(Instant::now() + *this.idle_for);
            }
            return Poll::Ready(frame);
        }
        if this.idle.poll(cx).is_ready() || this.total.poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
