//! The few fields of librdkafka's statistics JSON the lag gauge needs.

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

/// The assigned partitions of `statistics`, with their lag where known. The
/// internal partition -1 (messages not yet given a partition) is left out.
pub(super) fn partition_lags(statistics: &[u8]) -> Result<Vec<PartitionLag>, serde_json::Error> {
    let statistics: Statistics = serde_json::from_slice(statistics)?;
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
    Ok(lags)
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
        let lags = partition_lags(statistics).unwrap();
        assert_eq!(
            lags,
            [
                PartitionLag { topic: "orders".into(), partition: 0, records: Some(2) },
                PartitionLag { topic: "orders".into(), partition: 1, records: None },
            ]
        );
        assert!(partition_lags(br#"{"name": "producer", "type": "producer"}"#).unwrap().is_empty());
        assert!(partition_lags(b"not json").is_err());
    }
}
