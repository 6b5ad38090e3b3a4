//! The outbox relay: publishes committed outbox rows and marks them sent only
//! after the broker confirmed them.
//!
//! Ordering: rows are spread over [`LANES`](crate::outbox::LANES) by a hash of
//! their aggregate. A relay takes a lane with a transaction-scoped advisory
//! lock, so with several relays (several instances of a service) each lane is
//! published by one of them at a time, in id order. One transaction takes a
//! group of lanes at once (fewer transactions per message: measured in
//! docs/benchmarks.md), and each lane's confirmed prefix is marked: a
//! refused row stops its own lane only. Within one aggregate, id
//! order is commit order because services write an aggregate's messages while
//! holding its row lock. Only the confirmed prefix of a batch is marked sent:
//! after a failure, the rest is published again, never overtaken. A batch
//! goes out on one channel or producer (pinned, see `outbox_publisher`), so
//! the broker holds a prefix of it.
//!
//! A crash anywhere means the unmarked rows are published again: duplicates
//! are possible, loss is not. Consumers deduplicate with the inbox.
//!
//! A row the broker keeps refusing (see [`PublishError::is_refusal`]) is
//! parked after [`RelayConfig::park_after_refusals`] passes, so one poison
//! row cannot hold back its lane for good; it stays unsent and visible
//! (`outbox_parked_messages`, invariant 7a). An unreachable broker is not a
//! refusal: those rows wait, however long it takes.

use crate::amqp::AmqpPublisher;
use crate::crash;
use crate::deadline;
use crate::kafka::KafkaPublisher;
use crate::outbox::{Destination, OutboxMessage, direct_publish_queue};
use crate::outbox_publisher::{InFlight, Order, OutboxPublisher, OutboxRow, PublishError};
use crate::retry::Backoff;
use crate::safety;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Advisory-lock class of relay lanes (the second key is the lane).
const LANE_LOCK_CLASS: i32 = 0x0b0c;

/// Quiet time after which the LISTEN connection is asked whether it is
/// still there: a connection the network black-holed stays quiet too.
const LISTENER_PROBE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Rows per transaction (of one group of lanes): bounds memory and
    /// the work redone after a crash.
    pub batch_size: i64,
    /// Polling interval when no notification arrives.
    pub poll_interval: Duration,
    pub error_backoff: Backoff,
    /// Passes in which the broker refused a row before the row is parked.
    pub park_after_refusals: i32,
    /// Groups the lanes with unsent rows are split into, published at the
    /// same time, each in one transaction on one pool connection: a group
    /// waiting on a slow broker does not hold back the others.
    pub lane_groups: usize,
    /// Bound on one lane's transaction as a whole, publishes and confirms
    /// included (a reconnect, 10 s, a channel set-up, 15 s, a confirm, 15 s,
    /// fit within it); each of its statements has
    /// [`deadline::QUERY_TIMEOUT`]. A lane given up on is tried again: what
    /// it had published goes out again, and the inbox absorbs the duplicates.
    pub lane_timeout: Duration,
}

impl RelayConfig {
    pub const fn default_batch_size() -> usize {
        500
    }

