//! A notification receiver: a real HTTP/1.1 server on 127.0.0.1 that
//! records every request (method, path, headers, body) so that a test can
//! check it against the documented API of the service it stands for, and
//! that can accept, fail, hang, answer 429 with `Retry-After`, or close
//! mid-request on demand.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a [`Receiver`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 with this body (`{"ok":true}` style JSON as the service would).
    Ok,
    /// This status (5xx, 4xx) with a short body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Reads the request, never answers.
    Hang,
    /// Reads the request, closes the connection without an answer.
    Close,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, `PUT`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// What it was answered.
    pub answered: Answer,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type State = (Arc<Mutex<Answer>>, Arc<Mutex<Vec<Received>>>);

/// The receiver; stops when dropped.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    log: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts on 127.0.0.1 on a free port.
    pub async fn start(answer: Answer) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        let state: State = (Arc::new(Mutex::new(answer)), Arc::default());
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, s.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            answer: state.0,
            log: state.1,
            task,
        }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == Answer::Ok)
            .collect()
    }

    /// Waits until `n` requests were accepted; returns them.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::wait_for(
            &format!("{n} accepted requests at {}", self.addr),
            timeout,
            || async {
                let a = self.accepted();
                (a.len() >= n).then_some(a)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    (answer, log): State,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let a = answer.lock().unwrap().clone();
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        answered: a.clone(),
    });
    let resp = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    match a {
        Answer::Ok => Ok(resp(200, r#"{"ok":true,"event_id":"$1"}"#)),
        Answer::Status(s) => Ok(resp(s, r#"{"ok":false,"error":"down for the test"}"#)),
        Answer::TooMany(secs) => {
            let mut r = resp(429, r#"{"ok":false,"error":"rate limited"}"#);
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            Ok(r)
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        // An error from the service closes the connection without a response.
        Answer::Close => Err(std::io::Error::other("closed mid-request")),
    }
}
