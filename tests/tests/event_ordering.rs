//! Out-of-order and duplicate events change nothing: the real shipping,
//! email and loyalty services, fed order events straight onto the test's
//! `orders` topic out of order and more than once, end in the state one
//! in-order delivery gives; the late events are recorded in the inbox as
//! `stale`. And the same guard at the library level: a `MessageProcessor`
//! given sequence 3 then 2 of one aggregate applies only 3.

#![allow(clippy::unwrap_used)]

use contracts::MessageContract;
use contracts::catalogue::{OrderCancelled, OrderPaid, OrderPlaced};
use messaging::consumer::{Disposition, MessageProcessor, RetryPolicy};
use messaging::kafka::KafkaPublisher;
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, MessageSource, OutboxMessage};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use system_tests::{TestSystem, fresh_database, test_stack, unique_namespace};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CONSUMERS: [&str; 3] = ["shipping", "email", "loyalty"];

/// Publishes `message` as the order service's relay would: keyed by the
/// order id, waiting for the brokers' acknowledgement so the next one lands
/// after it in the same partition.
async fn publish(kafka: &KafkaPublisher, message: &OutboxMessage) {
    let payload = serde_json::to_vec(&message.payload).unwrap();
    kafka
        .send(message.destination.name(), &message.partition_key, &message.envelope, &payload, &[])
        .await
        .unwrap()
        .delivered()
        .await
        .unwrap();
}

/// A service's inbox: message id → (message type, outcome).
async fn inbox(db: &PgPool) -> BTreeMap<Uuid, (String, String)> {
    let rows: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT message_id, message_type, outcome FROM inbox").fetch_all(db).await.unwrap();
    rows.into_iter().map(|(id, t, o)| (id, (t, o))).collect()
}

