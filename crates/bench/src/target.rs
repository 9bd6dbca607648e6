//! The HTTP target of the benchmark: a separate process serving `GET
//! /health` (health+json `pass`) on several 127.0.0.x addresses and ports,
//! counting every request, so the checks achieved are counted at the
//! target and not by the daemon. `GET /count` on the control port answers
//! the total.
//!
//! Spreading targets over addresses and ports multiplies the 4-tuples
//! available to the client (one address and port give ~28,000 ephemeral
//! ports, fewer than 100,000 services).

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The addresses the target listens on (port 0: the kernel picks).
pub fn addrs(ips: u8, ports: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for i in 0..ips {
        for _ in 0..ports {
            out.push(SocketAddr::from(([127, 0, 0, 1 + i], 0)));
        }
    }
    out
}

const BODY: &[u8] = br#"{"status":"pass"}"#;

/// Serves until killed. Prints `listen ADDR` per listener, `control ADDR`,
/// then `ready`.
pub async fn serve(listen: Vec<SocketAddr>) -> anyhow::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    for addr in listen {
        let l = TcpListener::bind(addr).await?;
        println!("listen {}", l.local_addr()?);
        let count = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::Relaxed);
                        async {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/health+json")
                                    .body(Full::new(Bytes::from_static(BODY)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }
    let l = TcpListener::bind("127.0.0.1:0").await?;
    println!("control {}", l.local_addr()?);
    println!("ready");
    loop {
        let (s, _) = l.accept().await?;
        let count = count.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let n = count.load(Ordering::Relaxed);
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n.to_string())))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