    pub const fn default_lane_groups() -> usize {
        4
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: Self::default_batch_size() as i64,
            poll_interval: Duration::from_millis(500),
            error_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            park_after_refusals: 10,
            lane_groups: Self::default_lane_groups(),
            lane_timeout: Duration::from_secs(45),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which unsent rows a sweep publishes (see [`OutboxRelay::sweep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepScope {
    /// Every row up to this id: all a new slot never saw.
    UpTo(i64),
    /// Rows tried before (`attempts`; parking's hand-back resets only
    /// `parked_at` and `refusals`): the log delivered them once and will
    /// not again.
    HandedBack,
}

impl SweepScope {
    fn ceiling(self) -> Option<i64> {
        match self {
            SweepScope::UpTo(id) => Some(id),
            SweepScope::HandedBack => None,
        }
    }

    fn refused_only(self) -> bool {
        self == SweepScope::HandedBack
    }
}

/// What one pass over the lanes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayPass {
    /// Rows confirmed by the broker and marked sent.
    pub sent: usize,
    /// Lanes that stopped at a row the broker did not confirm.
    pub failed_lanes: usize,
    /// Rows parked this pass.
    pub parked: usize,
}

impl std::ops::AddAssign for RelayPass {
    fn add_assign(&mut self, other: Self) {
        self.sent += other.sent;
        self.failed_lanes += other.failed_lanes;
        self.parked += other.parked;
    }
}

pub struct OutboxRelay {
    pool: PgPool,
    publisher: OutboxPublisher,
    config: RelayConfig,
    /// Server sessions of lanes given up on mid-transaction, to be ended.
    abandoned: std::sync::Mutex<Vec<ServerSession>>,
}

/// See [`OutboxRelay::relay_lanes`].
struct LaneConnection {
    connection: PoolConnection<Postgres>,
    finished: bool,
}

impl Drop for LaneConnection {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
}

/// One server session, told apart from a later one that reuses its pid.
#[derive(Debug)]
struct ServerSession {
    pid: i32,
    started: DateTime<Utc>,
}

impl OutboxRelay {
    pub fn new(
        pool: PgPool,
        amqp: Option<Arc<AmqpPublisher>>,
        kafka: Option<Arc<KafkaPublisher>>,
        config: RelayConfig,
    ) -> Self {
        Self { pool, publisher: OutboxPublisher { amqp, kafka }, config, abandoned: std::sync::Mutex::new(Vec::new()) }
    }

    /// Publishes until `shutdown`: woken by `NOTIFY outbox` at each commit,
    /// polling as a fallback, draining the backlog before sleeping. A batch
    /// in progress is finished before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        tokio::spawn(listen_for_commits(self.pool.clone(), wake.clone(), shutdown.clone()));
        let relay = Arc::new(self);
        if safety::unsafe_modes().publish_without_outbox {
            tokio::spawn(relay.clone().publish_directly(shutdown.clone()));
        }
        let mut failures = 0;
        loop {
            let pass = relay.relay_pending().await;
            let backing_off = match &pass {
                Ok(pass) if pass.failed_lanes == 0 => {
                    failures = 0;
                    false
                }
                Ok(pass) => {
                    failures += 1;
                    tracing::warn!(
                        failed_lanes = pass.failed_lanes,
                        sent = pass.sent,
                        "outbox relay: publishes failed"
                    );
                    true
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    true
                }
            };
            let delay = match pass {
                _ if backing_off => relay.config.error_backoff.delay(failures),
                Ok(pass) if pass.sent > 0 => Duration::ZERO,
                _ => relay.config.poll_interval,
            };
            if delay.is_zero() && !shutdown.is_cancelled() {
                continue;
            }
            if backing_off {
                // New commits must not cut the backoff short: during an
                // outage each one would trigger another futile pass.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        tracing::info!(relay = "polling", "outbox relay stopped");
    }

    /// One pass over every lane with unsent rows, a few lanes at a time.
    /// Lanes held by another relay are skipped this pass.
    pub async fn relay_pending(&self) -> Result<RelayPass, RelayError> {
        self.relay_pending_in(None).await
    }

    /// Publishes the unsent rows in `scope` until none is left or
    /// `shutdown`: for the log-tailing relay, what its log will not deliver.
    /// Failing passes are retried with backoff, as in [`Self::run`].
    pub async fn sweep(&self, scope: SweepScope, shutdown: &CancellationToken) -> RelayPass {
        let mut total = RelayPass::default();
        let mut failures = 0;
        while !shutdown.is_cancelled() {
            match self.relay_pending_in(Some(scope)).await {
                Ok(pass) if pass.failed_lanes == 0 && pass.sent == 0 => break,
                Ok(pass) if pass.failed_lanes == 0 => {
                    failures = 0;
                    total += pass;
                    continue;
                }
                Ok(pass) => {
                    total += pass;
                    tracing::warn!(failed_lanes = pass.failed_lanes, "outbox sweep: publishes failed");
                }
                Err(e) => tracing::warn!(error = %e, "outbox sweep pass failed"),
            }
            failures += 1;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.error_backoff.delay(failures)) => {}
            }
        }
        total
    }

    async fn relay_pending_in(&self, scope: Option<SweepScope>) -> Result<RelayPass, RelayError> {
        // One probe of the index of unsent rows per lane, each stopping at
        // its first live entry: `SELECT DISTINCT lane` read every unsent row
        // of a backlog at every pass.
        let lanes: Vec<i16> = deadline::within(
            deadline::QUERY_TIMEOUT,
            sqlx::query_scalar!(
                r#"SELECT l::int2 AS "lane!" FROM generate_series(0, $3::int4 - 1) AS l
                   CROSS JOIN LATERAL (SELECT 1 FROM outbox
                                       WHERE lane = l AND sent_at IS NULL AND parked_at IS NULL
                                         AND ($1::int8 IS NULL OR id <= $1) AND ($2::bool IS NOT TRUE OR attempts > 0)
                                       LIMIT 1) AS unsent"#,
                scope.and_then(SweepScope::ceiling),
                scope.map(SweepScope::refused_only),
                i32::from(crate::outbox::LANES),
            )
            .fetch_all(&self.pool),
        )
        .await?;
        self.end_abandoned_sessions().await;
        let limit = self.config.lane_timeout;
        let mut results = futures::stream::iter(lane_groups(lanes, self.config.lane_groups))
            .map(|group| async move {
                let session = std::sync::Mutex::new(None);
                let result = deadline::within(limit, self.relay_lanes(&group, scope, &session)).await;
                if result.is_err() {
                    // Its transaction may live on at the server, holding the
                    // lanes' locks, if the connection went silent.
                    let session = session.lock().unwrap_or_else(|e| e.into_inner()).take();
                    self.abandoned.lock().unwrap_or_else(|e| e.into_inner()).extend(session);
                }
                result
            })
            .buffer_unordered(self.config.lane_groups.max(1));
        let mut pass = RelayPass::default();
        let mut first_error = None;
        while let Some(result) = results.next().await {
            match result {
                Ok(lane) => pass += lane,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(pass),
        }
    }

    /// Ends the server sessions of lanes given up on (see
    /// [`Self::relay_pending`]). A silent connection's transaction would
    /// otherwise keep its lane locked until the server's idle timeout (the
    /// lane bound plus 15 s). Best effort: that timeout is the guarantee.
    /// Never a session in use: a failed lane's connection is not pooled
    /// again, and a healthy one ends its own session as it closes.
    async fn end_abandoned_sessions(&self) {
        let abandoned = std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|e| e.into_inner()));
        if abandoned.is_empty() {
            return;
        }
        let (pids, starts): (Vec<i32>, Vec<DateTime<Utc>>) = abandoned.iter().map(|s| (s.pid, s.started)).unzip();
        let ended = deadline::within(
            deadline::QUERY_TIMEOUT,
            sqlx::query_scalar!(
                r#"SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid)) AS "ended!"
                   FROM pg_stat_activity a JOIN unnest($1::int4[], $2::timestamptz[]) AS s(pid, started)
                     ON a.pid = s.pid AND a.backend_start = s.started"#,
                &pids,
                &starts,
            )
            .fetch_one(&self.pool),
        )
        .await;
        match ended {
            Ok(ended) => {
                tracing::info!(abandoned = abandoned.len(), ended, "ended the sessions of abandoned relay lanes")
            }
            Err(e) => tracing::warn!(error = %e, "could not end the sessions of abandoned relay lanes"),
        }
    }

    /// One group of lanes in one transaction, on a connection that is
    /// closed rather than pooled unless the group finishes: after a failure
    /// its session may live on at the server, to be ended there, so no one
    /// else may be handed it meanwhile.
    async fn relay_lanes(
        &self,
        lanes: &[i16],
        scope: Option<SweepScope>,
        session: &std::sync::Mutex<Option<ServerSession>>,
    ) -> Result<RelayPass, RelayError> {
        let connection = deadline::within(deadline::QUERY_TIMEOUT, self.pool.acquire()).await?;
        let mut lane_connection = LaneConnection { connection, finished: false };
        let pass = self.relay_lanes_on(&mut lane_connection.connection, lanes, scope, session).await?;
        lane_connection.finished = true;
        Ok(pass)
    }

    /// Each statement has a deadline (a silent connection must not hold the
    /// lanes for the whole lane bound); the session is reported in `session`
    /// so that the caller can end it if the group is given up on.
    async fn relay_lanes_on(
        &self,
        connection: &mut PoolConnection<Postgres>,
        lanes: &[i16],
        scope: Option<SweepScope>,
        session: &std::sync::Mutex<Option<ServerSession>>,
    ) -> Result<RelayPass, RelayError> {
        let mut tx = deadline::within(deadline::QUERY_TIMEOUT, connection.begin()).await?;
        // The transaction idles while the broker confirms: the server must
        // not end it for that (services set a short default, see
        // `service_kit::db`), only once the lane has given up.
        let idle_allowed = format!("{}ms", (self.config.lane_timeout + Duration::from_secs(15)).as_millis());
        // The lanes another relay holds are skipped this pass.
        let lane_session = deadline::within(
            deadline::QUERY_TIMEOUT,
            sqlx::query!(
                r#"SELECT ARRAY(SELECT lane FROM unnest($2::int2[]) AS lane
                                WHERE pg_try_advisory_xact_lock($1, lane::int4)) AS "locked!",
                          pg_backend_pid() AS "pid!",
                          (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS "started!"
                   FROM set_config('idle_in_transaction_session_timeout', $3, true)"#,
                LANE_LOCK_CLASS,
                lanes,
                idle_allowed,
            )
            .fetch_one(&mut *tx),
        )
        .await?;
        let (locked, pid, started) = (lane_session.locked, lane_session.pid, lane_session.started);
        *session.lock().unwrap_or_else(|e| e.into_inner()) = Some(ServerSession { pid, started });
        if locked.is_empty() {
            return Ok(RelayPass::default());
        }
        // In id order, so the rows taken of each lane are a prefix of it.
        // Each lane's first ids come from its own index scan, stopping at
        // the batch size; `lane = ANY(…) ORDER BY id` read and sorted every
        // unsent row of the group's lanes, payloads included.
        let rows: Vec<OutboxRow> = deadline::within(
            deadline::QUERY_TIMEOUT,
            sqlx::query_as!(
                OutboxRow,
                "SELECT id, transport, destination, partition_key, envelope, payload, created_at, refusals, lane
                 FROM outbox
                 WHERE id IN (
                     SELECT first.id FROM unnest($1::int2[]) AS l(lane)
                     CROSS JOIN LATERAL (
                         SELECT id FROM outbox
                         WHERE lane = l.lane AND sent_at IS NULL AND parked_at IS NULL
                           AND ($3::int8 IS NULL OR id <= $3) AND ($4::bool IS NOT TRUE OR attempts > 0)
                         ORDER BY id LIMIT $2) AS first
                     ORDER BY first.id LIMIT $2)
                 ORDER BY id",
                &locked,
                self.config.batch_size,
                scope.and_then(SweepScope::ceiling),
                scope.map(SweepScope::refused_only),
            )
            .fetch_all(&mut *tx),
        )
        .await?;
        if rows.is_empty() {
            return Ok(RelayPass::default());
        }
        crash::crash_point(crash::RELAY_BEFORE_PUBLISH);
        let results = self.publisher.publish_in_order(&rows, Order::PerLane).await;
        let sent_ids: Vec<i64> = rows.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(row, _)| row.id).collect();
        // Only once the broker has confirmed something: a crash after a
        // publish that failed outright is not the case this point is for.
        if !sent_ids.is_empty() {
            crash::crash_point(crash::RELAY_AFTER_CONFIRM_BEFORE_MARK);
            let mark_sent = sqlx::query!(
                "UPDATE outbox SET sent_at = clock_timestamp(), attempts = attempts + 1 WHERE id = ANY($1)",
                &sent_ids,
            )
            .execute(&mut *tx);
            deadline::within(deadline::QUERY_TIMEOUT, mark_sent).await?;
        }
        let mut pass = RelayPass { sent: sent_ids.len(), ..RelayPass::default() };
        // The row that ended each failed lane (the rows after it were not counted).
        let failures = rows.iter().zip(&results).filter_map(|(row, result)| match result {
            Err(PublishError::AfterEarlierFailure) | Ok(()) => None,
            Err(error) => Some((row, error)),
        });
        for (failed, error) in failures {
            pass.failed_lanes += 1;
            let refusals = failed.refusals + i32::from(error.is_refusal());
            let park = refusals >= self.config.park_after_refusals;
            if park {
                pass.parked += 1;
                metrics::counter!("outbox_parked_total", "destination" => failed.destination.clone()).increment(1);
                tracing::error!(
                    outbox_id = failed.id, destination = %failed.destination, error = %error, refusals,
                    "the broker keeps refusing this message: parked; the rest of its lane moves on"
                );
            } else if error.is_held_back() {
                tracing::info!(outbox_id = failed.id, destination = %failed.destination, reason = %error, "held back; the next pass sends it");
            } else {
                tracing::warn!(outbox_id = failed.id, destination = %failed.destination, error = %error, refusals, "publish failed; will retry");
            }
            let record_failure = sqlx::query!(
                "UPDATE outbox SET attempts = attempts + 1, refusals = $2, last_error = $3,
                        parked_at = CASE WHEN $4 THEN clock_timestamp() END
                 WHERE id = $1",
                failed.id,
                refusals,
                error.to_string(),
                park,
            )
            .execute(&mut *tx);
            deadline::within(deadline::QUERY_TIMEOUT, record_failure).await?;
        }
        deadline::within(deadline::QUERY_TIMEOUT, tx.commit()).await?;
        Ok(pass)
    }

    /// UNSAFE mode: publish messages straight from memory, once, whatever
    /// became of the transaction that produced them.
    async fn publish_directly(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut receiver) = direct_publish_queue().take_receiver() else { return };
        loop {
            let message: OutboxMessage = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = receiver.recv() => match m { Some(m) => m, None => return },
            };
            let row = OutboxRow {
                id: 0,
                transport: message.destination.transport().to_owned(),
                destination: message.destination.name().to_owned(),
                partition_key: message.partition_key.clone(),
                envelope: serde_json::Value::Null,
                payload: message.payload.clone(),
                created_at: Utc::now(),
                refusals: 0,
                lane: crate::outbox::lane_of(&message.partition_key),
            };
            let result = match self.publisher.send(&row, message.envelope.clone()).await {
                Ok(InFlight::Amqp(p)) => p.confirmed().await.map_err(PublishError::from),
                Ok(InFlight::Kafka(p)) => p.delivered().await.map(|_| ()).map_err(PublishError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // No outbox row to retry from: the message is gone.
                tracing::error!(error = %e, destination = ?message.destination, "UNSAFE direct publish failed; message lost");
                if let (Destination::Queue(_), Some(amqp)) = (&message.destination, &self.publisher.amqp) {
                    amqp.reset(&e.to_string()).await;
                }
            }
        }
    }
}

/// Wakes the relay whenever a transaction that wrote outbox rows commits.
/// Reconnects after a database restart; polling covers the gap.
/// `lanes` dealt round into at most `groups` groups, none empty.
fn lane_groups(lanes: Vec<i16>, groups: usize) -> Vec<Vec<i16>> {
    let mut dealt: Vec<Vec<i16>> = vec![Vec::new(); groups.max(1).min(lanes.len())];
    for (i, lane) in lanes.into_iter().enumerate() {
        let n = dealt.len();
        dealt[i % n].push(lane);
    }
    dealt
}

async fn listen_for_commits(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut failures = 0;
    loop {
        let mut listener = match open_listener(&pool).await {
            Ok(l) => l,
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "outbox LISTEN failed; polling meanwhile");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.delay(failures)) => continue,
                }
            }
        };
        failures = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // Cancel-safe: a notification is taken whole or not at all.
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox LISTEN connection lost");
                        break;
                    }
                },
                _ = tokio::time::sleep(LISTENER_PROBE_INTERVAL) => {
                    let probe = deadline::within(deadline::QUERY_TIMEOUT, sqlx::query_scalar!("SELECT 1 AS probe").fetch_one(&mut listener)).await;
                    if let Err(e) = probe {
                        tracing::warn!(error = %e, "outbox LISTEN connection silent; reconnecting (polling meanwhile)");
                        break;
                    }
                }
            }
        }
    }
}

/// A LISTEN connection in a one-connection pool of its own: a dropped
/// listener sends UNLISTEN on its connection, which on a silent connection
/// never returns, and would hold one of the service's pool slots for good.
async fn open_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(deadline::QUERY_TIMEOUT)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    deadline::within(deadline::QUERY_TIMEOUT, async {
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen("outbox").await?;
        Ok(listener)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_dealt_round_into_groups_none_empty() {
        assert_eq!(lane_groups(vec![1, 2, 3, 4, 5], 2), vec![vec![1, 3, 5], vec![2, 4]]);
        assert_eq!(lane_groups(vec![7], 4), vec![vec![7]]);
        assert!(lane_groups(vec![], 4).is_empty());
        assert_eq!(lane_groups(vec![1, 2], 0), vec![vec![1, 2]], "at least one group");
    }
}
