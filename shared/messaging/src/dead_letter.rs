//! Dead letters: where a message goes when it can never be handled, with the
//! reason and the attempt count attached as headers, so an operator can
//! inspect it and replay it once the cause is fixed.
//!
//! RabbitMQ: `<queue>.dlq`. Kafka: `<topic>.<group>.dlq`. A replayed message
//! keeps its message id, so the inbox still deduplicates it.

/// Why the message was dead-lettered.
pub const REASON: &str = "x-dead-letter-reason";
/// How many times handling was attempted.
pub const ATTEMPTS: &str = "x-attempts";
/// The queue or topic it was consumed from (where a replay sends it back).
pub const ORIGINAL_DESTINATION: &str = "x-original-destination";
/// The consumer that gave up on it.
pub const CONSUMER: &str = "x-dead-lettered-by";
/// When (RFC 3339).
pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";

/// Set on a Kafka dead letter whose copy the broker refused (too large, not
/// allowed): it carries the headers only, and this says where the original
/// still is (`<partition>:<offset>` of the original topic) and why.
pub const PAYLOAD_LEFT_AT: &str = "x-payload-left-at";

/// Every header this module adds.
pub const ALL: &[&str] = &[REASON, ATTEMPTS, ORIGINAL_DESTINATION, CONSUMER, DEAD_LETTERED_AT, PAYLOAD_LEFT_AT];

/// The headers added to a dead letter.
pub fn headers(reason: &str, attempts: u32, original_destination: &str, consumer: &str) -> Vec<(&'static str, String)> {
    vec![
        (REASON, truncate(reason, 1000)),
        (ATTEMPTS, attempts.to_string()),
        (ORIGINAL_DESTINATION, original_destination.to_owned()),
        (CONSUMER, consumer.to_owned()),
        (DEAD_LETTERED_AT, chrono::Utc::now().to_rfc3339()),
    ]
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
