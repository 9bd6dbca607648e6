//! The outbox sender: delivers pending notifications over SMTP (lettre)
//! with retries, and marks a mail sent only after the server accepted it.
//!
//! Delivery is at-least-once: a crash between the server's `250` and our
//! commit resends the same mail with the same Message-ID, which mail
//! clients de-duplicate. Every failure, temporary (4xx) or permanent (5xx),
//! is retried with exponential back-off (5 s doubling, capped at 1 h) until
//! the notification is 24 h old; then it is marked `failed`. A permanent
//! refusal is often a misconfiguration the operator fixes within the day.

use super::render::{render, render_digest, Mail};
use super::smtp::{SmtpConfig, SmtpTls};
use crate::clock::now_ms;
use crate::metrics::{DeliveryOutcome, Metrics};
use crate::store::{DigestRecord, NotificationRecord, Store};
use healthchecker_core::policy::DigestRule;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the outbox is polled for due mail.
pub const POLL: Duration = Duration::from_secs(1);
/// First retry delay; doubles per attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Give up on a notification this old.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest one SMTP conversation may take (a hung server).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most notifications read per poll.
const BATCH: usize = 500;

/// An SMTP client built from `--smtp-url`.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Builds the transport: `smtp://` plain (local relay), `?tls=starttls`
    /// (required) or `?tls=opportunistic`, `smtps://` implicit TLS.
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, String> {
        let host = cfg.url.host().to_string();
        let params = || TlsParameters::new(host.clone()).map_err(|e| format!("TLS setup: {e}"));
        let tls = match cfg.url.tls() {
            SmtpTls::Implicit => Tls::Wrapper(params()?),
            SmtpTls::Required => Tls::Required(params()?),
            SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(cfg.url.port())
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let Some(user) = cfg.url.user() {
            b = b.credentials(Credentials::new(
                user,
                cfg.password.clone().unwrap_or_default(),
            ));
        }
        let from: Mailbox = cfg.from.parse().map_err(|e| format!("--smtp-from: {e}"))?;
        Ok(Mailer {
            transport: b.build(),
            from,
        })
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()));
        for r in &mail.recipients {
            b = b.to(r
                .parse::<Mailbox>()
                .map_err(|e| format!("recipient {r}: {e}"))?);
        }
        b.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(mail.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(mail.html.clone()),
                ),
        )
        .map_err(|e| e.to_string())
    }

    /// Sends one mail; `Err` carries the server's reply or the I/O error.
    pub async fn send(&self, mail: &Mail) -> Result<(), String> {
        let msg = self.message(mail)?;
        match tokio::time::timeout(SEND_TIMEOUT * 2, self.transport.send(msg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "SMTP server did not answer within {}s",
                SEND_TIMEOUT.as_secs() * 2
            )),
        }
    }
}

/// The delay before retry number `attempts` (1-based).
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_RETRY)
}

/// What a failed delivery of a group of outbox rows leads to: the retry
/// bookkeeping shared by the mail sender and the channel dispatcher.
pub(crate) struct Retry {
    /// The attempt that failed (1-based): one more than the group's most.
    pub attempts: i64,
    /// Whether to mark the rows `failed` instead of trying again.
    pub give_up: bool,
    /// When to try again (Unix ms).
    pub next_attempt_at: i64,
}

impl Retry {
    /// Plans after a failure at `now` of the rows given as (attempts so
    /// far, created at). It gives up only when even the newest row is
    /// [`GIVE_UP_AFTER`] old, so the latest state is never dropped early;
    /// the next attempt waits `retry_after` (a receiver's `Retry-After`)
    /// or the [`backoff`].
    pub(crate) fn after_failure(
        rows: impl Iterator<Item = (i64, i64)> + Clone,
        now: i64,
        retry_after: Option<Duration>,
    ) -> Retry {
        let attempts = rows.clone().map(|(a, _)| a).max().unwrap_or(0) + 1;
        let newest = rows.map(|(_, at)| at).max().unwrap_or(now);
        let give_up = now - newest >= GIVE_UP_AFTER.as_millis() as i64;
        let wait = retry_after.unwrap_or_else(|| backoff(attempts));
        Retry {
            attempts,
            give_up,
            next_attempt_at: now + wait.as_millis() as i64,
        }
    }
}

