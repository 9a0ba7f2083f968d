//! Request ids and the request span, in one layer around every endpoint.
//!
//! Every request gets an id: the caller's `X-Request-Id`, or 128 random bits in hex. It is on the request's tracing
//! span (so every line logged while answering names it), on the line logged for a server error, and on the answer,
//! for callers to quote. Only the method is on the span beside it: paths can carry credentials
//! (`/v1/<token>/batch`).
//!
//! One exception: a redirect (`3xx`) the caller gave no id for, while no subscriber wants request spans, carries
//! none. Those are the tracking links' answers to browsers, which follow them and quote nothing; minting, storing and
//! writing an id there cost the redirect path about 800 of its 79,000 instructions a request, and 49 bytes
//! (callgrind over 2,000 redirects, three rounds; README, "Core node"). Any other answer always has one.
//!
//! One layer, not tower-http's three (set, trace, propagate): this is on the redirect path, and theirs cost it a
//! measurable share of its throughput (two header inserts, a formatted id, a wrapped response body, and timing taken
//! even when nothing is logged). Here a new id is one allocation, the request is not touched, and the span, its
//! fields and the latency exist only when a subscriber wants them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-given id kept; a longer one is replaced by a new id.
const MAX_GIVEN_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for RequestIds<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = WithRequestId<tracing::instrument::Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let given = match req.headers().get(&REQUEST_ID) {
            Some(given) if !given.is_empty() && given.len() <= MAX_GIVEN_LEN => Some(given.clone()),
            _ => None,
        };
        // minted now only for a span that records it; otherwise when the answer is known (see the module's note)
        let id = given.or_else(|| tracing::span_enabled!(tracing::Level::INFO).then(new_id));
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            request_id = id.as_ref().map(|id| tracing::field::display(String::from_utf8_lossy(id.as_bytes()))),
        );
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        WithRequestId { inner: inner.instrument(span), id, started }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, with the request id added to it.
    pub struct WithRequestId<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        started: Option<Instant>,
    }
}

impl<F, R, E> Future for WithRequestId<tracing::instrument::Instrumented<F>>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut answer = ready!(this.inner.as_mut().poll(cx))?;
        let status = answer.status();
        let id = this.id.take().or_else(|| (!status.is_redirection()).then(new_id));
        let _entered = this.inner.span().enter();
        if status.is_server_error() {
            // named here too: under the default filter the request's span is not recorded
            let id = id.as_ref().map(|id| String::from_utf8_lossy(id.as_bytes()).into_owned()).unwrap_or_default();
            tracing::warn!(status = status.as_u16(), request_id = %id, "answered with a server error");
        } else if let Some(started) = this.started {
            tracing::debug!(status = status.as_u16(), latency_us = started.elapsed().as_micros() as u64, "answered");
        }
        if let Some(id) = id {
            answer.headers_mut().insert(REQUEST_ID, id);
        }
        Poll::Ready(Ok(answer))
    }
}

/// 128 random bits from the thread's generator (no system call), in lowercase hex.
fn new_id() -> HeaderValue {
    let bits: u128 = rand::random();
    let mut text = [0u8; 32];
    hex::encode_to_slice(bits.to_be_bytes(), &mut text).expect("32 digits for 16 bytes");
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(a, b);
    }
}
