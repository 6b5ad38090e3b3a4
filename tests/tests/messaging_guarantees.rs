//! The shared messaging library against the real brokers and database:
//! what the outbox publishes, in what order, and what the inbox lets through.

#![allow(clippy::unwrap_used)]

use contracts::Envelope;
use contracts::catalogue::{OrderLine, ReserveStock};
use health::Readiness;
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::amqp_consumer::AmqpConsumer;
use messaging::consumer::{MessageProcessor, RetryPolicy};
use messaging::kafka::KafkaPublisher;
use messaging::kafka_consumer::KafkaConsumer;
use messaging::relay::{OutboxRelay, RelayConfig};
use messaging::{MessageFactory, Outbox, OutboxMessage};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use system_tests::brokers::{drain_queue, drain_topic};
use system_tests::effects::{self, ReserveStockRecorder};
use system_tests::outbox_fixture::{OutboxFixture, per_aggregate};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn setup(test: &str) -> OutboxFixture {
    OutboxFixture::new(test).await
}

/// The polling relay on a fixture.
trait PollingRelay {
    fn relay(&self) -> OutboxRelay;
    fn relay_with(&self, config: RelayConfig) -> OutboxRelay;
}

impl PollingRelay for OutboxFixture {
    fn relay(&self) -> OutboxRelay {
        self.relay_with(RelayConfig::default())
    }

    fn relay_with(&self, config: RelayConfig) -> OutboxRelay {
        let amqp = AmqpPublisher::new(
            AmqpConnector::new(&self.amqp_url, "test-relay", Readiness::new()),
            self.topology.clone(),
        );
        let kafka = KafkaPublisher::new(&self.brokers, "test-relay").unwrap();
        OutboxRelay::new(self.pool.clone(), Some(Arc::new(amqp)), Some(Arc::new(kafka)), config)
    }
}

async fn drain_relay(relay: &OutboxRelay) {
    for _ in 0..100 {
        if relay.relay_pending().await.unwrap().sent == 0 {
            return;
        }
    }
    panic!("the relay never drained the outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_broker_keeps_refusing_is_parked_and_the_rest_of_its_lane_moves_on() {
    let s = setup("parking").await;
    let aggregate = "agg-poison";
    let poison = s.poison_command(aggregate);
    let behind = s.messages(aggregate, 1);
    let mut tx = s.pool.begin().await.unwrap();
    Outbox::add(&mut tx, &poison).await.unwrap();
    for m in &behind {
        Outbox::add(&mut tx, m).await.unwrap();
    }
    tx.commit().await.unwrap();

    let relay = s.relay_with(RelayConfig { park_after_refusals: 3, ..RelayConfig::default() });
    let mut passes = Vec::new();
    for _ in 0..4 {
        passes.push(relay.relay_pending().await.unwrap());
    }
    let refused = messaging::relay::RelayPass { sent: 0, failed_lanes: 1, parked: 0 };
    assert_eq!(passes[..2], [refused, refused], "refused, retried, nothing behind it overtakes");
    assert_eq!(passes[2], messaging::relay::RelayPass { parked: 1, ..refused }, "parked at the third refusal");
    assert_eq!(passes[3], messaging::relay::RelayPass { sent: 2, ..Default::default() }, "then its lane moves on");

    s.assert_parked(&poison, 3).await;
    // Each failing pass sent the whole batch before the refusal came back
    // (the rows behind it were published, not marked): duplicates, which
    // the inbox absorbs, never a loss.
    let queued =
        drain_queue(&s.amqp_url, &s.topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(20)).await;
    let distinct: std::collections::BTreeSet<Uuid> = queued.iter().map(|r| r.envelope.message_id).collect();
    assert_eq!(distinct.into_iter().collect::<Vec<_>>(), [behind[0].envelope.message_id]);
}

/// The relay takes several lanes in one transaction: a row the broker
/// refuses stops its own lane there, while the rows of the other lanes in
/// the same batch, even those after it, are marked sent at once (so they
/// are published once, not again at every pass until the refused row is
/// parked). With one group, every lane shares the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_stops_only_its_own_lane_in_a_batch_of_several_lanes() {
    let s = setup("lanegroup").await;
    let poison = s.poison_command("agg-poison");
    let other_lane = s.messages("agg-elsewhere", 1);
    let lane_of = messaging::outbox::lane_of;
    assert_ne!(lane_of("agg-poison"), lane_of("agg-elsewhere"), "the test needs two lanes");
    let mut tx = s.pool.begin().await.unwrap();
    Outbox::add(&mut tx, &poison).await.unwrap();
    for m in &other_lane {
        Outbox::add(&mut tx, m).await.unwrap();
    }
    tx.commit().await.unwrap();

    let relay = s.relay_with(RelayConfig { lane_groups: 1, park_after_refusals: 3, ..RelayConfig::default() });
    let first = relay.relay_pending().await.unwrap();
    assert_eq!(
        first,
        messaging::relay::RelayPass { sent: 2, failed_lanes: 1, parked: 0 },
        "the other lane's rows, behind the refused one in the batch, went out and were marked"
    );
    let second = relay.relay_pending().await.unwrap();
    assert_eq!(
        second,
        messaging::relay::RelayPass { sent: 0, failed_lanes: 1, parked: 0 },
        "only the refused row is left"
    );

    let queued =
        drain_queue(&s.amqp_url, &s.topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(20)).await;
    let ids: Vec<Uuid> = queued.iter().map(|r| r.envelope.message_id).collect();
    assert_eq!(ids, [other_lane[0].envelope.message_id], "published once, not again at the second pass");
}

