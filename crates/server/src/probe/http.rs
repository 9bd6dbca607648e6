//! The HTTP step of HTTP and HTTPS probes: one `GET` on a fresh HTTP/1.1
//! connection (hyper's connection API, not a pooled client).
//!
//! No redirect is followed (a 3xx is judged by `expected_status`), at most
//! [`MAX_BODY`](super::MAX_BODY) bytes of body are read, and the connection
//! is driven inside the probe's own future, so the probe's timeout also
//! ends a target that never closes.

use super::{ProbeOutcome, MAX_BODY};
use healthchecker_core::healthjson::{interpret_body, truncate, MAX_TEXT};
use healthchecker_core::{CheckResult, ServiceSpec};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `User-Agent` of every HTTP check.
pub const USER_AGENT: &str = concat!("healthchecker/", env!("CARGO_PKG_VERSION"));
/// `Accept` of every HTTP check: health+json first.
pub const ACCEPT: &str = "application/health+json, application/json;q=0.9, */*;q=0.1";

pub(crate) async fn get<S>(stream: S, spec: &ServiceSpec) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let t = &spec.target;
    let default_port = t.protocol.default_port();
    let host_header = match (t.host.contains(':'), t.port == default_port) {
        (true, true) => format!("[{}]", t.host),
        (true, false) => format!("[{}]:{}", t.host, t.port),
        (false, true) => t.host.clone(),
        (false, false) => format!("{}:{}", t.host, t.port),
    };
    let req = match http::Request::get(t.path.as_str())
        .header(http::header::HOST, host_header)
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, ACCEPT)
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::fail(format!("invalid request: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .max_buf_size(128 * 1024)
        .handshake(TokioIo::new(NoShutdown(stream)))
        .await
    {
        Ok(x) => x,
        Err(e) => return ProbeOutcome::fail(format!("HTTP handshake failed: {e}")),
    };
    let exchange = async move {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| hyper_reason(&e))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while buf.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = MAX_BODY - buf.len();
                        buf.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // A body cut short still tells its status; judge what came.
                Some(Err(_)) | None => break,
            }
        }
        Ok::<_, String>((status, buf))
    };
    tokio::pin!(exchange);
    tokio::pin!(conn);
    // Drive the connection and the exchange together. When the connection
    // ends first (the server closed), the exchange still holds what was
    // received and finishes at once.
    let result = tokio::select! {
        r = &mut exchange => r,
        _ = &mut conn => exchange.await,
    };
    match result {
        Ok((status, body)) => judge(spec, status, &body),
        Err(reason) => ProbeOutcome::fail(reason),
    }
}

/// The probe's stream as hyper sees it, without `shutdown`: after a
/// `Connection: close` exchange hyper half-closes the socket (a FIN, and on
/// TLS a close_notify first), but the probe drops it right after with an
/// abortive close (RST, see [`connect`](super::connect)), so the FIN would
/// only cost a packet each way and a system call per check.
struct NoShutdown<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for NoShutdown<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoShutdown<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn hyper_reason(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed before a response".into()
    } else if e.is_parse() {
        format!("invalid HTTP response: {e}")
    } else {
        let mut s = format!("HTTP request failed: {e}");
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    }
}

/// The verdict on an HTTP answer: status first, then the body's `status`.
pub(crate) fn judge(spec: &ServiceSpec, status: u16, body: &[u8]) -> ProbeOutcome {
    let report = interpret_body(body);
    let mut out = ProbeOutcome::pass();
    out.http_status = Some(status);
    out.details = report.details;
    let output = report.output.as_deref().map(|o| truncate(o, MAX_TEXT));
    if !spec.expected_status.matches(status) {
        out.result = CheckResult::Fail;
        out.reason = Some(match output {
            Some(o) => format!("HTTP {status}: {o}"),
            None => format!("HTTP {status}"),
        });
        return out;
    }
    match report.verdict {
        Some(CheckResult::Fail) => {
            out.result = CheckResult::Fail;
            out.reason = Some(format!(
                "health+json status fail: {}",
                output.as_deref().unwrap_or("no output")
            ));
        }
        Some(CheckResult::Warn) => {
            out.result = CheckResult::Warn;
            out.reason = Some(format!(
                "health+json status warn: {}",
                output.as_deref().unwrap_or("no output")
            ));
        }
        _ => {}
    }
    out
}
