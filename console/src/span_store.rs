//! The span table (migrations/console): writes of received spans, the
//! spans of one order's traces, the recent orders, and retention.

use crate::otlp::ReceivedSpan;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// The most spans one journey reads: an order's traces hold about 60; a
/// trace that grew past this (a message replayed in a loop) is cut.
const MAX_SPANS_PER_JOURNEY: i64 = 5_000;

#[derive(Clone)]
pub struct SpanStore {
    pool: PgPool,
}

/// One entry of the recent-orders list.
#[derive(Debug, Clone, Serialize)]
pub struct SeenOrder {
    pub order_id: Uuid,
    pub first_seen: DateTime<Utc>,
    pub services: Vec<String>,
    pub spans: i64,
}

impl SpanStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Writes `spans` (a span already stored is ignored: exporters retry).
    pub async fn insert(&self, spans: &[ReceivedSpan]) -> Result<(), sqlx::Error> {
        if spans.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&ReceivedSpan) -> String| spans.iter().map(f).collect::<Vec<_>>();
        let orders: Vec<Uuid> = {
            let mut ids: Vec<Uuid> = spans.iter().filter_map(|s| s.order_id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, service, name, kind, start_unix_nano,
                                end_unix_nano, is_error, order_id, attributes)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                                  $7::int8[], $8::int8[], $9::bool[], $10::uuid[], $11::jsonb[])
             ON CONFLICT (trace_id, span_id) DO NOTHING",
            &column(|s| s.trace_id.clone()),
            &column(|s| s.span_id.clone()),
            &column(|s| s.parent_span_id.clone()),
            &column(|s| s.service.clone()),
            &column(|s| s.name.clone()),
            &spans.iter().map(|s| s.kind).collect::<Vec<_>>(),
            &spans.iter().map(|s| s.start_unix_nano).collect::<Vec<_>>(),
            &spans.iter().map(|s| s.end_unix_nano).collect::<Vec<_>>(),
            &spans.iter().map(|s| s.is_error).collect::<Vec<_>>(),
            // A span about no order has a NULL element (`as _`: the macros
            // type an array's elements as non-null).
            spans.iter().map(|s| s.order_id).collect::<Vec<_>>() as _,
            &spans.iter().map(|s| serde_json::Value::Object(s.attributes.clone())).collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        if !orders.is_empty() {
            sqlx::query!(
                "INSERT INTO orders_seen (order_id) SELECT * FROM UNNEST($1::uuid[]) ON CONFLICT DO NOTHING",
                &orders,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Whether any span names `order`.
    pub async fn knows_order(&self, order: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM orders_seen WHERE order_id = $1) AS "known!""#, order)
            .fetch_one(&self.pool)
            .await
    }

    /// Every span of every trace that has a span naming `order`, by start.
    pub async fn spans_of_order(&self, order: Uuid) -> Result<Vec<ReceivedSpan>, sqlx::Error> {
        let rows = sqlx::query!(
            "SELECT trace_id, span_id, parent_span_id, service, name, kind, start_unix_nano, end_unix_nano,
                    is_error, order_id, attributes
               FROM spans
              WHERE trace_id IN (SELECT DISTINCT trace_id FROM spans WHERE order_id = $1)
              ORDER BY start_unix_nano, id
              LIMIT $2",
            order,
            MAX_SPANS_PER_JOURNEY,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ReceivedSpan {
                trace_id: row.trace_id,
                span_id: row.span_id,
                parent_span_id: row.parent_span_id,
                service: row.service,
                name: row.name,
                kind: row.kind,
                start_unix_nano: row.start_unix_nano,
                end_unix_nano: row.end_unix_nano,
                is_error: row.is_error,
                order_id: row.order_id,
                attributes: match row.attributes {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                },
            })
            .collect())
    }

    /// The `limit` orders seen last, with the services and spans of each.
    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<SeenOrder>, sqlx::Error> {
        sqlx::query_as!(
            SeenOrder,
            r#"SELECT o.order_id AS "order_id!", o.first_seen AS "first_seen!",
                      COALESCE(array_agg(DISTINCT s.service) FILTER (WHERE s.service IS NOT NULL), '{}')
                          AS "services!",
                      count(s.id) AS "spans!"
                 FROM (SELECT order_id, first_seen FROM orders_seen ORDER BY first_seen DESC LIMIT $1) o
                 LEFT JOIN spans s
                   ON s.trace_id IN (SELECT DISTINCT trace_id FROM spans WHERE order_id = o.order_id)
                GROUP BY o.order_id, o.first_seen
                ORDER BY o.first_seen DESC"#,
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes spans older than `max_age`, then the oldest beyond
    /// `max_spans`, then the orders no span names any more; returns the
    /// spans deleted.
    pub async fn enforce_retention(&self, max_age: Duration, max_spans: i64) -> Result<u64, sqlx::Error> {
        let by_age = sqlx::query!(
            "DELETE FROM spans WHERE received_at < now() - make_interval(secs => $1)",
            max_age.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        // The id below which spans go: the newest `max_spans` are kept.
        let by_count = sqlx::query!(
            "DELETE FROM spans WHERE id <= (SELECT id FROM spans ORDER BY id DESC OFFSET $1 LIMIT 1)",
            max_spans,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if by_age + by_count > 0 {
            sqlx::query!(
                "DELETE FROM orders_seen o WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.order_id = o.order_id)",
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(by_age + by_count)
    }
}