/// A row whose stored envelope no longer decodes (edited by hand, or left by
/// an older version) is refused by the relay itself: parked like any
/// refusal, while the rest of its lane, and every other lane, goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_envelope_does_not_decode_is_parked_and_its_lane_moves_on() {
    let s = setup("undecodable").await;
    let aggregate = "agg-undecodable";
    let [broken, behind] = s.messages(aggregate, 1);
    let other_lane = s.messages("agg-elsewhere", 1);
    let lane_of = messaging::outbox::lane_of;
    assert_ne!(lane_of(aggregate), lane_of("agg-elsewhere"), "the test needs two lanes");
    let mut tx = s.pool.begin().await.unwrap();
    Outbox::add(&mut tx, &broken).await.unwrap();
    Outbox::add(&mut tx, &behind).await.unwrap();
    for m in &other_lane {
        Outbox::add(&mut tx, m).await.unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query("UPDATE outbox SET envelope = jsonb_build_object('message_id', 'not a uuid') WHERE message_id = $1")
        .bind(broken.envelope.message_id)
        .execute(&s.pool)
        .await
        .unwrap();

    let relay = s.relay_with(RelayConfig { park_after_refusals: 2, ..RelayConfig::default() });
    let first = relay.relay_pending().await.expect("one bad row must not fail the pass");
    assert_eq!((first.sent, first.failed_lanes, first.parked), (2, 1, 0), "the other lane went out");
    let second = relay.relay_pending().await.unwrap();
    assert_eq!((second.failed_lanes, second.parked), (1, 1), "parked at the second refusal");
    let third = relay.relay_pending().await.unwrap();
    assert_eq!((third.sent, third.failed_lanes), (1, 0), "then the row behind it goes out");

    let (parked, error): (bool, Option<String>) =
        sqlx::query_as("SELECT parked_at IS NOT NULL, last_error FROM outbox WHERE id = (SELECT min(id) FROM outbox)")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert!(parked);
    assert!(error.unwrap_or_default().contains("envelope does not decode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_messages_are_never_published_and_committed_ones_are_published_as_committed() {
    let s = setup("rollback").await;

    let mut rolled_back = Vec::new();
    let mut tx = s.pool.begin().await.unwrap();
    for seq in 1..=3 {
        for m in s.messages("agg-rolled-back", seq) {
            Outbox::add(&mut tx, &m).await.unwrap();
            rolled_back.push(m.envelope.message_id);
        }
    }
    tx.rollback().await.unwrap();

    let mut committed: HashMap<Uuid, OutboxMessage> = HashMap::new();
    let mut tx = s.pool.begin().await.unwrap();
    for seq in 1..=10 {
        for aggregate in ["agg-a", "agg-b"] {
            for m in s.messages(aggregate, seq) {
                Outbox::add(&mut tx, &m).await.unwrap();
                committed.insert(m.envelope.message_id, m);
            }
        }
    }
    tx.commit().await.unwrap();

    drain_relay(&s.relay()).await;
    let unsent: (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetch_one(&s.pool).await.unwrap();
    assert_eq!(unsent.0, 0);

    let queued =
        drain_queue(&s.amqp_url, &s.topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(20)).await;
    let logged =
        drain_topic(&s.brokers, &s.topology.orders_topic(), Duration::from_secs(2), Duration::from_secs(30)).await;
    for received in queued.iter().chain(&logged) {
        assert!(!rolled_back.contains(&received.envelope.message_id), "a rolled-back message was published");
        let original = committed.get(&received.envelope.message_id).expect("an unknown message was published");
        // Exactly as committed: the envelope (but for the relay's own trace
        // context) and the payload.
        let mut expected: Envelope = original.envelope.clone();
        expected.traceparent = received.envelope.traceparent.clone();
        expected.tracestate = received.envelope.tracestate.clone();
        assert_eq!(received.envelope, expected);
        assert_eq!(received.payload, original.payload);
    }
    assert_eq!(queued.len(), 20, "every committed command, once");
    assert_eq!(logged.len(), 20, "every committed event, once");
    assert!(logged.iter().all(|r| r.key.as_deref() == Some(r.envelope.correlation_id.as_str())), "keyed by aggregate");
    for received in [&queued, &logged] {
        for (aggregate, seqs) in per_aggregate(received) {
            assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{aggregate} out of order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_each_aggregates_order() {
    let s = setup("tworelays").await;
    const AGGREGATES: usize = 12;
    const PER_AGGREGATE: i64 = 25;
    let writer = {
        let pool = s.pool.clone();
        let batches: Vec<Vec<OutboxMessage>> = (1..=PER_AGGREGATE)
            .map(|seq| (0..AGGREGATES).flat_map(|a| s.messages(&format!("agg-{a}"), seq)).collect())
            .collect();
        tokio::spawn(async move {
            // Many small transactions while the relays run, as in production.
            for batch in batches {
                let mut tx = pool.begin().await.unwrap();
                Outbox::add_all(&mut tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
            }
        })
    };
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2).map(|_| tokio::spawn(s.relay().run(shutdown.clone()))).collect();
    writer.await.unwrap();
    let expected = AGGREGATES as i64 * PER_AGGREGATE * 2;
    for _ in 0..600 {
        let (sent,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetch_one(&s.pool).await.unwrap();
        if sent == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    let queued =
        drain_queue(&s.amqp_url, &s.topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(30)).await;
    let logged =
        drain_topic(&s.brokers, &s.topology.orders_topic(), Duration::from_secs(3), Duration::from_secs(30)).await;
    for (name, received) in [("queue", &queued), ("topic", &logged)] {
        let groups = per_aggregate(received);
        assert_eq!(groups.len(), AGGREGATES, "{name}: every aggregate arrived");
        for (aggregate, seqs) in groups {
            assert_eq!(seqs, (1..=PER_AGGREGATE).collect::<Vec<_>>(), "{name}: {aggregate} out of order or incomplete");
        }
    }
}

async fn wait_for_effects(pool: &PgPool, n: usize) {
    for _ in 0..200 {
        if effects::all(pool).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_several_times_has_one_effect_on_rabbitmq_and_on_kafka() {
    let s = setup("inboxdup").await;
    effects::create_table(&s.pool).await;
    let shutdown = CancellationToken::new();

    let amqp_processor =
        MessageProcessor::new(s.pool.clone(), "test-amqp", ReserveStockRecorder, RetryPolicy::default());
    let connector = AmqpConnector::new(&s.amqp_url, "test-consumer", Readiness::new());
    let queue = s.topology.stock_commands();
    tokio::spawn(
        AmqpConsumer::new(connector, s.topology.clone(), queue.clone(), 8, amqp_processor).run(shutdown.clone()),
    );

    let kafka = Arc::new(KafkaPublisher::new(&s.brokers, "test-producer").unwrap());
    let kafka_processor =
        MessageProcessor::new(s.pool.clone(), "test-kafka", ReserveStockRecorder, RetryPolicy::default());
    let group = s.topology.consumer_group("inbox-test");
    let topic = s.topology.orders_topic();
    tokio::spawn(
        KafkaConsumer::new(&s.brokers, &group, vec![topic.clone()], kafka_processor, kafka.clone(), Readiness::new())
            .run(shutdown.clone()),
    );

    let amqp = AmqpPublisher::new(AmqpConnector::new(&s.amqp_url, "test-dup", Readiness::new()), s.topology.clone());
    let [command, event] = s.messages("agg-dup", 1);
    let payload = serde_json::to_vec(&command.payload).unwrap();
    // The same message three times on each broker, as redeliveries would.
    for _ in 0..3 {
        amqp.send(&queue, &command.envelope, &payload, &[]).await.unwrap().confirmed().await.unwrap();
        kafka.send(&topic, "agg-dup", &event.envelope, &payload, &[]).await.unwrap().delivered().await.unwrap();
    }
    wait_for_effects(&s.pool, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = effects::all(&s.pool).await;
    assert_eq!(all.len(), 2, "one effect per message and consumer: {all:?}");
    let (inbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox").fetch_one(&s.pool).await.unwrap();
    assert_eq!(inbox, 2);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_sent_outbox_rows_and_inbox_rows_past_their_window() {
    let s = setup("retention").await;
    let mut tx = s.pool.begin().await.unwrap();
    for seq in 1..=4 {
        Outbox::add_all(&mut tx, &s.messages("agg-r", seq)).await.unwrap();
    }
    tx.commit().await.unwrap();
    // Two rows sent long ago, two sent just now, the rest unsent.
    sqlx::query(
        "UPDATE outbox SET sent_at = now() - interval '2 days' WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 2)",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 2)")
        .execute(&s.pool)
        .await
        .unwrap();
    for age in ["30 days", "1 hour"] {
        sqlx::query(&format!(
            "INSERT INTO inbox (consumer, message_id, message_type, outcome, received_at)
             VALUES ('c', gen_random_uuid(), 't', 'applied', now() - interval '{age}')"
        ))
        .execute(&s.pool)
        .await
        .unwrap();
    }
    let config = messaging::retention::RetentionConfig {
        sent_outbox: Duration::from_secs(24 * 3600),
        inbox: Duration::from_secs(7 * 24 * 3600),
        batch: 1,
        ..Default::default()
    };
    let purged = messaging::retention::purge_expired(&s.pool, &config).await.unwrap();
    assert_eq!(purged, messaging::retention::Purged { outbox: 2, inbox: 1 });
    let (outbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(&s.pool).await.unwrap();
    let (unsent,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetch_one(&s.pool).await.unwrap();
    assert_eq!((outbox, unsent), (6, 4), "unsent rows are never deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_naming_a_foreign_return_address_is_dead_lettered_unhandled() {
    let s = setup("replyto").await;
    effects::create_table(&s.pool).await;
    let shutdown = CancellationToken::new();
    let processor = MessageProcessor::new(s.pool.clone(), "test-amqp", ReserveStockRecorder, RetryPolicy::default());
    let connector = AmqpConnector::new(&s.amqp_url, "test-consumer", Readiness::new());
    let queue = s.topology.stock_commands();
    tokio::spawn(AmqpConsumer::new(connector, s.topology.clone(), queue.clone(), 8, processor).run(shutdown.clone()));

    // Its reply would sit in the outbox, unroutable: refuse it up front.
    let order_id = Uuid::now_v7();
    let payload = ReserveStock { order_id, lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }] };
    let foreign = MessageFactory::new("test")
        .command(&queue, &order_id.to_string(), "someone-elses.queue", None, &payload)
        .unwrap();
    let [good, _] = s.messages("agg-replyto", 1);
    let amqp =
        AmqpPublisher::new(AmqpConnector::new(&s.amqp_url, "test-replyto", Readiness::new()), s.topology.clone());
    for message in [&foreign, &good] {
        let body = serde_json::to_vec(&message.payload).unwrap();
        amqp.send(&queue, &message.envelope, &body, &[]).await.unwrap().confirmed().await.unwrap();
    }
    wait_for_effects(&s.pool, 1).await;
    let dlq = contracts::Topology::dead_letter_queue(&queue);
    let dead = drain_queue(&s.amqp_url, &dlq, Duration::from_secs(2), Duration::from_secs(20)).await;
    shutdown.cancel();
    let effects = effects::all(&s.pool).await;
    assert_eq!(effects.iter().map(|(_, m)| *m).collect::<Vec<_>>(), [good.envelope.message_id], "only the good one");
    assert_eq!(dead.iter().map(|r| r.envelope.message_id).collect::<Vec<_>>(), [foreign.envelope.message_id]);
}
