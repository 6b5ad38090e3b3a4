//! RabbitMQ: connections that come back after a broker restart, a publisher
//! with publisher confirms, and the declaration of the command queues.
//!
//! lapin does not reconnect by itself here (auto-recovery is off on purpose:
//! replaying consumers behind the application's back would hide in-flight
//! deliveries). Every user of a connection runs a loop that reconnects with
//! backoff and reports readiness while it is down.

use crate::retry::Backoff;
use crate::secret::{Secret, redact_url};
use crate::wire;
use contracts::{Envelope, Topology};
use health::Readiness;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use std::future::Future;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Redeliveries after which RabbitMQ itself dead-letters a message: the
/// backstop for a message that kills its consumer before it can be handled.
pub const DELIVERY_LIMIT: i64 = 10;

/// Bound on setting up a channel on a fresh connection (open, confirm mode,
/// declarations). A broker that accepts the connection while still booting
/// can leave these unanswered; without a bound the caller waits forever
/// (and the publisher holds its lock meanwhile, stopping every publish).
pub const CHANNEL_SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Heartbeat asked of the broker unless the URL names one (`?heartbeat=`).
/// lapin gives up on a connection that has been silent for two heartbeats:
/// that is how a connection black-holed by the network, where no reset
/// ever arrives, is found dead. RabbitMQ's own default (60 s) would leave a
/// service stalled for two minutes.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Largest frame asked of the broker unless the URL names one
/// (`?frame_max=`). lapin keeps a receive and a send buffer of 32 frames per
/// connection, zeroed and so resident: at RabbitMQ's 128 KiB, 8 MiB per
/// connection, half the idle memory of a service holding two (measured,
/// docs/benchmarks.md). Messages here are a few KiB; a larger body is
/// split into several frames.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("AMQP: {0}")]
    Protocol(#[from] lapin::Error),
    #[error("the broker refused (nacked) the message")]
    Nacked,
    #[error("no queue `{0}`: the message was returned unroutable")]
    Unroutable(String),
    #[error("timed out waiting for the broker after {0:?}")]
    Timeout(Duration),
    #[error("AMQP URL: {0}")]
    Url(String),
    /// A pinned send found another channel than its batch's first send
    /// (see [`ChannelPin`]); it was not performed.
    #[error(
        "the publishing channel changed mid-batch (the batch is pinned to channel {pinned}); \
         the rest of the batch goes out on the next pass"
    )]
    ChannelChanged { pinned: u64 },
}

/// Opens connections to one broker URL, with backoff, reporting readiness
/// under `component`.
#[derive(Debug, Clone)]
pub struct AmqpConnector {
    url: Secret,
    connection_name: String,
    readiness: Readiness,
    backoff: Backoff,
}

impl AmqpConnector {
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>, readiness: Readiness) -> Self {
        Self {
            url: Secret::new(url),
            connection_name: connection_name.into(),
            readiness,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        }
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// One connection attempt.
    pub async fn connect_once(&self) -> Result<Connection, AmqpError> {
        let props = ConnectionProperties::default().with_connection_name(self.connection_name.clone().into());
        let connect = Connection::connect_uri(with_defaults(self.url.expose())?, props);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(AmqpError::Timeout(Duration::from_secs(10))),
        }
    }

    /// Connects, retrying with backoff until it succeeds or `shutdown` fires.
    pub async fn connect(&self, component: &str, shutdown: &CancellationToken) -> Option<Connection> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect_once().await {
                Ok(conn) => {
                    if attempt > 1 {
                        tracing::info!(component, attempt, "AMQP connection re-established");
                    }
                    return Some(conn);
                }
                Err(e) => {
                    self.readiness.not_ready(component, format!("AMQP connect: {e}"));
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(component, attempt, error = %e, ?delay, "AMQP connect failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

fn with_defaults(url: &str) -> Result<lapin::uri::AMQPUri, AmqpError> {
    // Some parse errors quote the URL, password and all.
    let unquoted = |error: String| if url.is_empty() { error } else { error.replace(url, &redact_url(url)) };
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(|error| AmqpError::Url(unquoted(error)))?;
    uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    Ok(uri)
}

/// Declares the dead-letter queue and the quorum command queue `queue`.
/// Quorum queues count redeliveries; past [`DELIVERY_LIMIT`] the broker moves
/// the message to `<queue>.dlq` itself, at least once.
pub async fn declare_command_queue(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let dlq = Topology::dead_letter_queue(queue);
    let mut dlq_args = FieldTable::default();
    // No delivery limit here (RabbitMQ 3.x, which compose pins and this
    // machine runs). RabbitMQ 4 gives every quorum queue a default limit of
    // 20, and the dead-letter tools' reads count as deliveries: on 4.x, set
    // a large `x-delivery-limit` on the dead-letter queues (a policy will do).
    dlq_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    channel.queue_declare(dlq.clone().into(), durable, dlq_args).await?;

    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dlq.into()));
    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    channel.queue_declare(queue.into(), durable, args).await?;
    Ok(())
}

/// Declares every command and reply queue of `topology`. Producers and
/// consumers both call it, so neither depends on the other starting first.
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    for queue in topology.command_queues() {
        declare_command_queue(channel, &queue).await?;
    }
    Ok(())
}

