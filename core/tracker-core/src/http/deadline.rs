//! Request bodies must keep arriving: at most `BODY_IDLE_TIMEOUT_SECS` between two pieces and `BODY_TIMEOUT_SECS`
//! for the whole body. A client that sends slower (a slow-body attack holds a connection and a request slot for as
//! long as it likes otherwise) is answered `408 request_timeout`, whichever handler was reading.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
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
pub async fn body_deadline(State(limits): State<BodyTimeouts>, req: Request, next: Next) -> Response {
    if http_body::Body::is_end_stream(req.body()) {
        return next.run(req).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| Body::new(TimedBody::new(body, limits, timed_out.clone())));
    let res = next.run(req).await;
    if !timed_out.load(Ordering::Relaxed) {
        return res;
    }
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
