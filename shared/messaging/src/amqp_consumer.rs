//! Consumes a RabbitMQ command or reply queue through the
//! [`MessageProcessor`]: bounded prefetch, acknowledgement after commit,
//! dead letters published (with confirm) before the original is acknowledged,
//! and a reconnect loop that rides out a broker restart.

use crate::amqp::{AmqpConnector, AmqpError, PendingConfirm, close_quietly, declare_topology, with_setup_timeout};
use crate::consumer::{Disposition, IncomingMessage, MessageHandler, MessageProcessor, MessageSource};
use crate::dead_letter;
use crate::safety;
use crate::wire;
use contracts::Topology;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest a dead letter's publish waits for the broker's confirm.
const DEAD_LETTER_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

pub struct AmqpConsumer<H> {
    connector: AmqpConnector,
    topology: Topology,
    queue: String,
    /// Unacknowledged deliveries the broker may push at once: the bound on
    /// in-flight work.
    prefetch: u16,
    processor: Arc<MessageProcessor<H>>,
}

impl<H: MessageHandler> AmqpConsumer<H> {
    pub fn new(
        connector: AmqpConnector,
        topology: Topology,
        queue: impl Into<String>,
        prefetch: u16,
        processor: Arc<MessageProcessor<H>>,
    ) -> Self {
        let consumer = Self { connector, topology, queue: queue.into(), prefetch, processor };
        consumer.connector.readiness().register(&consumer.component());
        consumer
    }

    fn component(&self) -> String {
        format!("amqp-consumer:{}", self.queue)
    }

    /// Consumes until `shutdown`, reconnecting after any connection loss.
    /// On shutdown: stops taking deliveries, finishes those in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let component = self.component();
        let mut failures: u32 = 0;
        while let Some(connection) = self.connector.connect(&component, &shutdown).await {
            match self.consume(&connection, &shutdown).await {
                Ok(()) => {
                    let _ = connection.close(200, "shutdown".into()).await;
                    break;
                }
                Err(e) => {
                    failures += 1;
                    close_quietly(&connection).await;
                    self.connector.readiness().not_ready(&component, format!("AMQP consumer: {e}"));
                    tracing::warn!(queue = %self.queue, error = %e, "AMQP consumer lost its channel; reconnecting");
                    let delay = crate::retry::Backoff::default().delay(failures.min(6));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(queue = %self.queue, "AMQP consumer stopped");
    }

    async fn consume(&self, connection: &lapin::Connection, shutdown: &CancellationToken) -> Result<(), AmqpError> {
        let tag = format!("{}-{}", self.processor.consumer(), uuid::Uuid::now_v7());
        // Bounded: a broker still booting may leave these unanswered, and
        // the consumer would then wait forever instead of reconnecting.
        let setup = async {
            let channel = connection.create_channel().await?;
            channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
            // Confirms, for the dead letters this channel publishes.
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            declare_topology(&channel, &self.topology).await?;
            let deliveries = channel
                .basic_consume(
                    self.queue.clone().into(),
                    tag.clone().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, AmqpError>((channel, deliveries))
        };
        let (channel, mut deliveries) = with_setup_timeout(setup).await?;
        self.connector.readiness().ready(&self.component());
        tracing::info!(queue = %self.queue, prefetch = self.prefetch, "consuming");

        let reply_queues: Arc<[String]> = self.topology.reply_queues().into();
        let mut in_flight = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                    // Finish what was started; unstarted deliveries return to the queue.
                    while in_flight.join_next().await.is_some() {}
                    let _ = channel.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                Some(done) = in_flight.join_next() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "message task panicked");
                    }
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let task = DeliveryTask {
                            processor: self.processor.clone(),
                            reply_queues: reply_queues.clone(),
                            channel: channel.clone(),
                            queue: self.queue.clone(),
                            shutdown: shutdown.clone(),
                        };
                        in_flight.spawn(task.run(delivery));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    )).into()),
                }
            }
        }
    }
}

struct DeliveryTask<H> {
    processor: Arc<MessageProcessor<H>>,
    /// Where a reply may go: a command naming any other return address is
    /// refused, or its reply would sit in the outbox, unroutable.
    reply_queues: Arc<[String]>,
    channel: Channel,
    queue: String,
    shutdown: CancellationToken,
}

impl<H: MessageHandler> DeliveryTask<H> {
    async fn run(self, delivery: Delivery) {
        let unsafe_early_ack = safety::unsafe_modes().ack_before_commit;
        if unsafe_early_ack {
            self.ack(&delivery).await;
        }
        let disposition = match wire::envelope_from_amqp(&delivery.properties) {
            Ok(envelope) if envelope.reply_to.as_ref().is_some_and(|to| !self.reply_queues.contains(to)) => {
                let reason =
                    format!("reply_to `{}` is not a reply queue of this system", envelope.reply_to.unwrap_or_default());
                tracing::error!(queue = %self.queue, message_id = %envelope.message_id, "{reason}");
                Disposition::DeadLetter { reason, attempts: 1 }
            }
            Ok(envelope) => {
                let message = IncomingMessage {
                    envelope,
                    payload: delivery.data.clone(),
                    source: MessageSource::Queue { queue: self.queue.clone(), redelivered: delivery.redelivered },
                };
                self.processor.process(&message, &self.shutdown).await
            }
            Err(e) => {
                tracing::error!(queue = %self.queue, error = %e, "malformed envelope");
                Disposition::DeadLetter { reason: format!("malformed envelope: {e}"), attempts: 1 }
            }
        };
        if unsafe_early_ack {
            return;
        }
        match disposition {
            Disposition::Acknowledge => self.ack(&delivery).await,
            Disposition::DeadLetter { reason, attempts } => {
                match self.dead_letter(&delivery, &reason, attempts).await {
                    Ok(()) => self.ack(&delivery).await,
                    Err(e) => {
                        tracing::error!(error = %e, "could not dead-letter; returning the message to the queue");
                        self.nack(&delivery).await;
                    }
                }
            }
            Disposition::Abandon => self.nack(&delivery).await,
        }
    }

    async fn ack(&self, delivery: &Delivery) {
        // A failed ack (channel gone) means redelivery, which the inbox absorbs.
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered");
        }
    }

    async fn nack(&self, delivery: &Delivery) {
        let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
        if let Err(e) = delivery.acker.nack(options).await {
            tracing::warn!(error = %e, "nack failed; the message will be redelivered");
        }
    }

    /// Publishes the delivery, untouched but for the dead-letter headers, to
    /// `<queue>.dlq` and waits for the broker's confirm.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str, attempts: u32) -> Result<(), String> {
        let dlq = Topology::dead_letter_queue(&self.queue);
        let mut props = delivery.properties.clone();
        let mut headers = props.headers().clone().unwrap_or_default();
        for (name, value) in dead_letter::headers(reason, attempts, &self.queue, self.processor.consumer()) {
            headers.insert(name.into(), lapin::types::AMQPValue::LongString(value.into()));
        }
        props = props.with_headers(headers);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = self
            .channel
            .basic_publish("".into(), dlq.clone().into(), options, &delivery.data, props)
            .await
            .map_err(|e| e.to_string())?;
        PendingConfirm::new(&dlq, confirm, DEAD_LETTER_CONFIRM_TIMEOUT)
            .confirmed()
            .await
            .map_err(|e| format!("dead-letter queue {dlq} did not take the message: {e}"))?;
        metrics::counter!("dead_letters_total", "destination" => dlq).increment(1);
        Ok(())
    }
}