/// Runs a channel set-up sequence within [`CHANNEL_SETUP_TIMEOUT`].
pub async fn with_setup_timeout<T>(setup: impl Future<Output = Result<T, AmqpError>>) -> Result<T, AmqpError> {
    tokio::time::timeout(CHANNEL_SETUP_TIMEOUT, setup).await.unwrap_or(Err(AmqpError::Timeout(CHANNEL_SETUP_TIMEOUT)))
}

/// Closes a connection given up on, without waiting long for the broker.
pub async fn close_quietly(connection: &Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(320, "giving up on this connection".into()))
        .await;
}

struct LiveChannel {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
    /// Which channel this is: see [`ChannelSlot::opened`].
    generation: u64,
}

/// The publisher's channel, if one is open, and how many it has opened.
#[derive(Default)]
struct ChannelSlot {
    live: Option<LiveChannel>,
    /// Channels opened so far; each is numbered by it, so a pin tells a
    /// reopened channel from the one it was taken on.
    opened: u64,
}

impl ChannelSlot {
    /// The open channel with its number, if it is still connected.
    fn usable(&self) -> Option<(&Channel, u64)> {
        self.live.as_ref().filter(|l| l.channel.status().connected()).map(|l| (&l.channel, l.generation))
    }
}

/// Holds one batch's sends to one channel: the first pinned send takes the
/// channel in use (opening one if needed), and every later one goes out on
/// that same channel or not at all. A channel keeps the order of what was
/// sent on it, but if it dies (or is reset for another lane's failure) and
/// the next send opened a new one, a message lost with the old channel would
/// be overtaken by the next one, stored through the new channel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPin {
    generation: Option<u64>,
}

impl ChannelPin {
    /// Decides before anything is published, given the connected channel
    /// and its number, if any: `Some` to publish on it, `None` to open a new
    /// one first. Unpinned, either will do; pinned, only the pinned channel.
    fn choose<C>(&self, open: Option<(C, u64)>) -> Result<Option<(C, u64)>, AmqpError> {
        match (self.generation, open) {
            (None, open) => Ok(open),
            (Some(pinned), Some((channel, generation))) if pinned == generation => Ok(Some((channel, generation))),
            (Some(pinned), _) => Err(AmqpError::ChannelChanged { pinned }),
        }
    }

    /// Pins to `generation` unless already pinned.
    fn hold(&mut self, generation: u64) {
        self.generation.get_or_insert(generation);
    }
}

/// Publishes persistent messages through the default exchange with publisher
/// confirms. One connection, reopened on the next publish after a failure.
pub struct AmqpPublisher {
    connector: AmqpConnector,
    topology: Topology,
    slot: Mutex<ChannelSlot>,
    confirm_timeout: Duration,
}

pub const PUBLISHER_COMPONENT: &str = "amqp-publisher";

/// A publish the broker has received but not yet confirmed.
pub struct PendingConfirm {
    queue: String,
    confirm: lapin::PublisherConfirm,
    timeout: Duration,
}

impl PendingConfirm {
    /// A publish on `queue` whose confirm is waited for at most `timeout`.
    pub(crate) fn new(queue: &str, confirm: lapin::PublisherConfirm, timeout: Duration) -> Self {
        Self { queue: queue.to_owned(), confirm, timeout }
    }

    /// Waits for the broker's confirm: `Ok` only when it took responsibility
    /// for the message (stored in a queue).
    pub async fn confirmed(mut self) -> Result<(), AmqpError> {
        let confirmation = match tokio::time::timeout(self.timeout, &mut self.confirm).await {
            Ok(confirmation) => confirmation?,
            Err(_) => {
                // lapin keeps a confirm dropped unawaited until its channel
                // closes, and the channel may live on: wait it out aside.
                let late = self.confirm;
                tokio::spawn(async move {
                    let _ = late.await;
                });
                return Err(AmqpError::Timeout(self.timeout));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable(self.queue)),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(AmqpError::Nacked),
        }
    }
}

