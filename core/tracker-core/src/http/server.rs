//! The node's HTTP/1.1 server: hyper's connection handling with limits a public server needs, which `axum::serve`
//! does not set. A request head must arrive whole within `HEADER_TIMEOUT` (this also closes idle keep-alive
//! connections), and may be at most [`MAX_HEAD_BYTES`]. Requests that hyper refuses itself, before any handler sees
//! them (a URI too long, a head too large, a request line or header that is not valid HTTP), are answered in the
//! same JSON error shape as every other rejection ([`JsonRejections`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// The largest request head (request line and headers) a node reads; larger ones are answered `431`.
pub const MAX_HEAD_BYTES: usize = 96 << 10;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets every open connection finish
/// its request in flight; resolves when the last connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // too many open files, or a connection reset before it was accepted: wait, then go on
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(tcp, peer, app.clone(), header_timeout, stop.clone()));
    }
    drop(listener);
    // only the connections' receivers are left: `closed` resolves when the last connection has ended
    drop(stop);
    let _ = stopping.send(true);
    // every connection holds a receiver until it has closed
    stopping.closed().await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    // no Nagle delay: live event streams write many small frames, and answers go out as soon as they are whole
    let _ = tcp.set_nodelay(true);
    let service = app.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.map(axum::body::Body::new)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let conn = http.serve_connection(TokioIo::new(JsonRejections::new(tcp)), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let mut stop = stop;
    let ended = tokio::select! {
        done = conn.as_mut() => done,
        stopping = async { stop.wait_for(|s| *s).await.is_ok() } => {
            if stopping {
                conn.as_mut().graceful_shutdown();
            }
            // the node is stopping (or its sender is gone): the request in flight finishes, then the connection
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A connection's I/O, rewriting the bodiless answers hyper writes for requests it cannot parse (`400`, `414`,
/// `431` with `content-length: 0`) into the node's JSON error shape. The node's own answers always have a body and a
/// content type, so nothing else is touched; hyper closes the connection after such an answer.
#[derive(Debug)]
pub struct JsonRejections<T> {
    io: T,
    /// A rewritten answer not yet written whole.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonRejections<T> {
    pub fn new(io: T) -> Self {
        JsonRejections { io, pending: None }
    }
}

/// The JSON answer standing in for hyper's bodiless one, if `head` is one.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !text.ends_with("\r\n\r\n") || !text.contains("\r\ncontent-length: 0\r\n") || text.contains("content-type") {
        return None;
    }
    let status = rest.get(..3)?;
    let (reason, code, message) = match status {
        "400" => (
            "Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1 (its request line or a header is malformed)",
        ),
        "414" => ("URI Too Long", "uri_too_long", "the request's URI is too long"),
        "431" => {
            ("Request Header Fields Too Large", "headers_too_large", "the request's head is too large (96 KiB at most)")
        }
        _ => return None,
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

impl<T: AsyncWrite + Unpin> JsonRejections<T> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let rest = bytes.get(*written..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRejections<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRejections<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if buf.starts_with(b"HTTP/1.1 4")
            && let Some(answer) = rewrite(buf)
        {
            self.pending = Some((answer, 0));
            // the rewritten answer stands for all of hyper's bytes; what is not written yet goes out on flush
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper writes a head in one slice: one that is a bodiless refusal goes through `poll_write`
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && first.starts_with(b"HTTP/1.1 4")
        {
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\
                      date: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(rewrite(ours), None, "an answer with a content type is the node's own");
        assert_eq!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"), None);
    }
}
