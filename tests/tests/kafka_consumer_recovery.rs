//! A Kafka consumer started while the broker is being killed and restarted
//! must catch up once the broker is back: the reproduction of a consumer
//! seen stuck on "1/1 brokers are down" in CI while Tansu served every
//! other client, and the proof that such a consumer replaces itself.
//!
//! Runs on the chaos stack (it kills its Kafka); cargo runs test binaries
//! one after another, so nothing else uses that stack meanwhile.

#![allow(clippy::unwrap_used)]

use chaos_proxy::ChaosProxy;
use contracts::catalogue::{OrderLine, ReserveStock};
use health::Readiness;
use messaging::MessageFactory;
use messaging::consumer::{MessageProcessor, RetryPolicy};
use messaging::kafka::KafkaPublisher;
use messaging::kafka_consumer::{Assignment, KafkaConsumer};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::effects::{self, ReserveStockRecorder};
use system_tests::{chaos_stack, fresh_database, test_stack, unique_namespace};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use xtask::{Component, Stack};

struct Setup {
    pool: PgPool,
    brokers: String,
    topic: String,
    group: String,
    publisher: Arc<KafkaPublisher>,
}

async fn setup(stack: &'static Stack, test: &str) -> Setup {
    stack.start_infra().await.unwrap();
    setup_with(stack, &stack.kafka_brokers(), test).await
}

/// A database on `stack`, the topic and publisher on `brokers`.
async fn setup_with(stack: &'static Stack, brokers: &str, test: &str) -> Setup {
    let s = setup_without_topic(stack, brokers, test).await;
    messaging::kafka::ensure_topics(brokers, std::slice::from_ref(&s.topic), PARTITIONS).await.unwrap();
    s
}

/// The topics' partitions.
const PARTITIONS: i32 = 4;

/// [`setup_with`] but for the topic, which the caller creates.
async fn setup_without_topic(stack: &'static Stack, brokers: &str, test: &str) -> Setup {
    let namespace = unique_namespace(test);
    let pool = fresh_database(stack, &format!("{namespace}_db")).await;
    messaging::migrations::run_messaging(&pool).await.unwrap();
    effects::create_table(&pool).await;
    let topology = contracts::Topology::new(format!("{namespace}."));
    let publisher = Arc::new(KafkaPublisher::new(brokers, "test-recovery").unwrap());
    Setup {
        pool,
        brokers: brokers.to_owned(),
        topic: topology.orders_topic(),
        group: topology.consumer_group("recovery"),
        publisher,
    }
}

impl Setup {
    fn consumer(&self, replace_after: Option<Duration>, readiness: Readiness) -> KafkaConsumer<ReserveStockRecorder> {
        self.consumer_in(Assignment::AllPartitions, replace_after, readiness)
    }

    fn consumer_in(
        &self,
        assignment: Assignment,
        replace_after: Option<Duration>,
        readiness: Readiness,
    ) -> KafkaConsumer<ReserveStockRecorder> {
        let processor =
            MessageProcessor::new(self.pool.clone(), "test-recovery", ReserveStockRecorder, RetryPolicy::default());
        KafkaConsumer::new(
            &self.brokers,
            &self.group,
            vec![self.topic.clone()],
            processor,
            self.publisher.clone(),
            readiness,
        )
        .with_assignment(assignment)
        // As the services run it: static membership, so a replacing
        // consumer takes the place of the one it replaces at once.
        .with_group_instance_id(Some(format!("{}-instance", self.group)))
        .with_replacement_after(replace_after)
        .with_debug(std::env::var("KAFKA_DEBUG").ok())
    }

