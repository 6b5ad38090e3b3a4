//! The log-tailing outbox relay (Transaction Log Tailing): reads the
//! outbox's inserts from PostgreSQL's write-ahead log through logical
//! replication (`pgoutput`, a publication on the outbox table alone, one
//! slot per service database), publishes each with the same broker
//! confirmation as the polling relay ([`crate::relay`]), and reports a log
//! position to the slot as flushed only once every message up to it was
//! confirmed and marked sent. A crash anywhere replays from the last
//! reported position: duplicates, never loss (the inbox absorbs them).
//!
//! Order: the log gives transactions in commit order, and one aggregate's
//! messages commit in order (services hold its row lock), so publishing in
//! log order keeps each order's messages in order, on one AMQP channel or
//! one Kafka partition per key (each batch pinned to one channel and one
//! producer; a send held back by its pin is retried like any failure).
//!
//! Exclusivity: the server lets one session at a time stream a slot; a
//! second instance of the service stands by until the slot is free.
//!
//! Before streaming, each start sweeps (with the polling relay's code,
//! lane locks included) the unsent rows the log will not deliver: all of
//! them up to the newest when the slot is new or re-created (it never saw
//! them), otherwise only rows handed back from parking.
//!
//! Refusals: a row the broker refuses is counted in its outbox row and
//! retried; after [`LogTailingConfig::park_after_refusals`] it is parked and
//! the stream moves on. An unreachable broker is waited out, however long.

mod inserted_row;
mod pgoutput;
pub mod published_rows;
pub mod slot;
mod transactions;

