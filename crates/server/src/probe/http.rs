//! The HTTP step of HTTP and HTTPS probes: one `GET` with `Connection:
//! close` on a fresh connection, written in one piece, its answer's head
//! parsed with `httparse` (hyper's own parser) and its body read by its
//! framing (`Content-Length`, chunked, or to the end of the connection).
//!
//! Why not hyper's client connection, which the probe used before: for one
//! request per connection it sets up a dispatcher, a request channel and a
//! body channel, builds header maps both ways and moves its large state
//! around, about a tenth of a check's CPU at 100,000 services
//! (docs/performance.md). What a check needs of HTTP/1.1 is small and
//! bounded: no redirect is followed (a 3xx is judged by
//! `expected_status`), at most [`MAX_HEAD`] bytes of head and
//! [`MAX_BODY`](super::MAX_BODY) bytes of body are read, and the whole
//! exchange runs inside the probe's future, so the probe's timeout also
//! ends a target that never answers or never closes.

use super::{ProbeOutcome, MAX_BODY};
use healthchecker_core::healthjson::{interpret_body, truncate, MAX_TEXT};
use healthchecker_core::{CheckResult, ServiceSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `User-Agent` of every HTTP check.
pub const USER_AGENT: &str = concat!("healthchecker/", env!("CARGO_PKG_VERSION"));
/// `Accept` of every HTTP check: health+json first.
pub const ACCEPT: &str = "application/health+json, application/json;q=0.9, */*;q=0.1";

/// The largest response head read (status line and headers), as hyper's
/// `max_buf_size` bounded it before.
pub const MAX_HEAD: usize = 128 * 1024;

/// The most header lines a response may have (hyper's default too).
const MAX_HEADERS: usize = 100;

pub(crate) async fn get<S>(stream: S, spec: &ServiceSpec) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match request(spec) {
        Ok(r) => finish(stream, spec, &r).await,
        Err(reason) => ProbeOutcome::fail(reason),
    }
}

/// Sends what is left of the request (`rest`: the part `connect` did not
/// send already), then reads and judges the answer.
pub(crate) async fn finish<S>(mut stream: S, spec: &ServiceSpec, rest: &[u8]) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = async {
        if !rest.is_empty() {
            stream.write_all(rest).await?;
            stream.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await
    {
        return ProbeOutcome::fail(format!("HTTP request failed: {e}"));
    }
    match exchange(&mut stream).await {
        Ok((status, body)) => judge(spec, status, &body),
        Err(reason) => ProbeOutcome::fail(reason),
    }
}

/// The request's bytes: `GET`, `Host`, `User-Agent`, `Accept` and
/// `Connection: close`. A path with a space or a control character (which
/// would split the request line) is refused, not sent.
pub(crate) fn request(spec: &ServiceSpec) -> Result<Vec<u8>, String> {
    let t = &spec.target;
    if let Some(b) = t.path.bytes().find(|b| *b <= b' ' || *b == 0x7f) {
        return Err(format!(
            "invalid request: byte 0x{b:02x} in the target's path"
        ));
    }
    let path = if t.path.is_empty() {
        "/"
    } else {
        t.path.as_str()
    };
    let host = t.host.as_str();
    let bracket = host.contains(':');
    let mut r = Vec::with_capacity(160 + path.len() + host.len());
    r.extend_from_slice(b"GET ");
    r.extend_from_slice(path.as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    if bracket {
        r.push(b'[');
    }
    r.extend_from_slice(host.as_bytes());
    if bracket {
        r.push(b']');
    }
    if t.port != t.protocol.default_port() {
        use std::io::Write;
        let _ = write!(r, ":{}", t.port);
    }
    r.extend_from_slice(b"\r\nuser-agent: ");
    r.extend_from_slice(USER_AGENT.as_bytes());
    r.extend_from_slice(b"\r\naccept: ");
    r.extend_from_slice(ACCEPT.as_bytes());
    r.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    Ok(r)
}

/// How the body after the head ends.
enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes.
    Close,
}

/// Reads the answer: its final status (interim 1xx answers are skipped)
/// and at most [`MAX_BODY`] bytes of its body. A body cut short (the
/// server closed early, a bad chunk) still tells its status: what came is
/// judged.
async fn exchange<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u16, Vec<u8>), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut head = httparse::Response::new(&mut headers);
            match head.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = head.code.unwrap_or(0);
                    Some((len, status, framing(status, head.headers)?))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(format!("invalid HTTP response: {e}")),
            }
        };
        match parsed {
            Some((len, status, _)) if (100..200).contains(&status) && status != 101 => {
                buf.drain(..len);
                continue;
            }
            Some((len, status, framing)) => {
                buf.drain(..len);
                let body = read_body(stream, buf, framing).await;
                return Ok((status, body));
            }
            None if buf.len() >= MAX_HEAD => {
                return Err("invalid HTTP response: message head is too large".into())
            }
            None => {}
        }
        match read_more(stream, &mut buf, MAX_HEAD).await {
            Ok(0) => return Err("connection closed before a response".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("HTTP request failed: {e}")),
        }
    }
}

