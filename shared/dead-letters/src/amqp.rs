//! RabbitMQ dead-letter queues (`<queue>.dlq`).
//!
//! AMQP has no peek: letters are taken with `basic.get` and not acknowledged,
//! and closing the channel gives them back to the queue (in order, flagged
//! redelivered). A replay publishes a letter's copy through the default
//! exchange and acknowledges the letter only after the broker's confirm, so a
//! crash in between leaves a duplicate (absorbed by the inbox), never a loss.
//!
//! Each look at a letter counts as a delivery of the (quorum) dead-letter
//! queue: its `x-delivery-count` grows by one per `list` or `show`. Harmless
//! while the dead-letter queue has no delivery limit (RabbitMQ 3.x); RabbitMQ
//! 4 gives quorum queues a default limit of 20, past which a letter would be
//! dropped, so there the `.dlq` must be declared without one.

use crate::values::{table_json, timestamp_json};
use crate::{
    DeadLetter, DeadLetterError, Destination, Limits, MAX_REPLAY_PER_CALL, ReplayReport, ReplaySelection, Replayed,
    Result, is_dead_letter_header,
};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use messaging::secret::redact_url;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;

/// Bounds a broker call: a broker that accepts the connection but never
/// answers must not hang an admin request.
async fn within<T>(limits: Limits, doing: &str, call: impl Future<Output = Result<T, lapin::Error>>) -> Result<T> {
    let wait = limits.wait(doing)?;
    match tokio::time::timeout(wait, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DeadLetterError::Timeout { after: wait, doing: doing.to_owned() }),
    }
}

/// One connection for one operation, closed when dropped at the end of it.
struct Session {
    connection: Connection,
    limits: Limits,
}

impl Session {
    async fn open(url: &str, limits: Limits) -> Result<Self> {
        let props = ConnectionProperties::default().with_connection_name("dead-letters".into());
        // Parsed here, not by `Connection::connect`: its error for an
        // unusable URL quotes it, password and all.
        let uri: lapin::uri::AMQPUri = url.parse().map_err(|error: String| {
            let unquoted = if url.is_empty() { error } else { error.replace(url, &redact_url(url)) };
            DeadLetterError::Amqp(std::io::Error::other(unquoted).into())
        })?;
        let connection = within(limits, "connecting to RabbitMQ", Connection::connect_uri(uri, props)).await?;
        Ok(Self { connection, limits })
    }

    async fn channel(&self) -> Result<Channel> {
        within(self.limits, "opening a channel", self.connection.create_channel()).await
    }

