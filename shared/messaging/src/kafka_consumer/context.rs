//! The consumer's librdkafka context: the lag gauge and the member's group
//! state (for the liveness check) from the statistics, rebalances logged,
//! refused commits kept to be committed again.

use super::liveness::ConsumerLiveness;
use super::statistics::{self, PartitionLag};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

/// Sets `kafka_consumer_lag` from librdkafka's statistics (see the module
/// docs); everything else as librdkafka's default context does.
pub(super) struct LagContext {
    group: String,
    /// The partitions whose lag was set, to zero the gauge of one no longer assigned.
    reported: Mutex<BTreeSet<(String, i32)>>,
    /// Offsets of asynchronous commits the broker did not take.
    failed_commits: Mutex<Vec<((String, i32), i64)>>,
    /// Told the member's group state at every statistics report.
    liveness: ConsumerLiveness,
}

impl LagContext {
    pub(super) fn new(group: &str, liveness: ConsumerLiveness) -> Self {
        Self {
            group: group.to_owned(),
            reported: Mutex::new(BTreeSet::new()),
            failed_commits: Mutex::new(Vec::new()),
            liveness,
        }
    }

    pub(super) fn take_failed_commits(&self) -> Vec<((String, i32), i64)> {
        std::mem::take(&mut *self.failed_commits.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn report(&self, lags: Vec<PartitionLag>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let assigned: BTreeSet<(String, i32)> = lags.iter().map(|l| (l.topic.clone(), l.partition)).collect();
        // Another member reports it now: this one owes nothing there, and
        // sums over the group stay right.
        for (topic, partition) in reported.iter().filter(|key| !assigned.contains(*key)) {
            self.gauge(topic, *partition).set(0.0);
        }
        reported.retain(|key| assigned.contains(key));
        for lag in lags {
            if let Some(records) = lag.records {
                self.gauge(&lag.topic, lag.partition).set(records as f64);
                reported.insert((lag.topic, lag.partition));
            }
        }
    }

    fn gauge(&self, topic: &str, partition: i32) -> metrics::Gauge {
        metrics::gauge!(
            "kafka_consumer_lag",
            "topic" => topic.to_owned(),
            "partition" => partition.to_string(),
            "group" => self.group.clone(),
        )
    }
}

impl ClientContext for LagContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match statistics::read(statistics) {
            Ok(report) => {
                if let Some(group) = report.group {
                    self.liveness.group_state(group.settled(), group.to_string(), std::time::Instant::now());
                }
                self.report(report.lags);
            }
            Err(e) => tracing::debug!(error = %e, "unreadable librdkafka statistics"),
        }
    }
}

impl ConsumerContext for LagContext {
    /// Group mode only: what the group coordinator gave or took (one line
    /// per rebalance, so an operator sees a replica take its share).
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let described = |partitions: &TopicPartitionList| {
            partitions.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>()
        };
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(group = %self.group, partitions = ?described(partitions), "group assigned partitions")
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(group = %self.group, partitions = ?described(partitions), "group revoked partitions")
            }
            Rebalance::Error(error) => tracing::warn!(group = %self.group, %error, "group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed: Vec<((String, i32), i64)> = offsets
            .elements()
            .iter()
            .filter(|element| result.is_err() || element.error().is_err())
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some(((element.topic().to_owned(), element.partition()), offset)),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            tracing::warn!(?result, partitions = failed.len(), "offset commit refused; it will be committed again");
            self.failed_commits.lock().unwrap_or_else(PoisonError::into_inner).extend(failed);
        }
    }
}