/// The body's framing by RFC 9112 section 6.3: a status without a body,
/// then `Transfer-Encoding` (chunked last), then `Content-Length`, else to
/// the end of the connection.
fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Result<Framing, String> {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("invalid HTTP response: invalid content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("invalid HTTP response: conflicting content-length".into());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Reads into `buf` until it holds `cap` bytes at most; the count read,
/// 0 at the end of the stream.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    // Read into the room there is; grow only when little is left (most
    // answers fit the first 4 KiB: no reallocation per check).
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(16 * 1024);
    }
    let room = (buf.capacity() - buf.len()).min(cap.saturating_sub(buf.len()).max(1));
    let mut limited = (&mut *stream).take(room as u64);
    limited.read_buf(buf).await
}

/// The body after the head (`rest` holds what came with the head), at
/// most [`MAX_BODY`] bytes.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut rest: Vec<u8>,
    framing: Framing,
) -> Vec<u8> {
    match framing {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => {
            let want = (n.min(MAX_BODY as u64)) as usize;
            while rest.len() < want {
                match read_more(stream, &mut rest, want).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            rest.truncate(want);
            rest
        }
        Framing::Close => {
            while rest.len() < MAX_BODY {
                match read_more(stream, &mut rest, MAX_BODY).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            rest.truncate(MAX_BODY);
            rest
        }
        Framing::Chunked => dechunk(stream, rest).await,
    }
}

/// Decodes a chunked body until its last chunk or [`MAX_BODY`] bytes.
async fn dechunk<S: AsyncRead + Unpin>(stream: &mut S, mut raw: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    // Raw bytes are kept below this while looking for a chunk's size line
    // or waiting for its data (a chunk's data is taken as it comes).
    const RAW_CAP: usize = 32 * 1024;
    let mut pos = 0;
    loop {
        match httparse::parse_chunk_size(&raw[pos..]) {
            Ok(httparse::Status::Complete((_, 0))) => return body,
            Ok(httparse::Status::Complete((used, size))) => {
                pos += used;
                // The chunk's data, then its CRLF.
                let mut left = size;
                while left > 0 {
                    if pos == raw.len() {
                        raw.clear();
                        pos = 0;
                        match read_more(stream, &mut raw, RAW_CAP).await {
                            Ok(0) | Err(_) => return body,
                            Ok(_) => {}
                        }
                    }
                    let take = (raw.len() - pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&raw[pos..pos + take.min(room)]);
                    if body.len() >= MAX_BODY {
                        return body;
                    }
                    pos += take;
                    left -= take as u64;
                }
                // The CRLF after the data.
                while raw.len() - pos < 2 {
                    raw.drain(..pos);
                    pos = 0;
                    match read_more(stream, &mut raw, RAW_CAP).await {
                        Ok(0) | Err(_) => return body,
                        Ok(_) => {}
                    }
                }
                if &raw[pos..pos + 2] != b"\r\n" {
                    return body;
                }
                pos += 2;
            }
            Ok(httparse::Status::Partial) => {
                raw.drain(..pos);
                pos = 0;
                if raw.len() >= RAW_CAP {
                    return body;
                }
                match read_more(stream, &mut raw, RAW_CAP).await {
                    Ok(0) | Err(_) => return body,
                    Ok(_) => {}
                }
            }
            // A bad size line: the body ends here.
            Err(_) => return body,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The answer `parts` gives, written piece by piece (each piece its own
    /// read on the probe's side), then the connection closed.
    async fn answer(parts: Vec<Vec<u8>>) -> Result<(u16, Vec<u8>), String> {
        let (mut probe, mut server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            for p in parts {
                if server.write_all(&p).await.is_err() {
                    return;
                }
                server.flush().await.ok();
                tokio::task::yield_now().await;
            }
        });
        let r = exchange(&mut probe).await;
        drop(probe);
        writer.await.unwrap();
        r
    }

    fn one(s: &str) -> Vec<Vec<u8>> {
        vec![s.as_bytes().to_vec()]
    }

    #[tokio::test]
    async fn content_length_body_is_read_to_its_length() {
        let (st, body) = answer(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"status\"".to_vec(),
            b":\"pass\"}trailing junk".to_vec(),
        ])
        .await
        .unwrap();
        assert_eq!(st, 200);
        assert_eq!(body, b"{\"status\":\"pass\"}");
    }

    #[tokio::test]
    async fn chunked_body_is_decoded_across_reads() {
        let (st, body) = answer(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhel"
                .to_vec(),
            b"lo\r\n".to_vec(),
            b"6;ext=1\r\n world\r".to_vec(),
            b"\n0\r\n\r\n".to_vec(),
        ])
        .await
        .unwrap();
        assert_eq!(st, 503);
        assert_eq!(body, b"hello world");
    }

    #[tokio::test]
    async fn body_without_framing_runs_to_the_close_and_interim_answers_are_skipped() {
        let (st, body) = answer(one(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.0 200 OK\r\n\r\nup",
        ))
        .await
        .unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"up"[..]));
        let (st, body) = answer(one("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"))
            .await
            .unwrap();
        assert_eq!((st, body.len()), (204, 0));
    }

    #[tokio::test]
    async fn bodies_are_cut_at_max_body() {
        let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'y', 100_000));
        let (_, body) = answer(vec![big]).await.unwrap();
        assert_eq!(body.len(), MAX_BODY);
        let mut chunks = vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()];
        chunks.extend((0..40).map(|_| {
            let mut c = b"1000\r\n".to_vec();
            c.extend(std::iter::repeat_n(b'z', 0x1000));
            c.extend_from_slice(b"\r\n");
            c
        }));
        let (_, body) = answer(chunks).await.unwrap();
        assert_eq!(body.len(), MAX_BODY);
        assert!(body.iter().all(|b| *b == b'z'));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_judged_as_it_came() {
        let (st, body) = answer(one("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort"))
            .await
            .unwrap();
        assert_eq!((st, body.as_slice()), (200, &b"short"[..]));
        let (_, body) = answer(one(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        ))
        .await
        .unwrap();
        assert_eq!(body, b"abc");
    }

    #[tokio::test]
    async fn bad_answers_are_named() {
        let err = |r: Result<(u16, Vec<u8>), String>| r.unwrap_err();
        assert_eq!(
            err(answer(vec![]).await),
            "connection closed before a response"
        );
        assert_eq!(
            err(answer(one("HTTP/1.1 200 OK\r\ncontent-le")).await),
            "connection closed before a response"
        );
        assert!(err(answer(one("\u{1}\u{2}garbage\r\n\r\n")).await)
            .starts_with("invalid HTTP response"));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..101 {
            many.push_str(&format!("x-{i}: z\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            err(answer(one(&many)).await),
            "invalid HTTP response: too many headers"
        );
        let mut huge = String::from("HTTP/1.1 200 OK\r\nx-big: ");
        huge.push_str(&"z".repeat(MAX_HEAD));
        assert_eq!(
            err(answer(one(&huge)).await),
            "invalid HTTP response: message head is too large"
        );
        assert_eq!(
            err(answer(one(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
            ))
            .await),
            "invalid HTTP response: conflicting content-length"
        );
        assert_eq!(
            err(answer(one("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n")).await),
            "invalid HTTP response: invalid content-length"
        );
    }

    fn spec(url: &str) -> ServiceSpec {
        let body = serde_json::json!({"name": "svc", "url": url});
        ServiceSpec::try_from(
            healthchecker_core::RegisterRequest::from_json(body.to_string().as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_request_names_the_host_and_refuses_a_path_that_would_split_it() {
        let r = request(&spec("http://[::1]:8080/health?x=1")).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            format!(
                "GET /health?x=1 HTTP/1.1\r\nhost: [::1]:8080\r\nuser-agent: {USER_AGENT}\r\naccept: {ACCEPT}\r\nconnection: close\r\n\r\n"
            )
        );
        let r = request(&spec("https://nas.local/")).unwrap();
        assert!(String::from_utf8(r)
            .unwrap()
            .starts_with("GET / HTTP/1.1\r\nhost: nas.local\r\n"));
        let mut s = spec("http://127.0.0.1/x");
        s.target.path = "/x HTTP/1.1\r\nevil: 1".into();
        assert_eq!(
            request(&s).unwrap_err(),
            "invalid request: byte 0x20 in the target's path"
        );
    }
}