impl AmqpPublisher {
    pub fn new(connector: AmqpConnector, topology: Topology) -> Self {
        connector.readiness().register(PUBLISHER_COMPONENT);
        Self { connector, topology, slot: Mutex::new(ChannelSlot::default()), confirm_timeout: Duration::from_secs(15) }
    }

    /// The open confirm-mode channel, opening one if needed.
    async fn channel(&self) -> Result<Channel, AmqpError> {
        self.channel_pinned(&mut ChannelPin::default()).await
    }

    /// The channel `pin` allows, opening one only if it is not pinned yet;
    /// pins it. Decided under the slot's lock, before anything is published.
    async fn channel_pinned(&self, pin: &mut ChannelPin) -> Result<Channel, AmqpError> {
        let mut slot = self.slot.lock().await;
        let open = slot.usable().map(|(channel, generation)| (channel.clone(), generation));
        if let Some((channel, generation)) = pin.choose(open)? {
            pin.hold(generation);
            return Ok(channel);
        }
        slot.live = None;
        let connection = match self.connector.connect_once().await {
            Ok(c) => c,
            Err(e) => {
                self.connector.readiness().not_ready(PUBLISHER_COMPONENT, e.to_string());
                return Err(e);
            }
        };
        let setup = async {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            declare_topology(&channel, &self.topology).await?;
            Ok::<_, AmqpError>(channel)
        };
        let channel = match with_setup_timeout(setup).await {
            Ok(channel) => channel,
            Err(e) => {
                self.connector.readiness().not_ready(PUBLISHER_COMPONENT, e.to_string());
                close_quietly(&connection).await;
                return Err(e);
            }
        };
        self.connector.readiness().ready(PUBLISHER_COMPONENT);
        slot.opened += 1;
        let generation = slot.opened;
        slot.live = Some(LiveChannel { _connection: connection, channel: channel.clone(), generation });
        pin.hold(generation);
        Ok(channel)
    }

