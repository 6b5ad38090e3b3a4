//! Delivers recorded e-mails over SMTP, after the transaction that recorded
//! them has committed, so a slow or absent mail server never holds up (or
//! rolls back) the exactly-once record.
//!
//! Delivery is at least once: a sender that dies after the server accepted a
//! message but before marking it delivered sends it again once its claim
//! expires. The Message-ID is the same each time, so the copy is recognisable.

use crate::store::{self, ClaimedEmail};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use messaging::deadline::{QUERY_TIMEOUT, within};
use messaging::retry::Backoff;
use service_kit::config::Secret;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// E-mails claimed per pass.
const BATCH_SIZE: i64 = 10;
/// Longest wait for the server on one e-mail.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim keeps other senders away: longer than a whole batch can take.
const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// How often to look for due e-mails when there is nothing to do.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at one e-mail.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("SMTP_URL is not a plain `smtp://[user:password@]host[:port]` URL: {0}")]
    Url(String),
    #[error("EMAIL_FROM `{value}` is not a mailbox: {source}")]
    From { value: String, source: lettre::address::AddressError },
}

/// Wait before the next attempt at an e-mail that failed `attempts` times:
/// 2 s, 4 s, 8 s, … up to 10 minutes.
pub fn retry_delay(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    Duration::from_secs(1_u64 << doublings).min(MAX_RETRY_DELAY)
}

/// Where to deliver, from `smtp://[user:password@]host[:port]`. Plain SMTP
/// only: lettre's URL parser needs a TLS feature this build leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SmtpServer {
    host: String,
    port: u16,
    /// User and password.
    credentials: Option<(String, Secret)>,
}

impl SmtpServer {
    const DEFAULT_PORT: u16 = 25;

    fn parse(url: &str) -> Result<Self, SmtpSetupError> {
        let invalid = |why: &str| SmtpSetupError::Url(why.to_owned());
        let rest = url.trim().strip_prefix("smtp://").ok_or_else(|| invalid("the scheme must be smtp://"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) =
                    userinfo.split_once(':').ok_or_else(|| invalid("credentials must be user:password"))?;
                (Some((user.to_owned(), Secret::new(password))), host_port)
            }
            None => (None, authority),
        };
        // An IPv6 host is bracketed: `[::1]:2525`.
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed `[` in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            Some(port) => port.parse().map_err(|_| invalid(&format!("port `{port}` is not a number")))?,
            None => Self::DEFAULT_PORT,
        };
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        Ok(Self { host: host.to_owned(), port, credentials })
    }
}

enum Outcome {
    Delivered,
    /// May pass (connection refused, 4xx): try again later.
    Failed(String),
    /// Will not pass (bad address, 5xx): give up on this e-mail.
    Rejected(String),
}

pub struct SmtpSender {
    pool: PgPool,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    /// `smtp_url` like `smtp://127.0.0.1:1025` (plain, no TLS); `from` like
    /// `ordermesh <orders@ordermesh.local>`.
    pub fn new(pool: PgPool, smtp_url: &str, from: &str) -> Result<Self, SmtpSetupError> {
        let server = SmtpServer::parse(smtp_url)?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host)
            .port(server.port)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = server.credentials {
            builder = builder.credentials(Credentials::new(user, password.expose().to_owned()));
        }
        let transport = builder.build();
        let from = from.parse().map_err(|source| SmtpSetupError::From { value: from.to_owned(), source })?;
        Ok(Self { pool, transport, from })
    }

    /// Delivers due e-mails until `shutdown`; the e-mail in progress is finished.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("SMTP sender started");
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut failures = 0;
        loop {
            let delay = match self.deliver_due(&shutdown).await {
                Ok(0) => {
                    failures = 0;
                    POLL_INTERVAL
                }
                Ok(_) => {
                    failures = 0;
                    Duration::ZERO
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "SMTP sender cannot read or update its e-mails");
                    backoff.delay(failures)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!("SMTP sender stopped");
    }

    /// One pass: claims the due e-mails and tries each once. Returns how
    /// many were tried.
    pub async fn deliver_due(&self, shutdown: &CancellationToken) -> Result<usize, sqlx::Error> {
        let claimed = within(QUERY_TIMEOUT, store::claim_due(&self.pool, BATCH_SIZE, CLAIM_LEASE)).await?;
        for email in &claimed {
            if shutdown.is_cancelled() {
                // The rest fall due again when their claim runs out.
                break;
            }
            match self.deliver(email).await {
                Outcome::Delivered => {
                    tracing::info!(message_id = %email.message_id_header, to = %email.recipient, "e-mail delivered");
                    metrics::counter!("emails_delivered_total").increment(1);
                    within(QUERY_TIMEOUT, store::mark_delivered(&self.pool, email.id)).await?;
                }
                Outcome::Failed(error) => {
                    let retry_in = retry_delay(email.smtp_attempts);
                    tracing::warn!(message_id = %email.message_id_header, attempts = email.smtp_attempts, %error, ?retry_in, "e-mail delivery failed; will retry");
                    metrics::counter!("email_delivery_failures_total").increment(1);
                    within(QUERY_TIMEOUT, store::mark_failed(&self.pool, email.id, &error, retry_in)).await?;
                }
                Outcome::Rejected(error) => {
                    tracing::error!(message_id = %email.message_id_header, %error, "e-mail refused for good; not retrying");
                    metrics::counter!("emails_rejected_total").increment(1);
                    within(QUERY_TIMEOUT, store::mark_rejected(&self.pool, email.id, &error)).await?;
                }
            }
        }
        Ok(claimed.len())
    }

    async fn deliver(&self, email: &ClaimedEmail) -> Outcome {
        let to: Mailbox = match email.recipient.parse() {
            Ok(to) => to,
            Err(e) => return Outcome::Rejected(format!("recipient `{}`: {e}", email.recipient)),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id_header.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone());
        let message = match message {
            Ok(m) => m,
            Err(e) => return Outcome::Rejected(format!("building the message: {e}")),
        };
        match self.transport.send(message).await {
            Ok(_) => Outcome::Delivered,
            Err(e) if e.is_permanent() => Outcome::Rejected(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_smtp_urls_are_understood() {
        let server = SmtpServer::parse("smtp://127.0.0.1:1025").unwrap();
        assert_eq!(server, SmtpServer { host: "127.0.0.1".into(), port: 1025, credentials: None });
        let server = SmtpServer::parse("smtp://me:secret@mail.local/").unwrap();
        assert_eq!(server.port, 25);
        assert_eq!(server.host, "mail.local");
        assert_eq!(server.credentials, Some(("me".into(), Secret::new("secret"))));
        assert!(!format!("{server:?}").contains("secret"), "{server:?}");
        assert_eq!(SmtpServer::parse("smtp://[::1]:2525").unwrap().host, "::1");
        assert_eq!(SmtpServer::parse("smtp://[::1]").unwrap().port, 25);
        assert!(SmtpServer::parse("smtps://mail.local").is_err());
        assert!(SmtpServer::parse("smtp://mail.local:port").is_err());
        assert!(SmtpServer::parse("smtp://").is_err());
    }

    #[test]
    fn retries_back_off_and_stay_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(30), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(0), Duration::from_secs(2));
    }
}
