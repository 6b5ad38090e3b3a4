//! A fresh database with the messaging tables and a namespace of its own on
//! the test stack, for the tests that drive an outbox relay directly; the
//! messages they write, and how to read their order back.

#![allow(clippy::unwrap_used)]

use crate::brokers::Received;
use crate::{fresh_database, test_stack, unique_namespace};
use contracts::catalogue::{OrderLine, ReserveStock};
use messaging::{MessageFactory, OutboxMessage};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub struct OutboxFixture {
    pub database: String,
    /// The database's URL, as a service's DATABASE_URL.
    pub url: String,
    pub pool: PgPool,
    pub topology: contracts::Topology,
    pub amqp_url: String,
    pub brokers: String,
}

impl OutboxFixture {
    pub async fn new(test: &str) -> Self {
        let stack = test_stack().await;
        let namespace = unique_namespace(test);
        let database = format!("{namespace}_db");
        let pool = fresh_database(stack, &database).await;
        messaging::migrations::run_messaging(&pool).await.unwrap();
        let topology = contracts::Topology::new(format!("{namespace}."));
        messaging::kafka::ensure_topics(&stack.kafka_brokers(), &topology.all_topics(), 4).await.unwrap();
        let url = stack.postgres_url(&database);
        Self { database, url, pool, topology, amqp_url: stack.amqp_url(), brokers: stack.kafka_brokers() }
    }

    /// A command to the stock queue and an event on the orders topic for
    /// `aggregate`, carrying `seq` so that order can be checked.
    pub fn messages(&self, aggregate: &str, seq: i64) -> [OutboxMessage; 2] {
        let factory = MessageFactory::new("test");
        let payload = ReserveStock {
            order_id: Uuid::now_v7(),
            lines: vec![OrderLine { sku: format!("SKU-{seq}"), quantity: 1 }],
        };
        [
            factory
                .command(&self.topology.stock_commands(), aggregate, &self.topology.order_replies(), None, &payload)
                .unwrap(),
            factory.event(&self.topology.orders_topic(), aggregate, seq, None, &payload).unwrap(),
        ]
    }

    /// A command to a queue that does not exist: RabbitMQ returns it
    /// unroutable, every time.
    pub fn poison_command(&self, aggregate: &str) -> OutboxMessage {
        let payload =
            ReserveStock { order_id: Uuid::now_v7(), lines: vec![OrderLine { sku: "SKU-0".into(), quantity: 1 }] };
        MessageFactory::new("test").command("no-such-queue", aggregate, "nowhere", None, &payload).unwrap()
    }

    /// `message` is parked after `refusals` refusals and still unsent, the
    /// only row the outbox holds back.
    pub async fn assert_parked(&self, message: &OutboxMessage, refusals: i32) {
        let row: (i32, bool, bool) = sqlx::query_as(
            "SELECT refusals, parked_at IS NOT NULL, sent_at IS NOT NULL FROM outbox WHERE message_id = $1",
        )
        .bind(message.envelope.message_id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(row, (refusals, true, false), "parked after {refusals} refusals, still visible as unsent");
        let backlog = messaging::outbox::OutboxBacklog::read(&self.pool).await.unwrap();
        assert_eq!((backlog.pending, backlog.parked), (0, 1));
    }

    /// Closes the pool and drops the database (and any replication slot on it).
    pub async fn drop_everything(self) {
        self.pool.close().await;
        test_stack().await.drop_database(&self.database).await.unwrap();
    }
}

/// The `seq` a message of [`OutboxFixture::messages`] carries.
pub fn seq_of(r: &Received) -> i64 {
    r.payload["lines"][0]["sku"].as_str().unwrap().trim_start_matches("SKU-").parse().unwrap()
}

/// First arrival of each message, per aggregate, in arrival order.
pub fn per_aggregate(received: &[Received]) -> HashMap<String, Vec<i64>> {
    let mut seen = HashSet::new();
    let mut groups: HashMap<String, Vec<i64>> = HashMap::new();
    for r in received {
        if seen.insert(r.envelope.message_id) {
            groups.entry(r.envelope.correlation_id.clone()).or_default().push(seq_of(r));
        }
    }
    groups
}