    /// Keeps the publishing channel open, reconnecting with backoff, so
    /// readiness reflects the broker even when nothing is being published.
    pub async fn keep_connected(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0;
        loop {
            let delay = match self.channel().await {
                Ok(_) => {
                    failures = 0;
                    Duration::from_secs(1)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "AMQP publisher cannot connect");
                    self.connector.backoff.delay(failures)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Forgets the channel after a failure so the next publish reconnects.
    pub async fn reset(&self, reason: &str) {
        self.connector.readiness().not_ready(PUBLISHER_COMPONENT, reason.to_owned());
        self.slot.lock().await.live = None;
    }

    /// [`Self::reset`] after a failure of a batch pinned by `pin`, unless
    /// its channel was replaced already: the newer channel did not fail,
    /// and resetting it would fail every other batch pinned to it. Without
    /// a pin the failure was in opening a channel, which left none to drop.
    pub async fn reset_pinned(&self, pin: &ChannelPin, reason: &str) {
        let mut slot = self.slot.lock().await;
        match (pin.generation, slot.live.as_ref()) {
            (Some(pinned), Some(live)) if live.generation == pinned => {}
            _ => return,
        }
        self.connector.readiness().not_ready(PUBLISHER_COMPONENT, reason.to_owned());
        slot.live = None;
    }

    /// Sends one message to `queue` and returns its pending confirm. Messages
    /// sent one after another on the channel reach the queue in that order.
    pub async fn send(
        &self,
        queue: &str,
        envelope: &Envelope,
        payload: &[u8],
        extra_headers: &[(&str, String)],
    ) -> Result<PendingConfirm, AmqpError> {
        self.send_pinned(&mut ChannelPin::default(), queue, envelope, payload, extra_headers).await
    }

    /// [`Self::send`] on the channel of `pin` (see [`ChannelPin`]): if the
    /// channel changed since the pin was taken, nothing is published and the
    /// error is [`AmqpError::ChannelChanged`].
    pub async fn send_pinned(
        &self,
        pin: &mut ChannelPin,
        queue: &str,
        envelope: &Envelope,
        payload: &[u8],
        extra_headers: &[(&str, String)],
    ) -> Result<PendingConfirm, AmqpError> {
        let channel = self.channel_pinned(pin).await?;
        // mandatory: a missing queue comes back as a return, not as silence.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish("".into(), queue.into(), options, payload, wire::amqp_properties(envelope, extra_headers))
            .await?;
        Ok(PendingConfirm::new(queue, confirm, self.confirm_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_password_does_not_print() {
        let connector = AmqpConnector::new("amqp://guest:hunter2@127.0.0.1:5672/%2f", "test", Readiness::new());
        assert!(!format!("{connector:?}").contains("hunter2"), "{connector:?}");
        // amq-protocol-uri quotes a URL it cannot use as a base.
        let error = with_defaults("amqp:guest:hunter2@127.0.0.1").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn a_heartbeat_and_a_frame_size_are_asked_for_unless_the_url_names_them() {
        let default = with_defaults("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            (default.query.heartbeat, default.query.frame_max),
            (Some(DEFAULT_HEARTBEAT_SECS), Some(DEFAULT_FRAME_MAX))
        );
        let named = with_defaults("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=3&frame_max=131072").unwrap();
        assert_eq!((named.query.heartbeat, named.query.frame_max), (Some(3), Some(131072)));
        assert!(matches!(with_defaults("http://nowhere"), Err(AmqpError::Url(_))));
    }

    /// Which channel each send of a batch of three uses when channel 1 is
    /// replaced by channel 2 after the first send: `Some(n)` for published
    /// on channel n, `None` for held back. Unpinned, each send gets a fresh
    /// pin, as [`AmqpPublisher::send`] does.
    fn channels_of_a_batch_across_a_replacement(pinned: bool) -> Vec<Option<u64>> {
        let mut batch_pin = ChannelPin::default();
        [1, 2, 2]
            .into_iter()
            .map(|open| {
                let mut fresh = ChannelPin::default();
                let pin = if pinned { &mut batch_pin } else { &mut fresh };
                let (_, generation) = pin.choose(Some(((), open))).ok()??;
                pin.hold(generation);
                Some(generation)
            })
            .collect()
    }

    #[test]
    fn a_pinned_batch_stays_on_its_first_channel() {
        assert_eq!(channels_of_a_batch_across_a_replacement(true), [Some(1), None, None]);
        let pin = ChannelPin { generation: Some(1) };
        assert!(matches!(pin.choose(Some(((), 2))), Err(AmqpError::ChannelChanged { pinned: 1 })));
        // A channel that is down is not reopened under a pin either.
        assert!(matches!(pin.choose(None::<((), u64)>), Err(AmqpError::ChannelChanged { pinned: 1 })));
        assert!(matches!(pin.choose(Some(((), 1))), Ok(Some(((), 1)))));
        // The next batch pins afresh, opening a channel if none is open.
        assert!(matches!(ChannelPin::default().choose(None::<((), u64)>), Ok(None)));
    }

    /// The negative control: unpinned, the second send goes out on the new
    /// channel after the first went out on the old one, which may have lost
    /// it.
    #[test]
    fn an_unpinned_batch_spans_a_replaced_channel() {
        assert_eq!(channels_of_a_batch_across_a_replacement(false), [Some(1), Some(2), Some(2)]);
    }

    /// After a reset (another lane's failure) a pinned send publishes
    /// nothing and opens nothing, where an unpinned one reconnects (to a
    /// port where nothing listens, so that it fails trying).
    #[tokio::test]
    async fn after_a_reset_a_pinned_send_does_not_reconnect() {
        let connector = AmqpConnector::new("amqp://guest:guest@127.0.0.1:1/%2f", "test", Readiness::new());
        let publisher = AmqpPublisher::new(connector, Topology::new("t."));
        publisher.reset("another lane's confirm timed out").await;
        let envelope = Envelope::new("Test", "agg", "test");
        let mut pin = ChannelPin { generation: Some(1) };
        let pinned = publisher.send_pinned(&mut pin, "q", &envelope, b"{}", &[]).await;
        assert!(matches!(pinned, Err(AmqpError::ChannelChanged { pinned: 1 })), "{:?}", pinned.err());
        assert_eq!(publisher.slot.lock().await.opened, 0, "no channel opened");
        let unpinned = publisher.send("q", &envelope, b"{}", &[]).await;
        assert!(matches!(unpinned, Err(AmqpError::Protocol(_) | AmqpError::Timeout(_))), "{:?}", unpinned.err());
    }
}