/// The sum of a counter's series in a service's `/metrics` whose labels
/// include every one of `labels`.
async fn counter(system: &TestSystem, service: &str, name: &str, labels: &[&str]) -> f64 {
    let (_, text) = system.get_text(service, "/metrics").await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The kinds of e-mail recorded for `order`, sorted.
async fn email_kinds(system: &TestSystem, order: Uuid) -> Vec<String> {
    let (status, body) = system.get_json("email", &format!("/emails?order_id={order}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut kinds: Vec<String> =
        body["emails"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    kinds
}

async fn shipments(system: &TestSystem, order: Uuid) -> usize {
    let (status, body) = system.get_json("shipping", &format!("/shipments?order_id={order}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["shipments"].as_array().unwrap().len()
}

/// `(balance, [(order, kind, points)])`, or `None` for a customer without an account.
async fn loyalty(system: &TestSystem, customer: &str) -> Option<(i64, Vec<(String, String, i64)>)> {
    let (status, body) = system.get_json("loyalty", &format!("/customers/{customer}/loyalty")).await.unwrap();
    match status {
        404 => None,
        200 => Some((
            body["balance"].as_i64().unwrap(),
            body["ledger"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["order_id"].as_str().unwrap().to_owned(),
                        e["kind"].as_str().unwrap().to_owned(),
                        e["points"].as_i64().unwrap(),
                    )
                })
                .collect(),
        )),
        other => panic!("GET /customers/{customer}/loyalty: {other} {body}"),
    }
}

/// The effects of one order, as the three services' queries show them,
/// with the order id left out so two orders can be compared.
async fn effects_of(
    system: &TestSystem,
    order: Uuid,
    customer: &str,
) -> (usize, Vec<String>, Option<(i64, Vec<(String, i64)>)>) {
    let points = loyalty(system, customer).await.map(|(balance, ledger)| {
        assert!(ledger.iter().all(|(o, _, _)| *o == order.to_string()), "{customer} has entries of other orders");
        (balance, ledger.into_iter().map(|(_, kind, points)| (kind, points)).collect())
    });
    (shipments(system, order).await, email_kinds(system, order).await, points)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_repeated_order_events_have_the_effect_of_one_in_order_delivery() {
    let started = Instant::now();
    let system = TestSystem::start("ordering", &CONSUMERS, &[]).await.unwrap();
    println!("shipping, email, loyalty ready in {:?}", started.elapsed());
    let topic = system.topology().orders_topic();
    let kafka = KafkaPublisher::new(&system.stack().kafka_brokers(), "test-order-producer").unwrap();
    let order = MessageFactory::new("order");
    let paid = |id: Uuid, customer: &str, seq: i64| {
        let payload = OrderPaid {
            order_id: id,
            customer_id: customer.to_owned(),
            amount_cents: 12_345,
            payment_id: Uuid::now_v7(),
        };
        order.event(&topic, &id.to_string(), seq, None, &payload).unwrap()
    };
    let placed = |id: Uuid, customer: &str| {
        let payload = OrderPlaced {
            order_id: id,
            customer_id: customer.to_owned(),
            lines: vec![],
            payment_method: "card".into(),
        };
        order.event(&topic, &id.to_string(), 1, None, &payload).unwrap()
    };

    // Order A, out of order and repeated: OrderPaid (2), the same record
    // again (a redelivery), OrderPaid (2) again under a new message id (a
    // duplicate publish), then OrderPlaced (1), late.
    let (a, customer_a) = (Uuid::now_v7(), "cust-ordering-a");
    let paid_a = paid(a, customer_a, 2);
    let mut republished_a = paid_a.clone();
    republished_a.envelope.message_id = Uuid::now_v7();
    let placed_a = placed(a, customer_a);
    for message in [&paid_a, &paid_a, &republished_a, &placed_a] {
        publish(&kafka, message).await;
    }
    // Order B: OrderCancelled (3) overtakes OrderPaid (2).
    let (b, customer_b) = (Uuid::now_v7(), "cust-ordering-b");
    let cancelled_b = order
        .event(
            &topic,
            &b.to_string(),
            3,
            None,
            &OrderCancelled { order_id: b, customer_id: customer_b.to_owned(), reason: "test".into() },
        )
        .unwrap();
    let paid_b = paid(b, customer_b, 2);
    for message in [&cancelled_b, &paid_b] {
        publish(&kafka, message).await;
    }
    // Order C, A's twin delivered once and in order: what A must end like.
    let (c, customer_c) = (Uuid::now_v7(), "cust-ordering-c");
    let paid_c = paid(c, customer_c, 2);
    for message in [&placed(c, customer_c), &paid_c] {
        publish(&kafka, message).await;
    }
    println!("events published at {:?}", started.elapsed());

    let applied = |m: &OutboxMessage| (m.envelope.message_id, (m.envelope.message_type.clone(), "applied".to_owned()));
    let stale = |m: &OutboxMessage| (m.envelope.message_id, (m.envelope.message_type.clone(), "stale".to_owned()));
    // What each inbox must hold in the end (OrderPlaced is handled by none of
    // them: acknowledged as ignored, not recorded). B's late OrderPaid is
    // stale everywhere: its cancellation came first.
    let every_inbox = BTreeMap::from([
        applied(&paid_a),
        stale(&republished_a),
        applied(&cancelled_b),
        stale(&paid_b),
        applied(&paid_c),
    ]);
    let expected_order_events: BTreeMap<&str, BTreeMap<Uuid, (String, String)>> =
        CONSUMERS.into_iter().map(|service| (service, every_inbox.clone())).collect();
    // Email also gets shipping's ShipmentScheduled for each shipment (A, C).
    let shipment_notices = 2;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for service in CONSUMERS {
            let got = inbox(system.db(service)).await;
            let order_events: BTreeMap<_, _> =
                got.iter().filter(|(_, (t, _))| t.starts_with("orders.")).map(|(k, v)| (*k, v.clone())).collect();
            let notices = got.values().filter(|(t, _)| t == "shipments.ShipmentScheduled").count();
            let expected_notices = if service == "email" { shipment_notices } else { 0 };
            let ignored =
                counter(&system, service, "messages_consumed_total", &["orders.OrderPlaced", "outcome=\"ignored\""])
                    .await;
            done &= order_events == expected_order_events[service] && notices == expected_notices && ignored == 2.0;
            if Instant::now() > deadline {
                assert_eq!(order_events, expected_order_events[service], "{service}'s inbox of order events");
                assert_eq!(notices, expected_notices, "{service}'s inbox of ShipmentScheduled");
                assert_eq!(ignored, 2.0, "{service}: the two OrderPlaced acknowledged as ignored");
            }
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("every event consumed at {:?}", started.elapsed());
    // Nothing more arrives afterwards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for service in CONSUMERS {
        let got = inbox(system.db(service)).await;
        let expected = expected_order_events[service].len() + if service == "email" { shipment_notices } else { 0 };
        assert_eq!(got.len(), expected, "{service}'s inbox: {got:?}");
        // The redelivered record was seen and recognised, once.
        let duplicates =
            counter(&system, service, "inbox_duplicates_total", &[&format!("consumer=\"{service}\"")]).await;
        assert_eq!(duplicates, 1.0, "{service}: the redelivery of A's OrderPaid counted as a duplicate");
    }

    // A ends exactly like its in-order twin C: one shipment, one
    // confirmation (and the shipment notice), credited once.
    let effects_a = effects_of(&system, a, customer_a).await;
    let effects_c = effects_of(&system, c, customer_c).await;
    assert_eq!(effects_a, effects_c, "A (out of order, repeated) against C (in order, once)");
    assert_eq!(
        effects_a,
        (
            1,
            vec!["order_confirmation".to_owned(), "shipment_notice".to_owned()],
            Some((123, vec![("credit".to_owned(), 123)]))
        ),
    );

    // B: the OrderPaid that arrives after the cancellation is stale for
    // every consumer: nothing credited, no confirmation, nothing shipped.
    assert_eq!(loyalty(&system, customer_b).await, None, "B's customer was never credited");
    let (ledger_b,): (i64,) = sqlx::query_as("SELECT count(*) FROM loyalty_ledger WHERE order_id = $1")
        .bind(b)
        .fetch_one(system.db("loyalty"))
        .await
        .unwrap();
    assert_eq!(ledger_b, 0);
    assert_eq!(email_kinds(&system, b).await, ["cancellation_notice"]);
    assert_eq!(shipments(&system, b).await, 0, "a paid-after-cancelled order ships nothing");

    // One shipment per order in shipping's own tables, one ShipmentScheduled each in its outbox.
    let (shipment_rows, scheduled): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM shipments), (SELECT count(*) FROM outbox WHERE message_type = 'shipments.ShipmentScheduled')",
    )
    .fetch_one(system.db("shipping"))
    .await
    .unwrap();
    assert_eq!((shipment_rows, scheduled), (2, 2));
    // The high-water marks: A at 2 (the late 1 never lowered it), B at 3 where OrderCancelled is consumed.
    let marks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, last_sequence FROM inbox_sequence WHERE consumer = 'loyalty' AND producer = 'order' ORDER BY aggregate_id",
    )
    .fetch_all(system.db("loyalty"))
    .await
    .unwrap();
    let mut expected_marks = vec![(a.to_string(), 2), (b.to_string(), 3), (c.to_string(), 2)];
    expected_marks.sort();
    assert_eq!(marks, expected_marks);
    println!("done in {:?}", started.elapsed());
    system.shutdown().await;
}

// ---- the library level ----

/// Records every event it applies, with its aggregate and sequence.
struct RecordingHandler;

impl MessageHandler for RecordingHandler {
    fn message_types(&self) -> &'static [&'static str] {
        &[OrderPaid::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let e = &message.envelope;
        sqlx::query("INSERT INTO effects (producer, aggregate_id, sequence, message_id) VALUES ($1, $2, $3, $4)")
            .bind(&e.producer)
            .bind(&e.aggregate_id)
            .bind(e.sequence)
            .bind(e.message_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn incoming(producer: &str, aggregate: &str, sequence: i64) -> IncomingMessage {
    let payload =
        OrderPaid { order_id: Uuid::now_v7(), customer_id: "c".into(), amount_cents: 100, payment_id: Uuid::now_v7() };
    let message = MessageFactory::new(producer).event("orders", aggregate, sequence, None, &payload).unwrap();
    IncomingMessage {
        envelope: message.envelope,
        payload: serde_json::to_vec(&message.payload).unwrap(),
        source: MessageSource::Topic { topic: "orders".into(), group: "test".into(), partition: 0, offset: sequence },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_applies_an_aggregates_events_only_forwards() {
    let stack = test_stack().await;
    let database = format!("{}_db", unique_namespace("seqguard"));
    let pool = fresh_database(stack, &database).await;
    messaging::migrations::run_messaging(&pool).await.unwrap();
    sqlx::query("CREATE TABLE effects (producer TEXT, aggregate_id TEXT, sequence BIGINT, message_id UUID)")
        .execute(&pool)
        .await
        .unwrap();
    let processor = MessageProcessor::new(pool.clone(), "test", RecordingHandler, RetryPolicy::default());
    let shutdown = CancellationToken::new();

    let third = incoming("order", "agg-1", 3);
    let second = incoming("order", "agg-1", 2);
    let third_again = incoming("order", "agg-1", 3);
    let fourth = incoming("order", "agg-1", 4);
    let other_aggregate = incoming("order", "agg-2", 1);
    let other_producer = incoming("payment", "agg-1", 2);
    // (message, applied?) in delivery order.
    let deliveries = [
        (&third, true),
        (&second, false),         // older than 3: stale
        (&third, false),          // the same message again: a duplicate
        (&third_again, false),    // 3 again under another id: not above 3, stale
        (&fourth, true),          // newer: applied
        (&other_aggregate, true), // another aggregate has its own mark
        (&other_producer, true),  // so does the same aggregate id of another producer
    ];
    for (message, _) in &deliveries {
        assert_eq!(
            processor.process(message, &shutdown).await,
            Disposition::Acknowledge,
            "every delivery is acknowledged"
        );
    }
    let effects: Vec<(String, String, i64, Uuid)> =
        sqlx::query_as("SELECT producer, aggregate_id, sequence, message_id FROM effects")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(String, String, i64, Uuid)> = deliveries
        .iter()
        .filter(|(_, applied)| *applied)
        .map(|(m, _)| {
            let e = &m.envelope;
            (e.producer.clone(), e.aggregate_id.clone().unwrap(), e.sequence.unwrap(), e.message_id)
        })
        .collect();
    assert_eq!(effects, expected, "only events above their aggregate's last applied sequence take effect");

    let outcomes: BTreeMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>("SELECT message_id, outcome FROM inbox")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected_outcomes: BTreeMap<Uuid, String> = [
        (&third, "applied"),
        (&second, "stale"),
        (&third_again, "stale"),
        (&fourth, "applied"),
        (&other_aggregate, "applied"),
        (&other_producer, "applied"),
    ]
    .into_iter()
    .map(|(m, outcome)| (m.envelope.message_id, outcome.to_owned()))
    .collect();
    assert_eq!(outcomes, expected_outcomes, "the late ones are recorded as stale, the duplicate not again");
    let (mark,): (i64,) = sqlx::query_as(
        "SELECT last_sequence FROM inbox_sequence WHERE consumer = 'test' AND producer = 'order' AND aggregate_id = 'agg-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(mark, 4);
    pool.close().await;
    let _ = stack.drop_database(&database).await;
}
