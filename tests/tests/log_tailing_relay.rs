//! The log-tailing outbox relay against the real database and brokers:
//! what it publishes, in what order, what it reports to its slot and when,
//! and how it gets past a refused row, an idle outbox, a second instance
//! and a slot that did not see everything.

#![allow(clippy::unwrap_used)]

use health::Readiness;
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::kafka::KafkaPublisher;
use messaging::log_tailing::{LogTailingConfig, LogTailingRelay, slot};
use messaging::retry::Backoff;
use messaging::{Outbox, OutboxMessage};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use system_tests::brokers::{Received, drain_queue, drain_topic};
use system_tests::outbox_fixture::{OutboxFixture, per_aggregate};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The fixture, and the log-tailing relay on it.
struct Setup(OutboxFixture);

impl std::ops::Deref for Setup {
    type Target = OutboxFixture;
    fn deref(&self) -> &OutboxFixture {
        &self.0
    }
}

async fn setup(test: &str) -> Setup {
    Setup(OutboxFixture::new(test).await)
}

/// A running relay, stopped (its batch finished) by [`Running::stop`].
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("the relay stops").unwrap();
    }
}

impl Setup {
    fn slot(&self) -> String {
        slot::slot_name_for(&self.database)
    }

    fn config(&self) -> LogTailingConfig {
        LogTailingConfig {
            heartbeat_interval: Duration::from_millis(300),
            standby_interval: Duration::from_millis(200),
            error_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(300)),
            report_before_confirm: false,
            ..LogTailingConfig::for_slot(self.slot())
        }
    }

    fn start(&self, config: LogTailingConfig) -> Running {
        self.start_with_amqp(config, &self.amqp_url)
    }

    /// Waits until a relay streams the slot (so it exists and has a position).
    async fn wait_streaming(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let active: Option<bool> =
                sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
                    .bind(self.slot())
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap();
            if active == Some(true) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "no relay streams {} after 30 s", self.slot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_with_amqp(&self, config: LogTailingConfig, amqp_url: &str) -> Running {
        let amqp =
            AmqpPublisher::new(AmqpConnector::new(amqp_url, "test-tailing", Readiness::new()), self.topology.clone());
        let amqp = Arc::new(amqp);
        let kafka = Arc::new(KafkaPublisher::new(&self.brokers, "test-tailing").unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(amqp.clone().keep_connected(shutdown.clone()));
        let url = self.url.clone();
        let relay = LogTailingRelay::new(self.pool.clone(), &url, Some(amqp), Some(kafka), config).unwrap();
        Running { shutdown: shutdown.clone(), task: tokio::spawn(relay.run(shutdown)) }
    }

    async fn write(&self, messages: &[OutboxMessage]) {
        let mut tx = self.pool.begin().await.unwrap();
        Outbox::add_all(&mut tx, messages).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn count(&self, condition: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM outbox WHERE {condition}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_sent(&self, expected: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let sent = self.count("sent_at IS NOT NULL").await;
            if sent >= expected {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sent} of {expected} rows sent after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The slot's reported position, as an LSN number.
    async fn confirmed_flush(&self) -> u64 {
        let lsn: String =
            sqlx::query_scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
                .bind(self.slot())
                .fetch_one(&self.pool)
                .await
                .unwrap();
        pgwire_replication::Lsn::parse(&lsn).unwrap().as_u64()
    }

    async fn current_wal(&self) -> u64 {
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(&self.pool).await.unwrap();
        pgwire_replication::Lsn::parse(&lsn).unwrap().as_u64()
    }

    async fn drop_everything(self) {
        self.0.drop_everything().await
    }
}

async fn received(s: &Setup) -> (Vec<Received>, Vec<Received>) {
    let queued =
        drain_queue(&s.amqp_url, &s.topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(30)).await;
    let logged =
        drain_topic(&s.brokers, &s.topology.orders_topic(), Duration::from_secs(3), Duration::from_secs(30)).await;
    (queued, logged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_go_out_in_commit_order_and_rolled_back_ones_never() {
    let s = setup("tailorder").await;
    let relay = s.start(s.config());
    s.wait_streaming().await;
    let mut tx = s.pool.begin().await.unwrap();
    let rolled_back: Vec<Uuid> = s.messages("agg-rolled-back", 1).iter().map(|m| m.envelope.message_id).collect();
    Outbox::add_all(&mut tx, &s.messages("agg-rolled-back", 1)).await.unwrap();
    tx.rollback().await.unwrap();
    const AGGREGATES: usize = 8;
    const PER_AGGREGATE: i64 = 20;
    for seq in 1..=PER_AGGREGATE {
        let batch: Vec<OutboxMessage> = (0..AGGREGATES).flat_map(|a| s.messages(&format!("agg-{a}"), seq)).collect();
        s.write(&batch).await;
    }
    let expected = AGGREGATES as i64 * PER_AGGREGATE * 2;
    s.wait_sent(expected, Duration::from_secs(60)).await;
    relay.stop().await;

    let (queued, logged) = received(&s).await;
    assert!(queued.iter().chain(&logged).all(|r| !rolled_back.contains(&r.envelope.message_id)));
    for (name, received) in [("queue", &queued), ("topic", &logged)] {
        let groups = per_aggregate(received);
        assert_eq!(groups.len(), AGGREGATES, "{name}: every aggregate arrived");
        for (aggregate, seqs) in groups {
            assert_eq!(seqs, (1..=PER_AGGREGATE).collect::<Vec<_>>(), "{name}: {aggregate} out of order or incomplete");
        }
    }
    assert!(logged.iter().all(|r| r.key.as_deref() == Some(r.envelope.correlation_id.as_str())), "keyed by aggregate");
    // Reported: after a clean stop, nothing already published comes again
    // (the queue was emptied above; the topic is read from its start).
    let relay = s.start(s.config());
    s.wait_streaming().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.stop().await;
    let (again_queued, again_logged) = received(&s).await;
    assert_eq!((again_queued.len(), again_logged.len()), (0, logged.len()), "published again after a clean restart");
    s.drop_everything().await;
}

/// The server lets one session at a time stream a slot: a second instance
/// stands by, takes over when the first stops, and each aggregate's
/// messages still arrive complete and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_stands_by_and_takes_over_in_order() {
    let s = setup("tailtwo").await;
    let first = s.start(s.config());
    s.wait_streaming().await;
    let second = s.start(s.config());
    const AGGREGATES: usize = 6;
    const PER_AGGREGATE: i64 = 30;
    let half = PER_AGGREGATE / 2;
    for seq in 1..=half {
        s.write(&(0..AGGREGATES).flat_map(|a| s.messages(&format!("agg-{a}"), seq)).collect::<Vec<_>>()).await;
    }
    // The stand-by's attempts come and go; one session streams at a time.
    for _ in 0..10 {
        let streaming: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
        )
        .bind(format!("outbox-relay:{}", s.slot()))
        .fetch_one(&s.pool)
        .await
        .unwrap();
        assert!(streaming <= 1, "{streaming} sessions stream one slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop().await;
    for seq in half + 1..=PER_AGGREGATE {
        s.write(&(0..AGGREGATES).flat_map(|a| s.messages(&format!("agg-{a}"), seq)).collect::<Vec<_>>()).await;
    }
    s.wait_sent(AGGREGATES as i64 * PER_AGGREGATE * 2, Duration::from_secs(60)).await;
    second.stop().await;
    let (queued, logged) = received(&s).await;
    for (name, received) in [("queue", &queued), ("topic", &logged)] {
        for (aggregate, seqs) in per_aggregate(received) {
            assert_eq!(seqs, (1..=PER_AGGREGATE).collect::<Vec<_>>(), "{name}: {aggregate} out of order or incomplete");
        }
    }
    s.drop_everything().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_broker_keeps_refusing_is_parked_and_the_log_moves_on() {
    let s = setup("tailpark").await;
    let aggregate = "agg-poison";
    let poison = s.poison_command(aggregate);
    let behind = s.messages(aggregate, 1);
    let mut all = vec![poison.clone()];
    all.extend(behind.iter().cloned());
    let relay = s.start(LogTailingConfig { park_after_refusals: 3, ..s.config() });
    s.wait_streaming().await;
    s.write(&all).await;
    s.wait_sent(2, Duration::from_secs(30)).await;
    relay.stop().await;
    s.assert_parked(&poison, 3).await;
    let (queued, _) = received(&s).await;
    let distinct: HashSet<Uuid> = queued.iter().map(|r| r.envelope.message_id).collect();
    assert_eq!(distinct, HashSet::from([behind[0].envelope.message_id]));

    // Handed back (the cause fixed: its queue now exists), as an operator
    // does; the log will not deliver it again, the sweep at start does.
    sqlx::query("UPDATE outbox SET parked_at = NULL, refusals = 0, destination = $2 WHERE message_id = $1")
        .bind(poison.envelope.message_id)
        .bind(s.topology.stock_commands())
        .execute(&s.pool)
        .await
        .unwrap();
    let relay = s.start(s.config());
    s.wait_sent(3, Duration::from_secs(30)).await;
    relay.stop().await;
    let (queued, _) = received(&s).await;
    assert_eq!(queued.iter().map(|r| r.envelope.message_id).collect::<Vec<_>>(), [poison.envelope.message_id]);
    s.drop_everything().await;
}

/// The guarantee itself, and its negative control: with the broker
/// unreachable, the safe relay's slot stays before the waiting messages,
/// so they go out once the broker is back, even after a restart; the
/// unsafe one (reporting on receipt, as Eventuate's CDC does) moves the
/// slot past them, and a restart never publishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_moves_past_a_message_only_once_the_broker_confirmed_it() {
    for report_before_confirm in [false, true] {
        let s = setup(if report_before_confirm { "tailunsafe" } else { "tailsafe" }).await;
        // Create the slot, then cut the broker off.
        let creator = s.start(s.config());
        s.wait_streaming().await;
        creator.stop().await;
        let config = LogTailingConfig { report_before_confirm, ..s.config() };
        let dead_broker = "amqp://guest:guest@127.0.0.1:1/%2f";
        let cut_off = s.start_with_amqp(config.clone(), dead_broker);
        s.wait_streaming().await;
        let mut commands = s.messages("agg-waiting", 1);
        commands[1] = commands[0].clone();
        commands[1].envelope.message_id = Uuid::now_v7();
        // The commit ends somewhere between these two positions (other
        // tests write WAL meanwhile).
        let before = s.current_wal().await;
        s.write(&commands).await;
        let after = s.current_wal().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let reported = s.confirmed_flush().await;
        cut_off.stop().await;
        if report_before_confirm {
            assert!(
                reported > before,
                "the unsafe relay did not report the unconfirmed messages ({reported} <= {before})"
            );
        } else {
            assert!(reported < after, "the slot moved past unconfirmed messages ({reported} >= {after})");
        }
        // The broker is back; the relay restarts.
        let relay = s.start(config);
        s.wait_streaming().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        relay.stop().await;
        let (queued, _) = received(&s).await;
        let delivered: HashSet<Uuid> = queued.iter().map(|r| r.envelope.message_id).collect();
        if report_before_confirm {
            assert!(delivered.is_empty(), "NEGATIVE CONTROL: the messages should be lost, got {delivered:?}");
            assert_eq!(s.count("sent_at IS NULL").await, 2, "lost: still unsent, and the slot will not deliver them");
        } else {
            assert_eq!(delivered.len(), 2, "every waiting message, once the broker is back");
            assert_eq!(s.count("sent_at IS NULL").await, 0);
        }
        s.drop_everything().await;
    }
}

/// An outbox with nothing to publish still lets its slot move on, so the
/// slot does not hold back the WAL that everything else writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_moves_on_with_the_heartbeat() {
    let s = setup("tailidle").await;
    let relay = s.start(s.config());
    s.wait_streaming().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = s.confirmed_flush().await;
    // WAL that is not the outbox's: another table of the same database.
    sqlx::query("CREATE TABLE unrelated (n int)").execute(&s.pool).await.unwrap();
    sqlx::query("INSERT INTO unrelated SELECT generate_series(1, 10000)").execute(&s.pool).await.unwrap();
    let written = s.current_wal().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.confirmed_flush().await < written {
        assert!(tokio::time::Instant::now() < deadline, "the idle slot stayed at {before}, behind {written}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relay.stop().await;
    s.drop_everything().await;
}

/// Rows committed before the slot existed (a service switched from polling,
/// or whose slot was lost) are never in its log: the sweep at start
/// publishes them, and what follows comes from the log, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_the_slot_existed_are_swept_then_the_log_follows() {
    let s = setup("tailsweep").await;
    for seq in 1..=5 {
        s.write(&s.messages("agg-before", seq)).await;
    }
    let relay = s.start(s.config());
    s.wait_sent(10, Duration::from_secs(30)).await;
    for seq in 6..=10 {
        s.write(&s.messages("agg-before", seq)).await;
    }
    s.wait_sent(20, Duration::from_secs(30)).await;
    relay.stop().await;
    let (queued, logged) = received(&s).await;
    for received in [&queued, &logged] {
        assert_eq!(per_aggregate(received)["agg-before"], (1..=10).collect::<Vec<_>>());
    }
    s.drop_everything().await;
}

/// The WAL sender hands a transaction over once its commit is in the log,
/// a moment before other sessions can see it: marking its rows sent right
/// then finds nothing. Found in CI (a reply published, consumed, and its
/// row left unsent for good). The relay waits for the rows to be visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_not_yet_visible_are_marked_sent_once_they_are() {
    let s = setup("tailvisible").await;
    let mut tx = s.pool.begin().await.unwrap();
    Outbox::add_all(&mut tx, &s.messages("agg-late", 1)).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(&mut *tx).await.unwrap();
    let pool = s.pool.clone();
    let marking = {
        let ids = ids.clone();
        tokio::spawn(async move { messaging::log_tailing::published_rows::mark_sent(&pool, &ids).await })
    };
    // Still in progress for everyone else while the relay marks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marking.is_finished(), "marking gave up on rows it could not see yet");
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), marking).await.unwrap().unwrap().unwrap();
    assert_eq!(s.count("sent_at IS NULL").await, 0, "rows committed a moment later were left unsent");
    s.drop_everything().await;
}
