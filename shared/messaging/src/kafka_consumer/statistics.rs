//! The few fields of librdkafka's statistics JSON the consumer reads: the
//! lag of each assigned partition (the lag gauge) and where the member is
//! in its group's protocol (the liveness check).

use serde::Deserialize;
use std::collections::HashMap;

/// The lag of one partition this consumer is assigned.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PartitionLag {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// `None` while librdkafka does not know it (it says -1).
    pub(super) records: Option<u64>,
}

/// The parts of librdkafka's statistics JSON read here; the rest is skipped
/// (parsing it all into `rdkafka::Statistics` would break on any field a
/// librdkafka version adds or drops).
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
    cgrp: Option<GroupStatistics>,
}

/// librdkafka's `cgrp` object: the consumer group handler's state.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct GroupStatistics {
    /// The coordinator side: `up` once the coordinator is known and connected.
    pub(super) state: String,
    /// The membership side: `steady` once joined, synced and assigned.
    pub(super) join_state: String,
    #[serde(default)]
    pub(super) rebalance_cnt: u64,
    #[serde(default)]
    pub(super) rebalance_reason: String,
    #[serde(default)]
    pub(super) assignment_size: u64,
}

impl GroupStatistics {
    /// A member in its group: coordinator connected, and the join, sync and
    /// assignment of the last rebalance done.
    pub(super) fn settled(&self) -> bool {
        self.state == "up" && self.join_state == "steady"
    }
}

impl std::fmt::Display for GroupStatistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "group state {}, join state {}, {} partitions assigned, {} rebalances, the last: {}",
            self.state,
            self.join_state,
            self.assignment_size,
            self.rebalance_cnt,
            if self.rebalance_reason.is_empty() { "none" } else { &self.rebalance_reason }
        )
    }
}

#[derive(Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Deserialize)]
struct PartitionStatistics {
    partition: i32,
    /// Assigned to this consumer (the others are only known from metadata).
    #[serde(default)]
    desired: bool,
    #[serde(default = "unknown_lag")]
    consumer_lag: i64,
}

fn unknown_lag() -> i64 {
    -1
}

/// What one statistics report says.
pub(super) struct Report {
    pub(super) lags: Vec<PartitionLag>,
    /// `None` for a client without a group.
    pub(super) group: Option<GroupStatistics>,
}

/// The assigned partitions of `statistics`, with their lag where known (the
/// internal partition -1, messages not yet given a partition, is left out),
/// and the group handler's state.
pub(super) fn read(statistics: &[u8]) -> Result<Report, serde_json::Error> {
    let statistics: Statistics = serde_json::from_slice(statistics)?;
    let group = statistics.cgrp;
    let mut lags: Vec<PartitionLag> = statistics
        .topics
        .into_iter()
        .flat_map(|(topic, t)| {
            t.partitions.into_values().filter(|p| p.desired && p.partition >= 0).map(move |p| PartitionLag {
                topic: topic.clone(),
                partition: p.partition,
                records: u64::try_from(p.consumer_lag).ok(),
            })
        })
        .collect();
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(Report { lags, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_read_for_assigned_partitions_and_unknown_when_librdkafka_says_minus_one() {
        let statistics = br#"{
            "name": "g-consumer#consumer-1", "type": "consumer", "ts": 1,
            "brokers": {},
            "topics": {
                "orders": {
                    "topic": "orders", "age": 1, "metadata_age": 1,
                    "partitions": {
                        "0": {"partition": 0, "desired": true, "committed_offset": 40, "hi_offset": 42, "consumer_lag": 2},
                        "1": {"partition": 1, "desired": true, "committed_offset": -1001, "consumer_lag": -1},
                        "2": {"partition": 2, "desired": false, "consumer_lag": 7},
                        "-1": {"partition": -1, "desired": false, "consumer_lag": -1}
                    }
                }
            }
        }"#;
        let report = read(statistics).unwrap();
        assert_eq!(report.group, None);
        assert_eq!(
            report.lags,
            [
                PartitionLag { topic: "orders".into(), partition: 0, records: Some(2) },
                PartitionLag { topic: "orders".into(), partition: 1, records: None },
            ]
        );
        assert!(read(br#"{"name": "producer", "type": "producer"}"#).unwrap().lags.is_empty());
        assert!(read(b"not json").is_err());
    }

    #[test]
    fn the_group_handler_is_settled_only_when_up_and_steady() {
        let report = |state: &str, join_state: &str| {
            let json = format!(
                r#"{{"topics": {{}}, "cgrp": {{"state": "{state}", "stateage": 1200, "join_state": "{join_state}",
                    "rebalance_age": 900, "rebalance_cnt": 3, "rebalance_reason": "group is rebalancing",
                    "assignment_size": 4}}}}"#
            );
            read(json.as_bytes()).unwrap().group.unwrap()
        };
        assert!(report("up", "steady").settled());
        assert!(!report("up", "wait-join").settled());
        assert!(!report("wait-coord", "init").settled());
        assert_eq!(
            report("up", "wait-sync").to_string(),
            "group state up, join state wait-sync, 4 partitions assigned, 3 rebalances, the last: group is rebalancing"
        );
    }
}
