//! AMQP header values as JSON, so `x-death` (an array of tables) shows as
//! what it is rather than disappearing like a non-text header would.

use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};

pub(crate) fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::Timestamp(t) => timestamp_json(*t),
        AMQPValue::FieldTable(t) => Value::Object(table_json(t)),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

pub(crate) fn table_json(table: &FieldTable) -> Map<String, Value> {
    table.inner().iter().map(|(k, v)| (k.as_str().to_owned(), amqp_json(v))).collect()
}

/// Seconds since the epoch as RFC 3339, as the broker means them.
pub(crate) fn timestamp_json(seconds: u64) -> Value {
    match i64::try_from(seconds).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0)) {
        Some(t) => json!(t.to_rfc3339()),
        None => json!(seconds),
    }
}

/// A scalar header value as text.
pub(crate) fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_and_arrays_become_json() {
        let mut death = FieldTable::default();
        death.insert("queue".into(), AMQPValue::LongString("stock.commands".into()));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("time".into(), AMQPValue::Timestamp(0));
        let value = AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into());
        assert_eq!(
            amqp_json(&value),
            json!([{"queue": "stock.commands", "count": 1, "time": "1970-01-01T00:00:00+00:00"}])
        );
        assert_eq!(as_text(&json!(3)).as_deref(), Some("3"));
    }
}
