//! What a chaos run is asked to do: how many orders and faults, the seed,
//! the relay, and an UNSAFE mode for a negative control.

use super::plan;
use messaging::log_tailing::RelayMode;
use std::time::Duration;

/// An UNSAFE delivery mode for a negative control (see messaging::safety).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeMode {
    PublishWithoutOutbox,
    AckBeforeCommit,
    SkipInbox,
    /// Needs the log-tailing relay (set by [`ChaosOptions::relay_mode`]).
    FlushBeforeConfirm,
}

impl UnsafeMode {
    pub fn env_var(self) -> &'static str {
        use messaging::safety;
        match self {
            UnsafeMode::PublishWithoutOutbox => safety::PUBLISH_WITHOUT_OUTBOX,
            UnsafeMode::AckBeforeCommit => safety::ACK_BEFORE_COMMIT,
            UnsafeMode::SkipInbox => safety::SKIP_INBOX,
            UnsafeMode::FlushBeforeConfirm => safety::FLUSH_BEFORE_CONFIRM,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "publish-without-outbox" => Some(Self::PublishWithoutOutbox),
            "ack-before-commit" => Some(Self::AckBeforeCommit),
            "skip-inbox" => Some(Self::SkipInbox),
            "flush-before-confirm" => Some(Self::FlushBeforeConfirm),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub orders: usize,
    pub kills: usize,
    /// Silent network partitions between the services and PostgreSQL,
    /// RabbitMQ or Kafka (local backend only; see [`network`]).
    pub partitions: usize,
    pub seed: u64,
    /// Orders per second.
    pub rate: f64,
    pub concurrency: usize,
    /// Upper bound on waiting for the system to settle after the faults.
    pub drain_timeout: Duration,
    pub unsafe_mode: Option<UnsafeMode>,
    /// Components that may be killed (default: all nine).
    pub targets: Vec<&'static str>,
    /// The services' outbox relay (`OUTBOX_RELAY`).
    pub relay: RelayMode,
}

impl ChaosOptions {
    /// The relay the services run: log tailing whenever the unsafe mode is
    /// one of its own.
    pub fn relay_mode(&self) -> RelayMode {
        match self.unsafe_mode {
            Some(UnsafeMode::FlushBeforeConfirm) => RelayMode::LogTailing,
            _ => self.relay,
        }
    }
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            orders: 300,
            kills: 10,
            partitions: 0,
            seed: 1,
            rate: 15.0,
            concurrency: 8,
            drain_timeout: Duration::from_secs(180),
            unsafe_mode: None,
            targets: plan::TARGETS.to_vec(),
            relay: RelayMode::Polling,
        }
    }
}
