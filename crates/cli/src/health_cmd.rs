//! `healthchecker health`: asks a daemon's own `/health` and exits 0 only
//! when it answers 200. Made for container `HEALTHCHECK`s and scripts, so
//! that an image needs no curl; `serve` uses the same request to tell
//! systemd it is ready only once the API answers.
//!
//! A plain HTTP/1.0 request over a `TcpStream` rather than the client
//! library: the daemon serves plain HTTP, and this path must not depend on
//! mDNS, proxies or TLS roots.

use clap::Args;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of a `/health` answer read: it is a small JSON object.
const MAX_ANSWER: u64 = 64 * 1024;

/// Options of `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Daemon URL [default: http://127.0.0.1 on the port of HEALTHCHECKER_BIND, else 8484]
    #[arg(long, env = "HEALTHCHECKER_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Seconds to wait for the answer
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    timeout: u64,
    /// Print nothing; the exit code tells (0 healthy, 1 unhealthy, 3 unreachable)
    #[arg(long, short)]
    quiet: bool,
}

/// The address to reach a listener bound to `addr` from the same machine:
/// a wildcard bind (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `GET {path}` on `addr`: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    Ok((status, body.trim_end().to_string()))
}

/// Whether the API on `addr` answers: a request is sent and any byte comes
/// back. Until the daemon's accept loop runs, a connection waits in the
/// listen backlog and nothing comes back. Any bytes count, so that an API
/// served over TLS (which answers a plain request with an alert) counts too.
pub async fn answers(addr: SocketAddr) -> io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        )),
        _ => Ok(()),
    }
}

/// Where `health` asks: `--server`, else loopback on the daemon's
/// configured port (`HEALTHCHECKER_BIND`, as in a container), else 8484.
fn target(server: Option<&str>) -> Result<(SocketAddr, String), String> {
    let Some(server) = server else {
        let port = std::env::var("HEALTHCHECKER_BIND")
            .ok()
            .and_then(|b| b.parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .unwrap_or(8484);
        return Ok(((Ipv4Addr::LOCALHOST, port).into(), "/health".into()));
    };
    let url = url::Url::parse(server).map_err(|e| format!("invalid --server {server:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "--server {server:?}: this command speaks plain http:// only (for an API on https, curl -f URL/health)"
        ));
    }
    let addr = url
        .socket_addrs(|| Some(80))
        .map_err(|e| format!("cannot resolve {server:?}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("cannot resolve {server:?}"))?;
    let path = format!("{}/health", url.path().trim_end_matches('/'));
    Ok((addr, path))
}

/// `health`: 0 when `/health` answers 200, 1 when it answers otherwise,
/// 2 for a bad URL, 3 when the daemon cannot be reached in time.
pub fn main(a: HealthArgs) -> ExitCode {
    let (addr, path) = match target(a.server.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("healthchecker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match crate::runtime(&mut tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let timeout = Duration::from_secs(a.timeout.max(1));
    match rt.block_on(async { tokio::time::timeout(timeout, get(addr, &path)).await }) {
        Ok(Ok((status, body))) => {
            if !a.quiet {
                println!("{body}");
            }
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                if !a.quiet {
                    eprintln!("healthchecker: http://{addr}{path} answered {status}");
                }
                ExitCode::from(1)
            }
        }
        Ok(Err(e)) => {
            if !a.quiet {
                eprintln!("healthchecker: http://{addr}{path}: {e}");
            }
            ExitCode::from(3)
        }
        Err(_) => {
            if !a.quiet {
                eprintln!("healthchecker: http://{addr}{path}: no answer within {timeout:?}");
            }
            ExitCode::from(3)
        }
    }
}
