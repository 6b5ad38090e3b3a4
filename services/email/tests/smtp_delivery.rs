//! The SMTP sender against a fake SMTP server and a throwaway database on
//! the test stack's PostgreSQL (TEST_POSTGRES_URL, see test-support; the test fails if it is unreachable):
//! a recorded e-mail is delivered once with its stable Message-ID and marked
//! delivered; a server that is down or answers 4xx means a retry later; a 5xx
//! refusal is final.

use contracts::catalogue::OrderPaid;
use email_service::{compose, smtp::SmtpSender, store};
use sqlx::PgPool;
use std::time::Duration;
use test_support::ThrowawayDatabase;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A one-shot SMTP server: answers RCPT TO with `rcpt_reply` and sends
/// every message it accepts (the DATA text) to the returned channel.
async fn fake_smtp_server(rcpt_reply: &'static str) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 fake ESMTP\r\n").await.ok();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(message) = data.as_mut() {
                        if line == "." {
                            sender.send(std::mem::take(message)).ok();
                            data = None;
                            write.write_all(b"250 queued\r\n").await.ok();
                        } else {
                            message.push_str(&line);
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250 fake\r\n",
                        "RCPT" => rcpt_reply,
                        "DATA" => {
                            data = Some(String::new());
                            "354 go ahead\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        }
                        _ => "250 ok\r\n",
                    };
                    write.write_all(reply.as_bytes()).await.ok();
                }
            });
        }
    });
    (port, receiver)
}

async fn record_confirmation(pool: &PgPool) -> (Uuid, String) {
    let order_id = Uuid::now_v7();
    let email = compose::order_confirmation(&OrderPaid {
        order_id,
        customer_id: "c-1".into(),
        amount_cents: 1_798,
        payment_id: Uuid::now_v7(),
    });
    let mut conn = pool.acquire().await.expect("connection");
    assert!(store::record(&mut conn, &email, Uuid::now_v7()).await.expect("record"));
    (order_id, email.message_id_header)
}

async fn delivery_state(pool: &PgPool, order_id: Uuid) -> store::SentEmail {
    store::emails_of_order(pool, order_id).await.expect("read").pop().expect("the recorded e-mail")
}

#[tokio::test]
async fn a_recorded_email_is_delivered_once_with_its_message_id() {
    let db = ThrowawayDatabase::create("email_test", sqlx::migrate!("../../migrations/email")).await;
    let (port, mut received) = fake_smtp_server("250 ok\r\n").await;
    let (order_id, message_id) = record_confirmation(db.pool()).await;
    let sender =
        SmtpSender::new(db.pool().clone(), &format!("smtp://127.0.0.1:{port}"), "shop <orders@ordermesh.local>")
            .expect("sender");
    let shutdown = CancellationToken::new();

    assert_eq!(sender.deliver_due(&shutdown).await.expect("pass"), 1);
    let message = tokio::time::timeout(Duration::from_secs(5), received.recv()).await.expect("delivered").unwrap();
    assert!(message.contains(&format!("Message-ID: {message_id}")), "{message}");
    assert!(message.contains("To: c-1@example.com"), "{message}");
    let state = delivery_state(db.pool(), order_id).await;
    assert!(state.smtp_delivered_at.is_some(), "{state:?}");
    assert_eq!(state.smtp_attempts, 1);

    // Delivered e-mails are not sent again.
    assert_eq!(sender.deliver_due(&shutdown).await.expect("pass"), 0);
    assert!(received.try_recv().is_err());
    db.drop_it().await;
}

#[tokio::test]
async fn an_unreachable_server_means_a_later_retry() {
    let db = ThrowawayDatabase::create("email_test", sqlx::migrate!("../../migrations/email")).await;
    let (order_id, _) = record_confirmation(db.pool()).await;
    // Nothing listens on port 1.
    let sender = SmtpSender::new(db.pool().clone(), "smtp://127.0.0.1:1", "orders@ordermesh.local").expect("sender");
    let shutdown = CancellationToken::new();
    assert_eq!(sender.deliver_due(&shutdown).await.expect("pass"), 1);
    let state = delivery_state(db.pool(), order_id).await;
    assert!(state.smtp_delivered_at.is_none() && state.smtp_rejected_at.is_none(), "{state:?}");
    assert!(state.smtp_last_error.is_some());
    // Backing off: not due again at once.
    assert_eq!(sender.deliver_due(&shutdown).await.expect("pass"), 0);
    db.drop_it().await;
}

#[tokio::test]
async fn a_temporary_refusal_is_retried_and_a_permanent_one_is_final() {
    let db = ThrowawayDatabase::create("email_test", sqlx::migrate!("../../migrations/email")).await;
    let shutdown = CancellationToken::new();

    let (port, _) = fake_smtp_server("451 try again later\r\n").await;
    let (later, _) = record_confirmation(db.pool()).await;
    let sender = SmtpSender::new(db.pool().clone(), &format!("smtp://127.0.0.1:{port}"), "orders@ordermesh.local")
        .expect("sender");
    sender.deliver_due(&shutdown).await.expect("pass");
    let state = delivery_state(db.pool(), later).await;
    assert!(state.smtp_rejected_at.is_none() && state.smtp_delivered_at.is_none(), "{state:?}");

    let (port, _) = fake_smtp_server("550 no such user\r\n").await;
    let (never, _) = record_confirmation(db.pool()).await;
    let sender = SmtpSender::new(db.pool().clone(), &format!("smtp://127.0.0.1:{port}"), "orders@ordermesh.local")
        .expect("sender");
    sender.deliver_due(&shutdown).await.expect("pass");
    let state = delivery_state(db.pool(), never).await;
    assert!(state.smtp_rejected_at.is_some(), "{state:?}");
    assert!(state.smtp_last_error.as_deref().is_some_and(|e| e.contains("no such user")), "{state:?}");
    db.drop_it().await;
}
