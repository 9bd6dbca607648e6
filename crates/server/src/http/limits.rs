//! Per-client limits of the API (SPEC section 12, hostile LAN): the rate of
//! state-changing requests, the connections one client may hold, and how
//! long a response may wait for a client that does not read it.
//!
//! A client is its IPv4 address, or the /64 of its IPv6 address: one host
//! on an IPv6 LAN can pick any of 2^64 addresses in its prefix, so keying by
//! the full address would limit nothing. This module only counts and
//! refuses; who may change what is [`super::auth`]'s job.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a response may stall because the client does not read it
/// before the connection is dropped (SPEC section 12: 30 s). A client that
/// reads nothing would otherwise hold a connection slot, its buffers and
/// the handler's response forever.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// A rate limit's burst, in seconds' worth of its rate: a script that
/// registers its fleet at start-up goes through at once, a flood does not.
pub const BURST_SECONDS: u32 = 5;

/// Above this many tracked clients, idle ones are forgotten (so a scan of
/// many source addresses cannot grow the table without bound).
const FORGET_IDLE_ABOVE: usize = 10_000;

/// The key a client is limited by: its IPv4 address (also inside an
/// IPv4-mapped IPv6 address), or its IPv6 address's /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

type Keyed = governor::DefaultKeyedRateLimiter<IpAddr>;

/// The per-client rate of state-changing requests (`--register-rate-limit`
/// per second, bursts of [`BURST_SECONDS`] worth; 0: unlimited).
pub struct ChangeLimiter {
    keyed: Option<Keyed>,
    calls: AtomicU64,
}

impl ChangeLimiter {
    /// `per_sec` changes a second per client; 0 for no limit.
    pub fn new(per_sec: u32) -> Self {
        let keyed = NonZeroU32::new(per_sec).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(BURST_SECONDS).expect("non-zero"));
            Keyed::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        ChangeLimiter {
            keyed,
            calls: AtomicU64::new(0),
        }
    }

    /// Counts one change by the client at `ip`; `Err(seconds to wait)`
    /// when it is over its rate.
    pub fn take(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(keyed) = &self.keyed else {
            return Ok(());
        };
        if self.calls.fetch_add(1, Ordering::Relaxed) & 1023 == 0 && keyed.len() > FORGET_IDLE_ABOVE
        {
            keyed.retain_recent();
        }
        keyed.check_key(&client_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Middleware: every state-changing request counts against its client's
/// rate; over it, `429` with `Retry-After`. Runs before authentication, so
/// that guessing tokens is limited too.
pub async fn rate_limit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if super::cross_site::is_state_changing(req.method(), req.uri().path()) {
        let ip = req
            .extensions()
            .get::<super::auth::Peer>()
            .map(|p| p.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(secs) = app.limiter.take(ip) {
            return ApiError::RateLimited(secs.max(1)).into_response();
        }
    }
    next.run(req).await
}

/// Open connections per client, capped (`--max-connections-per-client`).
#[derive(Clone)]
pub struct ClientConnections {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One client's connection slot; freed on drop.
pub struct ClientSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ClientConnections {
    /// At most `max` connections per client.
    pub fn new(max: usize) -> Self {
        ClientConnections {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for a connection from `ip`, or `None` when the client holds
    /// its maximum already.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            key,
            open: self.open.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection whose writes fail when they make no progress for the
/// given time: hyper then drops the connection. Reads pass through (their
/// own limits are the header read timeout and the request timeout).
pub struct WriteTimeout<S> {
    inner: S,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`; a write stalled for `stall` fails with `TimedOut`.
    pub fn new(inner: S, stall: Duration) -> Self {
        WriteTimeout {
            inner,
            stall,
            timer: None,
        }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.timer = None;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the client read nothing for {} s; dropping its response",
                                stall.as_secs()
                            ),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_keyed_by_ipv4_address_or_ipv6_64() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }

    #[test]
    fn the_rate_has_a_burst_and_zero_is_off() {
        let l = ChangeLimiter::new(2);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..10 {
            assert!(l.take(ip).is_ok());
        }
        // Same /64, another address: the same bucket.
        let wait = l.take("2001:db8::2".parse().unwrap()).unwrap_err();
        assert!((1..=1).contains(&wait), "{wait}");
        assert!(l.take("192.0.2.1".parse().unwrap()).is_ok());
        let off = ChangeLimiter::new(0);
        for _ in 0..1000 {
            assert!(off.take(ip).is_ok());
        }
    }

    #[test]
    fn connections_are_capped_per_client() {
        let c = ClientConnections::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let (s1, _s2) = (c.try_acquire(a).unwrap(), c.try_acquire(a).unwrap());
        assert!(c.try_acquire(a).is_none());
        assert!(c.try_acquire("127.0.0.2".parse().unwrap()).is_some());
        drop(s1);
        assert!(c.try_acquire(a).is_some());
    }
}
