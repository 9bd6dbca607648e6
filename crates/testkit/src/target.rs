//! Plain TCP and HTTP targets whose behaviour a test changes at run time.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How an [`HttpTarget`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with health+json `pass`.
    Pass,
    /// 200 with health+json `warn` and this output.
    Warn(String),
    /// 503 with health+json `fail` and this output.
    Fail(String),
    /// This status and body, as given.
    Raw(u16, String),
    /// Accepts, reads the request, never answers.
    Hang,
    /// 200 with an endless chunked body.
    EndlessBody,
    /// 200 with a body of this many bytes.
    BigBody(usize),
    /// Sends the status line one byte a second.
    Drip,
    /// 302 to itself.
    RedirectLoop,
    /// 200 with 100 KB of headers.
    HugeHeaders,
    /// Not HTTP at all: 4 KB of random-looking bytes, then close.
    Garbage,
    /// 200 `pass` on this path only, 404 on any other (which path a probe asks for).
    OnlyAt(String),
}

/// A TCP listener that accepts and holds connections.
pub struct TcpTarget {
    /// Its address.
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpTarget {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> TcpTarget {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let a = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        });
        TcpTarget {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// An HTTP/1.1 server whose answers follow a [`Mode`].
pub struct HttpTarget {
    /// Its address.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

pub(crate) type Shared = (Arc<Mutex<Mode>>, Arc<AtomicU64>);

impl HttpTarget {
    /// Starts on 127.0.0.1 on a free port, answering `mode`.
    pub async fn start(mode: Mode) -> HttpTarget {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        let shared: Shared = (Arc::new(Mutex::new(mode)), Arc::new(AtomicU64::new(0)));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                tokio::spawn(serve_conn(stream, s.clone()));
            }
        });
        HttpTarget {
            addr,
            mode: shared.0,
            hits: shared.1,
            task,
        }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection (plain or TLS) according to the shared mode.
pub(crate) async fn serve_conn<S>(stream: S, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = shared.0.lock().unwrap().clone();
    match mode {
        Mode::Hang => {
            shared.1.fetch_add(1, Ordering::Relaxed);
            // Hold the connection open, answering nothing.
            let _keep = stream;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::Garbage => {
            shared.1.fetch_add(1, Ordering::Relaxed);
            let mut s = stream;
            let junk: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let _ = s.write_all(&junk).await;
        }
        Mode::Drip => {
            shared.1.fetch_add(1, Ordering::Relaxed);
            let mut s = stream;
            for b in b"HTTP/1.1 200 OK\r\n".iter().cycle() {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        _ => {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(req, &shared)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

fn answer(req: Request<hyper::body::Incoming>, shared: &Shared) -> Response<Body> {
    shared.1.fetch_add(1, Ordering::Relaxed);
    let mode = shared.0.lock().unwrap().clone();
    let json = |status: u16, body: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/health+json")
            .body(full(body.to_string()))
            .unwrap()
    };
    match mode {
        Mode::Pass => json(200, serde_json::json!({"status": "pass"})),
        Mode::Warn(o) => json(200, serde_json::json!({"status": "warn", "output": o})),
        Mode::Fail(o) => json(503, serde_json::json!({"status": "fail", "output": o})),
        Mode::Raw(status, body) => Response::builder().status(status).body(full(body)).unwrap(),
        Mode::OnlyAt(path) if req.uri().path() == path => {
            json(200, serde_json::json!({"status": "pass"}))
        }
        Mode::OnlyAt(_) => Response::builder()
            .status(404)
            .body(full("not found"))
            .unwrap(),
        Mode::EndlessBody => {
            let chunk = Bytes::from(vec![b'x'; 8192]);
            Response::builder()
                .status(200)
                .body(endless_body(chunk).boxed())
                .unwrap()
        }
        Mode::BigBody(n) => Response::builder()
            .status(200)
            .body(full(vec![b'y'; n]))
            .unwrap(),
        Mode::RedirectLoop => Response::builder()
            .status(302)
            .header("location", req.uri().path().to_string())
            .body(full(""))
            .unwrap(),
        Mode::HugeHeaders => {
            let mut b = Response::builder().status(200);
            for i in 0..100 {
                b = b.header(format!("x-filler-{i}"), "z".repeat(1000));
            }
            b.body(full("{\"status\":\"pass\"}")).unwrap()
        }
        Mode::Hang | Mode::Drip | Mode::Garbage => unreachable!("handled per connection"),
    }
}

/// An endless stream of `chunk` frames.
fn endless_body(
    chunk: Bytes,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static {
    struct Endless(Bytes);
    impl hyper::body::Body for Endless {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(Some(Ok(Frame::data(self.0.clone()))))
        }
    }
    Endless(chunk)
}
