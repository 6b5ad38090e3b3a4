//! An outbox row rebuilt from the text values of its pgoutput insert.

use crate::outbox_publisher::OutboxRow;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Builds the row to publish. A value that does not parse still yields a
/// row (its envelope left null) as long as its id is known: publishing it
/// then fails as corrupt and it is parked like any refused row, visible
/// instead of silently skipped. Without an id nothing can be done with it.
pub(crate) fn outbox_row(values: &HashMap<&str, Option<&str>>) -> Result<OutboxRow, String> {
    let text =
        |column: &str| values.get(column).copied().flatten().ok_or_else(|| format!("column {column} is missing"));
    let id: i64 = text("id")?.parse().map_err(|e| format!("id: {e}"))?;
    let mut row = OutboxRow {
        id,
        transport: String::new(),
        destination: String::new(),
        partition_key: String::new(),
        envelope: serde_json::Value::Null,
        payload: serde_json::Value::Null,
        created_at: Utc::now(),
        refusals: 0,
        lane: 0,
    };
    let parsed = (|| -> Result<(), String> {
        row.transport = text("transport")?.to_owned();
        row.destination = text("destination")?.to_owned();
        row.partition_key = text("partition_key")?.to_owned();
        row.lane = text("lane")?.parse().map_err(|e| format!("lane: {e}"))?;
        row.payload = serde_json::from_str(text("payload")?).map_err(|e| format!("payload: {e}"))?;
        row.created_at = timestamp(text("created_at")?)?;
        row.envelope = serde_json::from_str(text("envelope")?).map_err(|e| format!("envelope: {e}"))?;
        Ok(())
    })();
    if let Err(reason) = parsed {
        tracing::error!(outbox_id = id, %reason, "outbox insert does not decode; it will be parked as corrupt");
        row.envelope = serde_json::Value::Null;
    }
    Ok(row)
}

/// A `timestamptz` in PostgreSQL's text output (DateStyle ISO), with the
/// offset of the server's TimeZone: `2026-12-06 21:33:35.123456+00`.
fn timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("created_at {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(envelope: &'static str) -> HashMap<&'static str, Option<&'static str>> {
        HashMap::from([
            ("id", Some("12")),
            ("transport", Some("kafka")),
            ("destination", Some("orders")),
            ("partition_key", Some("o-1")),
            ("lane", Some("3")),
            ("payload", Some(r#"{"a": 1}"#)),
            ("created_at", Some("2026-12-06 21:33:35.123456+05:30")),
            ("envelope", Some(envelope)),
        ])
    }

    #[test]
    fn text_values_become_the_row_and_the_offset_is_honoured() {
        let row = outbox_row(&values("{}")).unwrap();
        assert_eq!((row.id, row.destination.as_str(), row.payload["a"].as_i64(), row.lane), (12, "orders", Some(1), 3));
        assert_eq!(row.created_at.to_rfc3339(), "2026-12-06T16:03:35.123456+00:00");
        assert_eq!(timestamp("2026-12-06 21:33:35+00").unwrap().to_rfc3339(), "2026-12-06T21:33:35+00:00");
    }

    #[test]
    fn a_row_that_does_not_decode_is_kept_to_be_parked_and_one_without_id_is_refused() {
        let row = outbox_row(&values("{not json")).unwrap();
        assert!(row.envelope().is_err(), "publishing it must fail as corrupt");
        let mut no_id = values("{}");
        no_id.remove("id");
        assert!(outbox_row(&no_id).is_err());
    }
}
