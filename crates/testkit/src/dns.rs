//! A nameserver on 127.0.0.1 for the DNS tests.

use hickory_resolver::proto::op::{Message, Query};
use std::net::SocketAddr;

/// Starts a UDP nameserver on 127.0.0.1 and returns its address. For each
/// query it builds the response skeleton (id, op code, recursion flags,
/// the question) and calls `answer` with the queried name (lower case,
/// with the final dot), the question and the response to fill in; `false`
/// leaves the query unanswered. Malformed packets are ignored.
pub async fn nameserver(
    answer: impl Fn(&str, &Query, &mut Message) -> bool + Send + 'static,
) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            let name = query.name().to_utf8().to_ascii_lowercase();
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_query(query.clone());
            if !answer(&name, &query, &mut r) {
                continue;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}