/// Runs the sender until `cancel` fires. With `digests` enabled, each
/// pass first lets the store decide the newly due rows: mailed on their
/// own, or held (`digested`) for their recipient's digest (SPEC section 14).
pub async fn run(
    store: Store,
    mailer: Mailer,
    public_url: String,
    digests: DigestRule,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let host = crate::host::name_or_default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        if digests.enabled() {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.decide_digests("mail", now_ms(), digests))
                .await
            {
                Ok(Ok((_, held))) if held > 0 => {
                    tracing::info!(held, "mails held for a digest")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot decide digests"),
                _ => {}
            }
        }
        match store.read(|s| s.due_digests("mail", now_ms(), BATCH)).await {
            Ok(due) => {
                for d in due {
                    if cancel.is_cancelled() {
                        return;
                    }
                    let outcome = send_digest(&store, &mailer, &public_url, &host, d).await;
                    metrics.count_delivery(outcome);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the due digests"),
        }
        // On the store's reader threads: a full blocking pool cannot hold up mail.
        let due = match store.read(|s| s.due_notifications(now_ms(), BATCH)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                continue;
            }
        };
        for group in group_by_service(due) {
            if cancel.is_cancelled() {
                return;
            }
            let mail = render(&group, &public_url, &host);
            let ids: Vec<i64> = group.iter().map(|n| n.id).collect();
            let result = mailer.send(&mail).await;
            let now = now_ms();
            let s = store.clone();
            let outcome = match &result {
                Ok(()) => {
                    tracing::info!(service = %group[0].service, message_id = %mail.message_id, to = ?mail.recipients, "mail sent");
                    let mid = mail.message_id.clone();
                    let r = tokio::task::spawn_blocking(move || s.mark_sent(&ids, &mid, now)).await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "mail sent but not marked; it may be sent again");
                    }
                    DeliveryOutcome::Sent
                }
                Err(e) => {
                    let Retry {
                        attempts,
                        give_up,
                        next_attempt_at: next,
                    } = Retry::after_failure(
                        group.iter().map(|n| (n.attempts, n.created_at)),
                        now,
                        None,
                    );
                    tracing::warn!(service = %group[0].service, attempts, error = %e, give_up, "SMTP delivery failed");
                    let err = e.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        s.mark_failed_attempt(&ids, &err, next, give_up)
                    })
                    .await;
                    DeliveryOutcome::of_failure(give_up)
                }
            };
            metrics.count_delivery(outcome);
        }
    }
}

/// Mails one recipient's digest; returns the metric's outcome.
async fn send_digest(
    store: &Store,
    mailer: &Mailer,
    public_url: &str,
    host: &str,
    d: DigestRecord,
) -> DeliveryOutcome {
    let items = {
        let d = d.clone();
        store.read(move |s| s.digest_items(&d)).await
    };
    let result = match items {
        Ok(items) => {
            let mail = render_digest(&d, &items, public_url, host);
            mailer.send(&mail).await.map(|()| mail.message_id)
        }
        Err(e) => Err(format!("cannot read the digest: {e}")),
    };
    let now = now_ms();
    let s = store.clone();
    match result {
        Ok(message_id) => {
            tracing::info!(message_id = %message_id, "digest mail sent");
            let r = tokio::task::spawn_blocking(move || s.mark_digest_sent(d.id, now)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "digest sent but not marked; it may be sent again");
            }
            DeliveryOutcome::Sent
        }
        Err(e) => {
            let retry = Retry::after_failure(std::iter::once((d.attempts, d.ends_at)), now, None);
            tracing::warn!(attempts = retry.attempts, error = %e, give_up = retry.give_up, "digest mail failed");
            let (next, give_up) = (retry.next_attempt_at, retry.give_up);
            let _ =
                tokio::task::spawn_blocking(move || s.mark_digest_failed(d.id, &e, next, give_up))
                    .await;
            DeliveryOutcome::of_failure(give_up)
        }
    }
}

/// Groups due rows by service, keeping each group oldest first.
fn group_by_service(rows: Vec<NotificationRecord>) -> Vec<Vec<NotificationRecord>> {
    let mut groups: Vec<Vec<NotificationRecord>> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|g| g[0].service_id == r.service_id) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    for g in &mut groups {
        g.sort_by_key(|n| n.id);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(5), Duration::from_secs(80));
        assert_eq!(backoff(30), MAX_RETRY);
    }

    #[test]
    fn smtp_urls_build_transports() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://me%40x.com@smtp.gmail.com:587?tls=starttls",
            "smtps://mail.example.com",
        ] {
            let cfg = SmtpConfig {
                url: url.parse().unwrap(),
                from: "hc <hc@example.com>".into(),
                password: Some("p".into()),
            };
            assert!(Mailer::new(&cfg).is_ok(), "{url}");
        }
    }
}