use crate::crash;
use crate::outbox_publisher::{Order, OutboxPublisher, PublishError};
use crate::relay::{OutboxRelay, RelayConfig, SweepScope};
use crate::retry::Backoff;
use crate::safety;
use chrono::{DateTime, Utc};
use pgwire_replication::{FeedbackObserver, Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use slot::SlotCheck;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use transactions::ReceivedTransactions;

/// A replication stream silent this long (at least) while heartbeats are
/// written is taken for dead.
const MIN_SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// How long a clean stop waits for its last position to reach the server.
const LEAVING_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on connecting and starting a replication session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Batches of rows held in memory, waiting for the broker, before the
/// stream is left unread.
const MAX_WAITING_BATCHES: usize = 20;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds: pgoutput's clock.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Which relay moves a service's outbox to the brokers (`OUTBOX_RELAY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayMode {
    /// The polling publisher, woken by LISTEN/NOTIFY ([`crate::relay`]).
    #[default]
    Polling,
    /// This module's transaction log tailing.
    LogTailing,
}

impl std::str::FromStr for RelayMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "polling" => Ok(RelayMode::Polling),
            "log-tailing" => Ok(RelayMode::LogTailing),
            other => Err(format!("expected `polling` or `log-tailing`, got `{other}`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogTailingConfig {
    /// The replication slot (see [`slot::slot_name_for`]).
    pub slot: String,
    /// Rows published before their confirmations are awaited.
    pub batch_size: usize,
    /// How soon a reported position reaches the server.
    pub status_interval: Duration,
    /// An idle relay writes a heartbeat into the log this often, and reads
    /// the slot's lag.
    pub heartbeat_interval: Duration,
    /// How often a standing-by instance tries for the slot.
    pub standby_interval: Duration,
    pub error_backoff: Backoff,
    pub park_after_refusals: i32,
    /// UNSAFE, the negative control: report each transaction's position as
    /// soon as it is received, before the broker confirmed it (what
    /// Eventuate's CDC does), and skip the sweep. Defaults to
    /// `UNSAFE_FLUSH_BEFORE_CONFIRM` (see [`crate::safety`]).
    pub report_before_confirm: bool,
}

impl LogTailingConfig {
    pub fn for_slot(slot: impl Into<String>) -> Self {
        Self {
            slot: slot.into(),
            batch_size: 500,
            status_interval: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(10),
            standby_interval: Duration::from_secs(2),
            error_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            park_after_refusals: RelayConfig::default().park_after_refusals,
            report_before_confirm: safety::unsafe_modes().flush_before_confirm,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogTailingError {
    #[error("DATABASE_URL for the replication connection: {0}")]
    Url(String),
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("replication stream: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("the replication stream ended")]
    StreamEnded,
    #[error("the replication stream was silent for {0:?} while heartbeats were written: a dead connection")]
    Silent(Duration),
}

impl LogTailingError {
    /// Another session (another instance of the service) streams the slot.
    fn is_slot_taken(&self) -> bool {
        matches!(self, LogTailingError::Replication(e) if e.to_string().contains("is active for PID"))
    }
}

/// Where the replication session connects: the service's database, as a
/// replication connection. Kept apart from `Debug` output: it holds the
/// password.
#[derive(Clone)]
struct ReplicationTarget {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

impl ReplicationTarget {
    fn from_url(database_url: &str) -> Result<Self, LogTailingError> {
        let url = url::Url::parse(database_url).map_err(|e| LogTailingError::Url(e.to_string()))?;
        let decode = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
        let database = decode(url.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err(LogTailingError::Url("no database name in the URL".into()));
        }
        Ok(Self {
            host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() { "postgres".to_owned() } else { decode(url.username()) },
            password: url.password().map(decode).unwrap_or_default(),
            database,
        })
    }
}

pub struct LogTailingRelay {
    pool: PgPool,
    target: ReplicationTarget,
    publisher: OutboxPublisher,
    sweeper: OutboxRelay,
    config: LogTailingConfig,
}

/// How one replication session ended.
enum SessionEnd {
    Shutdown,
    Failed(LogTailingError),
}

impl LogTailingRelay {
    pub fn new(
        pool: PgPool,
        database_url: &str,
        amqp: Option<Arc<crate::amqp::AmqpPublisher>>,
        kafka: Option<Arc<crate::kafka::KafkaPublisher>>,
        config: LogTailingConfig,
    ) -> Result<Self, LogTailingError> {
        let target = ReplicationTarget::from_url(database_url)?;
        let sweeping = RelayConfig {
            park_after_refusals: config.park_after_refusals,
            error_backoff: config.error_backoff,
            ..RelayConfig::default()
        };
        let sweeper = OutboxRelay::new(pool.clone(), amqp.clone(), kafka.clone(), sweeping);
        Ok(Self { pool, target, publisher: OutboxPublisher { amqp, kafka }, sweeper, config })
    }

    /// Streams until `shutdown`, a session at a time: make sure of the
    /// publication and the slot, sweep, stream; on any failure start over
    /// after a backoff, from the last position reported.
    pub async fn run(self, shutdown: CancellationToken) {
        let unsafe_flush = self.config.report_before_confirm;
        if unsafe_flush {
            tracing::warn!("UNSAFE: log positions are reported before the broker confirms; messages can be lost");
        }
        let mut failures = 0;
        let mut standing_by = false;
        while !shutdown.is_cancelled() {
            let end = match self.prepare(unsafe_flush, &shutdown).await {
                Ok(()) => self.stream(unsafe_flush, &shutdown).await,
                Err(e) => SessionEnd::Failed(e),
            };
            let delay = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Failed(e) if e.is_slot_taken() => {
                    if !standing_by {
                        tracing::info!(slot = %self.config.slot, "another instance streams the outbox slot; standing by");
                    }
                    standing_by = true;
                    failures = 0;
                    self.config.standby_interval
                }
                SessionEnd::Failed(e) => {
                    failures += 1;
                    standing_by = false;
                    tracing::warn!(error = %e, slot = %self.config.slot, "log-tailing relay session failed; starting over");
                    metrics::counter!("outbox_slot_session_failures_total").increment(1);
                    self.config.error_backoff.delay(failures)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!(relay = "log-tailing", "outbox relay stopped");
    }

    /// Publication and slot, then the sweep of what the slot will not
    /// deliver (skipped in the unsafe mode: it would hide the loss).
    async fn prepare(&self, unsafe_flush: bool, shutdown: &CancellationToken) -> Result<(), LogTailingError> {
        slot::ensure_publication(&self.pool).await?;
        let check = slot::ensure_slot(&self.pool, &self.config.slot).await?;
        if check != SlotCheck::Existing {
            tracing::info!(slot = %self.config.slot, ?check, "outbox replication slot created");
            if check == SlotCheck::Recreated {
                metrics::counter!("outbox_slot_recoveries_total").increment(1);
            }
        }
        if unsafe_flush {
            return Ok(());
        }
        let scope = match check {
            // Every row committed before the slot's position is visible now.
            SlotCheck::Created | SlotCheck::Recreated => {
                SweepScope::UpTo(published_rows::highest_outbox_id(&self.pool).await?)
            }
            SlotCheck::Existing => SweepScope::HandedBack,
        };
        let swept = self.sweeper.sweep(scope, shutdown).await;
        if swept.sent > 0 || swept.parked > 0 {
            tracing::info!(sent = swept.sent, parked = swept.parked, ?scope, "outbox swept before tailing the log");
        }
        Ok(())
    }

    fn replication_config(&self, reported: Arc<AtomicBool>) -> ReplicationConfig {
        let t = &self.target;
        ReplicationConfig::new(&t.host, &t.user, &t.password, &t.database, &self.config.slot, slot::PUBLICATION)
            .with_port(t.port)
            .with_status_interval(self.config.status_interval)
            .with_wakeup_interval(self.config.heartbeat_interval)
            .with_application_name(format!("outbox-relay:{}", self.config.slot))
            .with_feedback_observer(FeedbackObserver::new(move |sent| {
                metrics::histogram!("outbox_slot_report_delay_seconds").record(sent.pending_for.as_secs_f64());
                // Only a report that covers published messages is the case
                // this crash point is for, not a heartbeat's.
                if reported.swap(false, Ordering::AcqRel) {
                    crash::crash_point(crash::LOG_TAILING_AFTER_REPORT);
                }
            }))
    }

    /// One replication session: read, publish, report, until shutdown or
    /// failure. A batch in progress is finished before returning.
    async fn stream(&self, unsafe_flush: bool, shutdown: &CancellationToken) -> SessionEnd {
        let published_since_report = Arc::new(AtomicBool::new(false));
        let mut client = match ReplicationClient::connect(self.replication_config(published_since_report.clone())).await
        {
            Ok(client) => client,
            Err(e) => return SessionEnd::Failed(e.into()),
        };
        // A network that drops packets would leave the start waiting forever.
        let started = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            started = tokio::time::timeout(START_TIMEOUT, client.wait_started()) => started,
        };
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return SessionEnd::Failed(e.into()),
            Err(_) => {
                client.abort();
                return SessionEnd::Failed(LogTailingError::Silent(START_TIMEOUT));
            }
        }
        tracing::info!(slot = %self.config.slot, "tailing the outbox's log");
        let mut session = Session {
            relay: self,
            client,
            received: ReceivedTransactions::default(),
            relations: pgoutput::Relations::default(),
            unsafe_flush,
            published_since_report,
            reported: Lsn::ZERO,
            failures: 0,
            retry_at: None,
        };
        let end = session.run(shutdown).await;
        if matches!(end, SessionEnd::Shutdown) {
            session.report_before_leaving().await;
        }
        session.client.stop();
        end
    }
}

/// What woke an idle session.
enum Wake {
    Event(pgwire_replication::Result<Option<ReplicationEvent>>),
    Retry,
    Heartbeat,
}

struct Session<'a> {
    relay: &'a LogTailingRelay,
    client: ReplicationClient,
    received: ReceivedTransactions,
    relations: pgoutput::Relations,
    unsafe_flush: bool,
    published_since_report: Arc<AtomicBool>,
    /// The newest position handed to the client to report.
    reported: Lsn,
    /// Consecutive failed publishes (backoff), and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Session<'_> {
    /// Hands `position` to the client, which tells the server within the
    /// status interval.
    fn report(&mut self, position: Lsn) {
        self.reported = self.reported.max(position);
        self.client.update_applied_lsn(position);
    }

    /// On a clean stop, waits (up to LEAVING_REPORT_TIMEOUT) until the server was told the last
    /// position: the client ends its stream without a last status update,
    /// and what was published since the previous one would go out again.
    async fn report_before_leaving(&self) {
        let metrics = self.client.metrics();
        let deadline = Instant::now() + LEAVING_REPORT_TIMEOUT;
        while metrics.last_applied_lsn() < self.reported && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let config = &self.relay.config;
        let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A heartbeat comes back through the stream within moments, so a
        // stream that stays silent through several while listened to is a
        // dead connection (a network that drops packets tells nobody): it
        // is given up and opened again.
        let silence_limit = (config.heartbeat_interval * 3).max(MIN_SILENCE_LIMIT);
        let mut listening_since = Instant::now();
        loop {
            let can_publish = self.received.waiting_rows() > 0 && self.retry_at.is_none_or(|at| Instant::now() >= at);
            if can_publish {
                // Take in what has already arrived, up to a batch, first.
                while self.received.waiting_rows() < config.batch_size {
                    match futures::FutureExt::now_or_never(self.client.recv()) {
                        Some(Ok(Some(event))) => {
                            if let Err(e) = self.on_event(event) {
                                return SessionEnd::Failed(e);
                            }
                        }
                        Some(Ok(None)) => return SessionEnd::Failed(LogTailingError::StreamEnded),
                        Some(Err(e)) => return SessionEnd::Failed(e.into()),
                        None => break,
                    }
                }
                if let Err(e) = self.publish_batch().await {
                    return SessionEnd::Failed(e);
                }
                if shutdown.is_cancelled() {
                    return SessionEnd::Shutdown;
                }
                listening_since = Instant::now();
                continue;
            }
            // While the broker is away, rows pile up in memory only to a
            // bound; beyond it the stream is left unread (the server waits).
            let listening = self.received.waiting_rows() < config.batch_size * MAX_WAITING_BATCHES;
            if !listening {
                listening_since = Instant::now();
            }
            let retry = self.retry_at;
            let woken = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                event = self.client.recv(), if listening => Wake::Event(event),
                _ = async { match retry { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => Wake::Retry,
                _ = heartbeat.tick() => Wake::Heartbeat,
            };
            match woken {
                Wake::Event(Ok(Some(event))) => {
                    listening_since = Instant::now();
                    if let Err(e) = self.on_event(event) {
                        return SessionEnd::Failed(e);
                    }
                }
                Wake::Event(Ok(None)) => return SessionEnd::Failed(LogTailingError::StreamEnded),
                Wake::Event(Err(e)) => return SessionEnd::Failed(e.into()),
                // The publish condition above sees the time has come.
                Wake::Retry => {}
                Wake::Heartbeat => {
                    if listening && listening_since.elapsed() > silence_limit {
                        return SessionEnd::Failed(LogTailingError::Silent(listening_since.elapsed()));
                    }
                    self.beat().await;
                }
            }
        }
    }

    fn on_event(&mut self, event: ReplicationEvent) -> Result<(), LogTailingError> {
        match event {
            ReplicationEvent::Begin { .. } => self.received.begin(),
            ReplicationEvent::XLogData { data, .. } => self.on_change(&data),
            ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                let committed_at = DateTime::<Utc>::from_timestamp_micros(PG_EPOCH_MICROS + commit_time_micros)
                    .unwrap_or_else(Utc::now);
                self.received.commit(end_lsn, committed_at);
                if self.unsafe_flush {
                    // The negative control: reported on receipt.
                    self.report(end_lsn);
                }
                // A transaction without outbox rows needs no broker.
                if let Some(position) = self.received.finish(0) {
                    self.report(position);
                }
            }
            // The server has sent everything up to here: with nothing
            // waiting, that is a position that may be reported.
            ReplicationEvent::KeepAlive { wal_end, .. } => self.report_if_idle(wal_end),
            ReplicationEvent::Message { lsn, transactional: false, .. } => self.report_if_idle(lsn),
            ReplicationEvent::Message { .. } => {}
            ReplicationEvent::StoppedAt { .. } => return Err(LogTailingError::StreamEnded),
        }
        Ok(())
    }

    fn on_change(&mut self, data: &[u8]) {
        match pgoutput::decode(data) {
            Ok(pgoutput::Change::Relation { id, relation }) => self.relations.remember(id, relation),
            Ok(pgoutput::Change::Insert { relation, values }) => {
                let row = self.relations.columns_of(relation, &values).map_err(|e| e.to_string()).and_then(
                    |(table, columns)| match table.name.as_str() {
                        "outbox" => inserted_row::outbox_row(&columns),
                        other => Err(format!("insert into {other}, which the publication does not cover")),
                    },
                );
                match row {
                    Ok(row) => self.received.insert(row),
                    // Nothing to publish or park without an id; said loudly.
                    Err(reason) => tracing::error!(%reason, "log-tailing relay skipped an insert it cannot read"),
                }
            }
            Ok(pgoutput::Change::Other(_)) => {}
            Err(e) => tracing::error!(error = %e, "log-tailing relay skipped a change it cannot decode"),
        }
    }

    fn report_if_idle(&mut self, position: Lsn) {
        if self.received.is_idle() && !position.is_zero() {
            self.report(position);
        }
    }

    /// Publishes the next batch; marks the confirmed prefix sent, reports
    /// the position it completes, and deals with the row that failed.
    async fn publish_batch(&mut self) -> Result<(), LogTailingError> {
        let relay = self.relay;
        let rows = self.received.next_batch(relay.config.batch_size);
        let results = relay.publisher.publish_in_order(&rows, Order::WholeBatch).await;
        let confirmed = results.iter().take_while(|r| r.is_ok()).count();
        if confirmed > 0 {
            let ids: Vec<i64> = rows[..confirmed].iter().map(|r| r.id).collect();
            published_rows::mark_sent(&relay.pool, &ids).await?;
            crash::crash_point(crash::LOG_TAILING_AFTER_CONFIRM_BEFORE_REPORT);
        }
        let mut done = confirmed;
        if let Some(Err(error)) = results.get(confirmed) {
            let failed = &rows[confirmed];
            if self.count_failure(failed.id, &failed.destination, error).await? {
                done += 1;
            }
        } else {
            self.failures = 0;
            self.retry_at = None;
        }
        if let Some(position) = self.received.finish(done) {
            self.published_since_report.store(true, Ordering::Release);
            self.report(position);
        }
        Ok(())
    }

    /// Records a failed publish; returns whether the row was parked (the
    /// stream moves past it). Otherwise the rest waits, with backoff.
    async fn count_failure(&mut self, id: i64, destination: &str, error: &PublishError) -> Result<bool, sqlx::Error> {
        self.failures += 1;
        self.retry_at = Some(Instant::now() + self.relay.config.error_backoff.delay(self.failures));
        if error.is_held_back() {
            tracing::info!(outbox_id = id, destination, reason = %error, "held back; sent again after the backoff");
            return Ok(false);
        }
        if !error.is_refusal() {
            tracing::warn!(outbox_id = id, destination, error = %error, "publish failed; will retry");
            return Ok(false);
        }
        let parked = published_rows::record_refusal(
            &self.relay.pool,
            id,
            &error.to_string(),
            self.relay.config.park_after_refusals,
        )
        .await?;
        if parked {
            metrics::counter!("outbox_parked_total", "destination" => destination.to_owned()).increment(1);
            tracing::error!(
                outbox_id = id, destination, error = %error,
                "the broker keeps refusing this message: parked; the rest of the log moves on"
            );
            self.retry_at = None;
        } else {
            tracing::warn!(outbox_id = id, destination, error = %error, "the broker refused this message; will retry");
        }
        Ok(parked)
    }

    /// Keeps an idle slot moving and measures its lag.
    async fn beat(&self) {
        let lag_seconds = self
            .received
            .oldest_commit()
            .map(|committed| (Utc::now() - committed).to_std().unwrap_or_default().as_secs_f64())
            .unwrap_or(0.0);
        metrics::gauge!("outbox_slot_lag_seconds").set(lag_seconds);
        match slot::heartbeat(&self.relay.pool, &self.relay.config.slot).await {
            Ok(Some(status)) => {
                metrics::gauge!("outbox_slot_lag_bytes").set(status.lag_bytes as f64);
                metrics::gauge!("outbox_slot_invalidated").set(f64::from(u8::from(status.is_lost())));
            }
            Ok(None) => tracing::warn!(slot = %self.relay.config.slot, "the outbox replication slot is gone"),
            Err(e) => tracing::warn!(error = %e, "outbox slot heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replication_target_comes_from_the_database_url_with_its_escapes() {
        let target =
            ReplicationTarget::from_url("postgres://app%40x:p%2Fw@db.local:6543/order_db?sslmode=disable").unwrap();
        assert_eq!(
            (
                target.host.as_str(),
                target.port,
                target.user.as_str(),
                target.password.as_str(),
                target.database.as_str()
            ),
            ("db.local", 6543, "app@x", "p/w", "order_db")
        );
        assert!(ReplicationTarget::from_url("postgres://127.0.0.1:5432").is_err());
    }
}