    /// Messages in `queue` by a passive declare; `None` if it was never
    /// declared (nothing was ever dead-lettered there).
    async fn message_count(&self, queue: &str) -> Result<Option<u32>> {
        // A failed passive declare closes its channel: a channel of its own.
        let channel = self.channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let doing = format!("declaring {queue}");
        let wait = self.limits.wait(&doing)?;
        let declared = tokio::time::timeout(wait, channel.queue_declare(queue.into(), options, FieldTable::default()))
            .await
            .map_err(|_| DeadLetterError::Timeout { after: wait, doing })?;
        match declared {
            Ok(q) => {
                let _ = channel.close(200, "counted".into()).await;
                Ok(Some(q.message_count()))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, channel: &Channel, queue: &str) -> Result<Option<Delivery>> {
        let got =
            within(self.limits, "reading a dead letter", channel.basic_get(queue.into(), BasicGetOptions::default()))
                .await?;
        Ok(got.map(|m| m.delivery))
    }

    async fn close(self) {
        // Returns every letter taken but not acknowledged.
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(p) if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// Messages ready in each queue, in the order given; a queue never declared holds none.
pub async fn counts(url: &str, queues: &[String], limits: Limits) -> Result<Vec<u64>> {
    let session = Session::open(url, limits).await?;
    let mut counts = Vec::with_capacity(queues.len());
    for queue in queues {
        match session.message_count(queue).await {
            Ok(n) => counts.push(u64::from(n.unwrap_or(0))),
            Err(e) => {
                session.close().await;
                return Err(e);
            }
        }
    }
    session.close().await;
    Ok(counts)
}

pub async fn list(url: &str, dlq: &Destination, limit: usize, limits: Limits) -> Result<Vec<DeadLetter>> {
    let session = Session::open(url, limits).await?;
    let result = async {
        if session.message_count(&dlq.name).await?.is_none() {
            return Ok(Vec::new());
        }
        let channel = session.channel().await?;
        let mut letters = Vec::new();
        while letters.len() < limit {
            match session.get(&channel, &dlq.name).await? {
                Some(delivery) => letters.push(letter(&delivery)),
                None => break,
            }
        }
        Ok(letters)
    }
    .await;
    session.close().await;
    result
}

pub async fn show(url: &str, dlq: &Destination, message_id: &str, limits: Limits) -> Result<DeadLetter> {
    let session = Session::open(url, limits).await?;
    let result = async {
        let waiting = session.message_count(&dlq.name).await?.unwrap_or(0);
        let channel = session.channel().await?;
        // Only what was there at the start: letters arriving meanwhile are not looked at.
        for _ in 0..waiting {
            match session.get(&channel, &dlq.name).await? {
                Some(delivery) if message_id_of(&delivery.properties).as_deref() == Some(message_id) => {
                    return Ok(letter(&delivery));
                }
                Some(_) => {}
                None => break,
            }
        }
        Err(not_found(dlq, message_id))
    }
    .await;
    session.close().await;
    result
}

fn not_found(dlq: &Destination, message_id: &str) -> DeadLetterError {
    DeadLetterError::MessageNotFound { destination: dlq.name.clone(), message_id: message_id.to_owned() }
}

pub async fn replay(url: &str, dlq: &Destination, selection: &ReplaySelection, limits: Limits) -> Result<ReplayReport> {
    let wanted = match selection {
        ReplaySelection::All => None,
        ReplaySelection::Message(id) => Some(id.as_str()),
        ReplaySelection::UpTo(_) => {
            return Err(DeadLetterError::Unsupported(format!(
                "{} is a RabbitMQ queue: replay one message by id, or all; offsets are for Kafka topics",
                dlq.name
            )));
        }
    };
    let session = Session::open(url, limits).await?;
    let mut report = ReplayReport::new(dlq);
    let result = async {
        let waiting = u64::from(session.message_count(&dlq.name).await?.unwrap_or(0));
        let channel = session.channel().await?;
        within(limits, "enabling publisher confirms", channel.confirm_select(ConfirmSelectOptions::default())).await?;
        let sent = send_back_letters(&session, &channel, dlq, wanted, waiting, &mut report).await;
        // An acknowledgement has no reply: only the channel's close-ok says
        // the broker has processed the ones before it. Closing the
        // connection straight after them can hand a replayed letter back to
        // the dead-letter queue (seen: replayed and still pending).
        let closed = within(limits, "closing the replay channel", channel.close(200, "replayed".into())).await;
        sent.and(closed)
    }
    .await;
    session.close().await;
    match result {
        // Whatever broke, say how many letters had already gone back.
        Err(e) if report.replayed > 0 && !matches!(e, DeadLetterError::ReplayFailed { .. }) => {
            Err(DeadLetterError::ReplayFailed {
                destination: dlq.source.clone(),
                message_id: None,
                replayed: report.replayed,
                reason: e.to_string(),
            })
        }
        result => result.map(|()| report),
    }
}

/// Takes the letters that were waiting (`waiting`, so letters that arrive
/// meanwhile, or come straight back, cannot keep this going) and sends back
/// the one `wanted`, or all, each acknowledged after its confirm.
async fn send_back_letters(
    session: &Session,
    channel: &Channel,
    dlq: &Destination,
    wanted: Option<&str>,
    waiting: u64,
    report: &mut ReplayReport,
) -> Result<()> {
    let limits = session.limits;
    let mut taken: u64 = 0;
    while taken < waiting {
        let at_most = u64::try_from(MAX_REPLAY_PER_CALL).unwrap_or(u64::MAX);
        if wanted.is_none() && (report.replayed >= at_most || !limits.has_round_trip_left()) {
            // Stopped between letters, so the report is exact.
            report.remaining = waiting - taken;
            return Ok(());
        }
        let Some(delivery) = session.get(channel, &dlq.name).await? else { break };
        taken += 1;
        let message_id = message_id_of(&delivery.properties);
        if wanted.is_some_and(|id| message_id.as_deref() != Some(id)) {
            // Not this one: held unacknowledged, returned on close.
            continue;
        }
        send_back(channel, dlq, &delivery, limits).await.map_err(|reason| DeadLetterError::ReplayFailed {
            destination: dlq.source.clone(),
            message_id: message_id.clone(),
            replayed: report.replayed,
            reason,
        })?;
        within(limits, "acknowledging a replayed letter", delivery.acker.ack(BasicAckOptions::default())).await?;
        report.replayed += 1;
        report.messages.push(Replayed { message_id, position: None });
        if wanted.is_some() {
            return Ok(());
        }
    }
    match wanted {
        Some(id) => Err(not_found(dlq, id)),
        None => Ok(()),
    }
}

/// Publishes the letter's copy to its source queue and waits for the confirm.
async fn send_back(channel: &Channel, dlq: &Destination, delivery: &Delivery, limits: Limits) -> Result<(), String> {
    // mandatory: a missing queue comes back as a return, not as silence.
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish(
            "".into(),
            dlq.source.as_str().into(),
            options,
            &delivery.data,
            replay_properties(&delivery.properties),
        )
        .await
        .map_err(|e| e.to_string())?;
    let timeout = limits.wait("waiting for a publisher confirm").map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, confirm).await {
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(format!("no queue {} (the message was returned)", dlq.source)),
        Ok(Ok(other)) => Err(format!("the broker did not take the message: {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no publisher confirm within {timeout:?}")),
    }
}

/// The letter's properties as they were before dead-lettering: everything
/// kept (message id first of all) but the dead-letter headers.
pub fn replay_properties(props: &BasicProperties) -> BasicProperties {
    let headers: BTreeMap<ShortString, AMQPValue> = props
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(name, _)| !is_dead_letter_header(name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    props.clone().with_headers(FieldTable::from(headers))
}

pub async fn purge(url: &str, dlq: &Destination, limits: Limits) -> Result<u64> {
    let session = Session::open(url, limits).await?;
    let result = async {
        if session.message_count(&dlq.name).await?.is_none() {
            return Ok(0);
        }
        let channel = session.channel().await?;
        let purged =
            within(limits, "purging", channel.queue_purge(dlq.name.as_str().into(), QueuePurgeOptions::default()))
                .await?;
        Ok(u64::from(purged))
    }
    .await;
    session.close().await;
    result
}

fn message_id_of(props: &BasicProperties) -> Option<String> {
    props.message_id().as_ref().map(|id| id.as_str().to_owned())
}

/// A delivery from a dead-letter queue, decoded. A letter that RabbitMQ moved
/// itself (past the delivery limit) has no headers of ours: its reason,
/// source and time come from `x-first-death-*` and `x-death`, and its attempt
/// count is unknown (`x-delivery-count` counts deliveries from the dead-letter
/// queue itself, not from the queue it came from).
pub fn letter(delivery: &Delivery) -> DeadLetter {
    let props = &delivery.properties;
    let headers: BTreeMap<String, Value> =
        props.headers().as_ref().map(|t| table_json(t).into_iter().collect()).unwrap_or_default();
    let short = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    let mut properties = BTreeMap::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            properties.insert(name.to_owned(), value);
        }
    };
    put("message_id", short(props.message_id()).map(Value::from));
    put("type", short(props.kind()).map(Value::from));
    put("correlation_id", short(props.correlation_id()).map(Value::from));
    put("reply_to", short(props.reply_to()).map(Value::from));
    put("app_id", short(props.app_id()).map(Value::from));
    put("content_type", short(props.content_type()).map(Value::from));
    put("content_encoding", short(props.content_encoding()).map(Value::from));
    put("delivery_mode", props.delivery_mode().map(|m| json!(m)));
    put("priority", props.priority().map(|p| json!(p)));
    put("expiration", short(props.expiration()).map(Value::from));
    put("timestamp", props.timestamp().map(timestamp_json));
    put("user_id", short(props.user_id()).map(Value::from));

    let mut letter = DeadLetter {
        message_id: short(props.message_id()),
        message_type: short(props.kind()),
        correlation_id: short(props.correlation_id()),
        reason: None,
        attempts: None,
        original_destination: None,
        dead_lettered_by: None,
        dead_lettered_at: None,
        headers,
        properties,
        key: None,
        position: None,
        payload: String::from_utf8_lossy(&delivery.data).into_owned(),
        payload_bytes: delivery.data.len(),
    };
    letter.decode_headers();
    let text = |name: &str| letter.headers.get(name).and_then(crate::values::as_text);
    let first_death = letter
        .headers
        .get("x-death")
        .and_then(|d| d.as_array())
        .and_then(|deaths| deaths.last())
        .cloned()
        .unwrap_or(Value::Null);
    if letter.reason.is_none() {
        letter.reason = text("x-first-death-reason").map(|r| format!("rabbitmq: {r}"));
    }
    if letter.original_destination.is_none() {
        letter.original_destination = text("x-first-death-queue");
    }
    if letter.dead_lettered_by.is_none() && letter.headers.contains_key("x-death") {
        letter.dead_lettered_by = Some("rabbitmq".to_owned());
    }
    if letter.dead_lettered_at.is_none() {
        letter.dead_lettered_at = first_death.get("time").and_then(crate::values::as_text);
    }
    letter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unusable_url_is_not_quoted_in_the_error() {
        let limits = Limits::new(std::time::Duration::from_secs(1), None);
        let error = Session::open("amqp:guest:hunter2@127.0.0.1", limits).await.err().expect("an unusable URL");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn replay_properties_keep_the_envelope_and_drop_the_dead_letter_headers() {
        let mut table = FieldTable::default();
        table.insert("schema_version".into(), AMQPValue::LongString("1".into()));
        table.insert("x-dead-letter-reason".into(), AMQPValue::LongString("bad".into()));
        table.insert("x-attempts".into(), AMQPValue::LongString("5".into()));
        table.insert("x-death".into(), AMQPValue::FieldArray(vec![].into()));
        let props = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_reply_to("order.replies".into())
            .with_delivery_mode(2)
            .with_headers(table);
        let replayed = replay_properties(&props);
        assert_eq!(replayed.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(replayed.reply_to().as_ref().map(|s| s.as_str()), Some("order.replies"));
        assert_eq!(replayed.delivery_mode(), &Some(2));
        let names: Vec<&str> = replayed.headers().as_ref().unwrap().inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["schema_version"]);
    }
}