    /// Publishes one message for a new order, retrying until the broker confirms it.
    async fn publish(&self) -> Uuid {
        let order_id = Uuid::now_v7();
        let payload = ReserveStock { order_id, lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 1 }] };
        let message = MessageFactory::new("test").event(&self.topic, &order_id.to_string(), 1, None, &payload).unwrap();
        let bytes = serde_json::to_vec(&message.payload).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = async {
                self.publisher
                    .send(&self.topic, &order_id.to_string(), &message.envelope, &bytes, &[])
                    .await?
                    .delivered()
                    .await
            };
            match sent.await {
                Ok(_) => return order_id,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("publish failed ({e}); again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the broker took no record for a minute: {e}"),
            }
        }
    }

    async fn effects_of(&self, order_id: Uuid) -> i64 {
        effects::of_order(&self.pool, order_id).await
    }

    /// How long until `order_id`'s message was applied, `None` if not within `bound`.
    async fn applied_within(&self, order_id: Uuid, bound: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < bound {
            if self.effects_of(order_id).await > 0 {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

/// When the consumer starts: `offset_ms` after the broker's kill
/// (negative: before it), or after the broker was started again.
#[derive(Debug, Clone, Copy)]
enum ConsumerStart {
    AroundKill(i64),
    AfterRestart(u64),
}

/// Kills the broker, starts a consumer at `start`, restarts the broker and
/// publishes: how long until the consumer applied the message, `None` if
/// not within `bound`.
async fn consumer_started_around_a_kill(
    s: &Setup,
    stack: &Stack,
    start: ConsumerStart,
    replace_after: Option<Duration>,
    bound: Duration,
) -> Option<Duration> {
    let shutdown = CancellationToken::new();
    let start_consumer = || tokio::spawn(s.consumer(replace_after, Readiness::new()).run(shutdown.clone()));
    let mut consumer = None;
    if let ConsumerStart::AroundKill(offset_ms) = start
        && offset_ms < 0
    {
        consumer = Some(start_consumer());
        tokio::time::sleep(Duration::from_millis(offset_ms.unsigned_abs())).await;
    }
    assert!(stack.kill_component(Component::Kafka).await.unwrap(), "Kafka was not running");
    if let ConsumerStart::AroundKill(offset_ms) = start
        && offset_ms >= 0
    {
        tokio::time::sleep(Duration::from_millis(offset_ms.unsigned_abs())).await;
        consumer = Some(start_consumer());
    }
    stack.start_component(Component::Kafka).await.unwrap();
    if let ConsumerStart::AfterRestart(offset_ms) = start {
        tokio::time::sleep(Duration::from_millis(offset_ms)).await;
        consumer = Some(start_consumer());
    }
    stack.wait_component_ready(Component::Kafka).await.unwrap();
    let order_id = s.publish().await;
    let applied = s.applied_within(order_id, bound).await;
    shutdown.cancel();
    if let Some(consumer) = consumer {
        let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    }
    applied
}

/// Offsets (ms) of the consumer's start around the kill, from "its first
/// metadata request in flight when the broker dies" to "created while the
/// broker is down".
const STARTS: [ConsumerStart; 10] = [
    ConsumerStart::AroundKill(-150),
    ConsumerStart::AroundKill(-20),
    ConsumerStart::AroundKill(0),
    ConsumerStart::AroundKill(30),
    ConsumerStart::AroundKill(200),
    ConsumerStart::AfterRestart(0),
    ConsumerStart::AfterRestart(5),
    ConsumerStart::AfterRestart(20),
    ConsumerStart::AfterRestart(60),
    ConsumerStart::AfterRestart(150),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_around_a_broker_kill_catches_up() {
    let stack = chaos_stack().await;
    let s = setup(stack, "kcrecover").await;
    let rounds: usize = std::env::var("RECOVERY_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let replace_after = match std::env::var("RECOVERY_REPLACE_AFTER_SECS").ok().and_then(|r| r.parse().ok()) {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => Some(Duration::from_secs(20)),
    };
    let bound = Duration::from_secs(75);
    let mut stuck = Vec::new();
    for round in 0..rounds {
        for start in STARTS {
            let took = consumer_started_around_a_kill(&s, stack, start, replace_after, bound).await;
            println!("round {round} {start:?}: {took:?}");
            if took.is_none() {
                stuck.push((round, start));
            }
        }
    }
    stack.start_infra().await.unwrap();
    assert!(stuck.is_empty(), "consumers that never caught up (round, start): {stuck:?}");
}

/// The consumer's logs (and librdkafka's, with `KAFKA_DEBUG=cgrp,...`)
/// in the test's output when `RUST_LOG` is set: shown for a failed test.
fn logs_with_rust_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        // Another test of this binary may have installed it already.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// How one stranded consumer fared: when it applied the message published
/// after the heal (from the heal), and what readiness said meanwhile.
struct Stranded {
    caught_up: Option<Duration>,
    readiness_details: Vec<String>,
    effects: Vec<i64>,
    /// How many times the consumer replaced itself.
    replacements: u64,
}

/// A consumer whose connections a silent partition stranded (every byte
/// dropped, nothing closed: librdkafka waits for its requests until
/// `socket.timeout.ms`, 60 s), after the network healed: how long until it
/// applied a message published after the heal, within `bound`, and then
/// (waiting up to librdkafka's own recovery) how often each message was
/// applied.
async fn consumer_after_a_silent_partition(
    assignment: Assignment,
    replace_after: Option<Duration>,
    bound: Duration,
) -> Stranded {
    // Both tests use the one Kafka behind a proxy.
    static OWN_KAFKA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _alone = OWN_KAFKA.lock().await;
    logs_with_rust_log();
    let stack = test_stack().await;
    stack.start_infra().await.unwrap();
    let kafka_stack = Stack::test_kafka_behind_proxy(xtask::repo_root());
    let proxy = ChaosProxy::start(SocketAddr::from(([127, 0, 0, 1], kafka_stack.ports().kafka))).await.unwrap();
    // Kafka clients connect where the broker says: it must advertise the proxy.
    let kafka_stack = kafka_stack.with_kafka_advertised_port(proxy.port());
    kafka_stack.kafka().restart_empty().await.unwrap();
    let brokers = format!("127.0.0.1:{}", proxy.port());
    let s = setup_with(stack, &brokers, "kcpartition").await;
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    let consumer = s.consumer_in(assignment, replace_after, readiness.clone());
    let replacements = consumer.replacements();
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    let before = s.publish().await;
    assert!(s.applied_within(before, Duration::from_secs(30)).await.is_some(), "nothing consumed before the cut");

    proxy.partition();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let healed = Instant::now();
    // A new publisher: the old one's connections are stranded too.
    let s = Setup { publisher: Arc::new(KafkaPublisher::new(&brokers, "test-recovery-2").unwrap()), ..s };
    let after = s.publish().await;
    let mut readiness_details = Vec::new();
    let mut caught_up = None;
    while healed.elapsed() < bound {
        if let Some(detail) =
            readiness.snapshot().get(messaging::kafka_consumer::CONSUMER_COMPONENT).and_then(|c| c.detail.clone())
            && readiness_details.last() != Some(&detail)
        {
            readiness_details.push(detail);
        }
        if s.effects_of(after).await > 0 {
            caught_up = Some(healed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // However long it took, the message must arrive, once: librdkafka gives
    // up on the stranded connection at its 60 s request timeout.
    let eventually = s.applied_within(after, Duration::from_secs(90)).await;
    assert!(
        eventually.is_some(),
        "the message published after the heal never arrived; readiness said {readiness_details:?}; {} replacement(s), the last because {:?}",
        replacements.count(),
        replacements.last_reason()
    );
    // Redeliveries, if any, have had their offset-commit interval to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let effects = vec![s.effects_of(before).await, s.effects_of(after).await];
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    if let Err(e) = kafka_stack.kafka().kill().await {
        eprintln!("stopping the test's own Kafka: {e:#}");
    }
    Stranded { caught_up, readiness_details, effects, replacements: replacements.count() }
}

/// The replacement bound these tests use (the services default to 30 s).
const TEST_REPLACE_AFTER: Duration = Duration::from_secs(10);

/// From the heal until a replacing consumer must have caught up: its bound,
/// plus the readiness probe's period and timeout (2 s each, which notice
/// the errors), librdkafka's reconnect backoff (at most 2 s) and a new
/// consumer's start (metadata, assignment, first fetch: about a second),
/// with room to spare. Well below the 60 s a stranded librdkafka waits.
const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stranded_by_a_silent_partition_replaces_itself_and_catches_up() {
    stranded_consumer_replaces_itself(Assignment::AllPartitions).await;
}

/// The same in the deployment's mode: consumer groups, static membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_stranded_by_a_silent_partition_replaces_itself_and_catches_up() {
    stranded_consumer_replaces_itself(Assignment::Group).await;
}

async fn stranded_consumer_replaces_itself(assignment: Assignment) {
    // A group member may first wait for the coordinator to give up on the
    // member it replaces (Tansu did, seen: 23 s after the heal).
    let within = match assignment {
        Assignment::AllPartitions => CAUGHT_UP_WITHIN,
        Assignment::Group => CAUGHT_UP_WITHIN + messaging::kafka_consumer::SESSION_TIMEOUT,
    };
    let run = consumer_after_a_silent_partition(assignment, Some(TEST_REPLACE_AFTER), within).await;
    println!(
        "{assignment:?} with replacement after {TEST_REPLACE_AFTER:?}: caught up {:?} after the heal; readiness said {:?}",
        run.caught_up, run.readiness_details
    );
    assert!(run.caught_up.is_some(), "not caught up within {within:?} of the heal: {:?}", run.readiness_details);
    assert_eq!(run.effects, [1, 1], "each message applied exactly once");
    assert!(run.replacements >= 1, "caught up without a replacement: the test would not notice a broken one");
    // The probe reports the stall for the whole bound; the replacement's own
    // reason shows only until the new consumer's first probe, too briefly
    // for polling to be sure to see it.
    assert!(!run.readiness_details.is_empty(), "readiness never reported the stuck consumer");
}

/// The negative control: the same partition, replacement off. The consumer
/// stays on its stranded connection past the bound the replacing one met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_replacement_a_stranded_consumer_stays_stuck() {
    let run = consumer_after_a_silent_partition(Assignment::AllPartitions, None, CAUGHT_UP_WITHIN).await;
    println!(
        "without replacement: caught up {:?} after the heal; readiness said {:?}",
        run.caught_up, run.readiness_details
    );
    assert_eq!(run.caught_up, None, "caught up without being replaced: the test would not notice a broken replacement");
    assert_eq!(run.replacements, 0, "replaced although replacement was off");
    assert!(!run.readiness_details.is_empty(), "readiness never reported the stuck consumer");
    assert_eq!(run.effects, [1, 1], "each message applied exactly once");
}

/// How often the tests below have the consumer commit unchanged offsets again.
const TEST_REASSERT_EVERY: Duration = Duration::from_secs(2);

/// How one consumer fared after its group's offsets were set back by another
/// client (as a lost or late, stale commit leaves them): records behind at
/// the broker right after, and `wait` later.
async fn after_a_stale_commit(reassert: Option<Duration>, wait: Duration) -> (u64, u64) {
    let stack = test_stack().await;
    let s = setup(stack, "kcreassert").await;
    let shutdown = CancellationToken::new();
    let consumer = s.consumer(Some(TEST_REPLACE_AFTER), Readiness::new()).with_offset_reassertion(reassert);
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let orders = [s.publish().await, s.publish().await, s.publish().await];
    for order in orders {
        assert!(s.applied_within(order, Duration::from_secs(30)).await.is_some(), "{order} never applied");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while behind(&s).await > 0 {
        assert!(Instant::now() < deadline, "the consumer's own commits never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rewind_group(&s).await;
    let set_back = behind(&s).await;
    tokio::time::sleep(wait).await;
    let later = behind(&s).await;
    shutdown.cancel();
    running.await.unwrap();
    (set_back, later)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_set_back_by_a_stale_commit_are_committed_again() {
    let (set_back, later) = after_a_stale_commit(Some(TEST_REASSERT_EVERY), TEST_REASSERT_EVERY * 4).await;
    println!("set back by {set_back} record(s); {later} behind {:?} later", TEST_REASSERT_EVERY * 4);
    assert_eq!(set_back, 3, "the stale commit did not set the group back: the test proves nothing");
    assert_eq!(later, 0, "the consumer left its group's offsets where a stale commit put them");
}

/// The negative control: the same stale commit, re-assertion off. The group
/// stays behind although every record was handled, as in the CI run that
/// found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_reassertion_a_stale_commit_stays() {
    let (set_back, later) = after_a_stale_commit(None, TEST_REASSERT_EVERY * 4).await;
    println!(
        "without re-assertion: set back by {set_back} record(s); {later} behind {:?} later",
        TEST_REASSERT_EVERY * 4
    );
    assert_eq!(set_back, 3, "the stale commit did not set the group back: the test proves nothing");
    assert_eq!(later, 3, "caught up without re-assertion: the test would not notice it broken");
}

/// A client of the group that never joins it (the services' consumers take
/// partitions directly too, so the broker takes its commits).
fn group_client(s: &Setup) -> rdkafka::consumer::BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// Records of the topic past the group's committed offsets (all of a
/// partition it never committed).
async fn behind(s: &Setup) -> u64 {
    let (client, topic) = (group_client(s), s.topic.clone());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let timeout = Duration::from_secs(10);
        let metadata = client.fetch_metadata(Some(&topic), timeout).unwrap();
        let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut wanted = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            wanted.add_partition(&topic, *p);
        }
        let committed = client.committed_offsets(wanted, timeout).unwrap();
        partitions
            .iter()
            .map(|p| {
                let (low, high) = client.fetch_watermarks(&topic, *p, timeout).unwrap();
                let start = match committed.find_partition(&topic, *p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) => o,
                    _ => low,
                };
                u64::try_from(high - start).unwrap_or(0)
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Commits offset 0 on every partition of the topic for the group: what an
/// old commit arriving late, or the last one lost, leaves at the broker.
async fn rewind_group(s: &Setup) {
    let (client, topic) = (group_client(s), s.topic.clone());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut rewound = rdkafka::TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            rewound.add_partition_offset(&topic, p.id(), rdkafka::Offset::Offset(0)).unwrap();
        }
        client.commit(&rewound, rdkafka::consumer::CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
}

/// A group member on librdkafka's mock cluster (in process; it can inject a
/// broker's error answers, which Tansu cannot be made to give), consuming.
struct MockedMember {
    s: Setup,
    replacements: messaging::kafka_consumer::Replacements,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

async fn mocked_member(
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    test: &str,
    replace_after: Option<Duration>,
) -> MockedMember {
    let stack = test_stack().await;
    stack.start_infra().await.unwrap();
    logs_with_rust_log();
    // The mock cluster has no CreateTopics.
    let s = setup_without_topic(stack, &mock.bootstrap_servers(), test).await;
    mock.create_topic(&s.topic, PARTITIONS, 1).unwrap();
    let consumer = s.consumer_in(Assignment::Group, replace_after, Readiness::new());
    let replacements = consumer.replacements();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    MockedMember { s, replacements, shutdown, running }
}

impl MockedMember {
    /// Waits until `done` holds or `bound` passes.
    async fn until(&self, bound: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while start.elapsed() < bound && !done(self) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.running).await;
    }
}

/// A static member the coordinator fences (another consumer came with its
/// `group.instance.id`: a replica started twice, or a replaced consumer's
/// JoinGroup sent late) gets a fatal error: librdkafka will never fetch for
/// it again, while its metadata requests are still answered. Tansu does not
/// fence (it hands a second consumer the first one's member id), so the
/// mock cluster answers a heartbeat with FENCED_INSTANCE_ID.
async fn fenced_member(replace_after: Option<Duration>) -> (Option<Duration>, u64, Option<String>) {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    let mock = MockCluster::new(1).unwrap();
    let member = mocked_member(&mock, "kcfenced", replace_after).await;
    let before = member.s.publish().await;
    assert!(member.s.applied_within(before, Duration::from_secs(30)).await.is_some(), "nothing consumed before");
    mock.request_errors(RDKafkaApiKey::Heartbeat, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID]);
    let fenced = Instant::now();
    member.until(Duration::from_secs(15), |m| m.replacements.count() > 0).await;
    let after = member.s.publish().await;
    let applied = member.s.applied_within(after, Duration::from_secs(30)).await.map(|_| fenced.elapsed());
    let (replacements, reason) = (member.replacements.count(), member.replacements.last_reason());
    member.stop().await;
    (applied, replacements, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_group_member_replaces_itself_and_catches_up() {
    let (applied, replacements, reason) = fenced_member(Some(TEST_REPLACE_AFTER)).await;
    println!("fenced: applied {applied:?} after the fence, {replacements} replacement(s), the last because {reason:?}");
    assert!(replacements >= 1, "a fenced member was not replaced");
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("FencedInstanceId")),
        "replaced for another reason: {reason:?}"
    );
    assert!(applied.is_some(), "the replacing member never consumed");
}

/// The negative control: the same fence, replacement off. The member stays
/// fenced, consuming nothing, though the brokers answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_replacement_a_fenced_member_consumes_nothing() {
    let (applied, replacements, _) = fenced_member(None).await;
    println!("fenced, no replacement: applied {applied:?}, {replacements} replacement(s)");
    assert_eq!(applied, None, "a fenced member consumed: the test would not notice a broken replacement");
    assert_eq!(replacements, 0);
}

/// A member whose group never lets it in (every JoinGroup refused, as a
/// wedged coordinator would) hears no error the consumer sees, and its
/// metadata requests are answered: only its group state tells. It is
/// replaced after [`messaging::kafka_consumer::GROUP_SETTLE_BOUND`], saying
/// where it was, and consumes once the group lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_that_never_settles_replaces_itself() {
    use messaging::kafka_consumer::GROUP_SETTLE_BOUND;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    let mock = MockCluster::new(1).unwrap();
    // More refusals than librdkafka's join retries use up in the bound.
    let refusals = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 100_000];
    mock.request_errors(RDKafkaApiKey::JoinGroup, &refusals);
    let member = mocked_member(&mock, "kcunsettled", Some(TEST_REPLACE_AFTER)).await;
    let started = Instant::now();
    member.until(GROUP_SETTLE_BOUND + Duration::from_secs(15), |m| m.replacements.count() > 0).await;
    let replaced_after = started.elapsed();
    mock.clear_request_errors(RDKafkaApiKey::JoinGroup);
    let order = member.s.publish().await;
    let applied = member.s.applied_within(order, Duration::from_secs(30)).await;
    let (replacements, reason) = (member.replacements.count(), member.replacements.last_reason());
    member.stop().await;
    println!("never settled: replaced after {replaced_after:?} because {reason:?}; then applied after {applied:?}");
    assert!(replacements >= 1, "an unsettled member was not replaced");
    assert!(replaced_after >= GROUP_SETTLE_BOUND, "replaced before the bound: {replaced_after:?}");
    assert!(
        // Between refused joins librdkafka is back in join state `init`.
        reason.as_deref().is_some_and(|r| r.contains("not settled in its consumer group")),
        "replaced for another reason: {reason:?}"
    );
    assert!(applied.is_some(), "never consumed once the group let it in");
}
