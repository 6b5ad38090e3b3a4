//! `cargo xtask lesson coupling`: the course's first lesson measured on the
//! real system. The phone call (`POST /orders/sync`, which calls the five
//! services one after another) against the mailbox (`POST /orders`, which
//! commits the order and its messages and answers), with the course
//! widget's processing times: how long the caller is blocked with 1 to 5
//! services, and what happens to orders placed while `email` is down, and
//! after it comes back. Runs on the chaos stack, on a fresh system.

use crate::services::SERVICE_READY_TIMEOUT;
use crate::{Stack, services};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The course widget's processing time per service, in the order the
/// phone call makes its calls.
pub const WIDGET_MS: [(&str, u64); 5] =
    [("stock", 30), ("payment", 50), ("shipping", 20), ("email", 10), ("loyalty", 15)];

#[derive(Debug, Clone, Copy)]
pub struct CouplingOptions {
    /// Orders placed each way to measure blocking.
    pub orders: usize,
    /// Orders placed each way while email is down.
    pub while_down: usize,
}

impl Default for CouplingOptions {
    fn default() -> Self {
        Self { orders: 40, while_down: 10 }
    }
}

/// Runs the lesson and returns the printed report.
pub async fn coupling(stack: &Stack, options: CouplingOptions) -> Result<String> {
    let env_of = |service: &str| delay_env(service).into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    services::start_fresh_system(stack, env_of, SERVICE_READY_TIMEOUT).await?;
    let order_url = stack.service_named("order")?.url();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "The coupling lesson on the real system ({} build, processing times {}):\n",
        services::service_profile(),
        WIDGET_MS.iter().map(|(s, ms)| format!("{s} {ms} ms")).collect::<Vec<_>>().join(", ")
    );

    // 1. Blocking: one order at a time each way, so each wait is the
    // caller's alone.
    let mut sync_answers: Vec<[f64; 5]> = Vec::new();
    let mut sync_total = Vec::new();
    let mut async_total = Vec::new();
    for i in 0..options.orders {
        let started = Instant::now();
        let (status, body) = post(&http, &format!("{order_url}/orders/sync"), &order(i, "blocking")).await?;
        sync_total.push(millis(started));
        if status != 200 {
            bail!("POST /orders/sync answered {status}: {body}");
        }
        sync_answers.push(answered_after(&body)?);
        let started = Instant::now();
        let (status, body) = post(&http, &format!("{order_url}/orders"), &order(i, "blocking")).await?;
        async_total.push(millis(started));
        if status != 202 {
            bail!("POST /orders answered {status}: {body}");
        }
    }
    let _ = writeln!(report, "How long the caller is blocked ({} orders each way, one at a time), ms:", options.orders);
    let _ = writeln!(
        report,
        "{:<30} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "services called", "computed", "sync p50", "sync p99", "async p50", "async p99"
    );
    let mut computed = 0;
    for (n, (service, ms)) in WIDGET_MS.iter().enumerate() {
        computed += ms;
        let mut waits: Vec<f64> = sync_answers.iter().map(|a| a[n]).collect();
        let label = if n == 0 { format!("1 ({service})") } else { format!("{} (+{service})", n + 1) };
        let _ = writeln!(
            report,
            "{:<30} {:>9} {:>9.1} {:>9.1} {:>10.1} {:>10.1}",
            label,
            computed,
            percentile(&mut waits, 0.5),
            percentile(&mut waits, 0.99),
            percentile(&mut async_total, 0.5),
            percentile(&mut async_total, 0.99)
        );
    }
    let _ = writeln!(
        report,
        "{:<30} {:>9} {:>9.1} {:>9.1} {:>10.1} {:>10.1}",
        "whole request, as the client saw it",
        computed,
        percentile(&mut sync_total, 0.5),
        percentile(&mut sync_total, 0.99),
        percentile(&mut async_total, 0.5),
        percentile(&mut async_total, 0.99)
    );
    let _ = writeln!(
        report,
        "(computed: the course's Exercise 2, the sum of the processing times; the mailbox's caller waits for one \
         transaction and its answer, whatever number of services the order will reach)\n"
    );

    // 2. Email down: who accepts, and what happens after it returns.
    let email = stack.service_named("email")?;
    email.kill().await?;
    let mut sync_failed = Vec::new();
    let mut sync_accepted = 0;
    let mut named = std::collections::BTreeSet::new();
    let mut async_accepted = Vec::new();
    for i in 0..options.while_down {
        let (status, body) = post(&http, &format!("{order_url}/orders/sync"), &order(i, "emaildown")).await?;
        match status {
            200 => sync_accepted += 1,
            _ => {
                named.insert(body["error"]["service"].as_str().unwrap_or("?").to_owned());
                sync_failed.push(id_of(&body)?);
            }
        }
        let (status, body) = post(&http, &format!("{order_url}/orders"), &order(i, "emaildown")).await?;
        if status == 202 {
            async_accepted.push(id_of(&body)?);
        }
    }
    let restarted = Instant::now();
    email.spawn(&delay_env("email"))?;
    email.wait_ready(SERVICE_READY_TIMEOUT).await?;
    let email_db = sqlx::PgPool::connect(&stack.postgres_url("email")).await.context("the email database")?;
    let order_db = sqlx::PgPool::connect(&stack.postgres_url("order")).await.context("the order database")?;
    // Caught up when every accepted order has its two e-mails.
    let deadline = Instant::now() + Duration::from_secs(120);
    let caught_up = loop {
        let mailed = orders_with(&email_db, &async_accepted, 2).await?;
        if mailed == async_accepted.len() {
            break Some(restarted.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let async_emails = email_count(&email_db, &async_accepted).await?;
    let async_twice = duplicated(&email_db, &async_accepted).await?;
    let sync_emails = email_count(&email_db, &sync_failed).await?;
    let async_completed = completed(&order_db, &async_accepted).await?;
    let sync_completed = completed(&order_db, &sync_failed).await?;
    let _ = writeln!(report, "With email killed, {} orders placed each way:", options.while_down);
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "", "sync", "async");
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "accepted", sync_accepted, async_accepted.len());
    let failed = format!("{} ({})", sync_failed.len(), named.into_iter().collect::<Vec<_>>().join(", "));
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "failed, naming the service", failed, 0);
    let _ =
        writeln!(report, "{:<44} {:>14} {:>14}", "COMPLETED after email restarted", sync_completed, async_completed);
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "e-mails recorded after the restart", sync_emails, async_emails);
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "e-mails recorded twice", 0, async_twice);
    let caught = caught_up.map_or_else(|| "not within 120 s".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    let _ = writeln!(report, "{:<44} {:>14} {:>14}", "caught up after the restart in", "nothing to", caught);
    let _ = writeln!(
        report,
        "\nThe failed phone calls stay where they stopped (paid and shipped, never e-mailed or credited): the caller \
         was told, and must retry or compensate. The mailbox's orders waited in Kafka for email and completed."
    );
    email_db.close().await;
    order_db.close().await;
    Ok(report)
}

/// Every service gets its widget processing time; the order service none.
fn delay_env(service: &str) -> Vec<(&'static str, &'static str)> {
    let ms = match service {
        "stock" => "30",
        "payment" => "50",
        "shipping" => "20",
        "email" => "10",
        "loyalty" => "15",
        _ => "0",
    };
    vec![("PROCESSING_DELAY_MS", ms)]
}

fn order(i: usize, run: &str) -> Value {
    let sku = format!("SKU-00{}", 1 + i % 8);
    json!({ "customer_id": format!("lesson-{run}-{}", i % 5), "lines": [{"sku": sku, "quantity": 1}], "payment_method": "card" })
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<(u16, Value)> {
    let response = http.post(url).json(body).send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

fn id_of(body: &Value) -> Result<Uuid> {
    body["order_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).with_context(|| format!("no order id in {body}"))
}

/// When each of the five calls answered, from the request's arrival.
fn answered_after(body: &Value) -> Result<[f64; 5]> {
    let steps = body["steps"].as_array().with_context(|| format!("no steps in {body}"))?;
    let mut at = [0.0; 5];
    for (slot, (service, _)) in at.iter_mut().zip(WIDGET_MS) {
        *slot = steps
            .iter()
            .find(|s| s["service"] == service)
            .and_then(|s| s["answered_after_ms"].as_f64())
            .with_context(|| format!("no answer from {service} in {body}"))?;
    }
    Ok(at)
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Exact percentile of a few dozen samples (sorting is enough here; no
/// histogram needed).
fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

async fn orders_with(db: &sqlx::PgPool, orders: &[Uuid], emails: i64) -> Result<usize> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT order_id FROM sent_emails WHERE order_id = ANY($1)
                                GROUP BY order_id HAVING count(*) >= $2) o",
    )
    .bind(orders)
    .bind(emails)
    .fetch_one(db)
    .await?;
    Ok(usize::try_from(n).unwrap_or_default())
}

async fn email_count(db: &sqlx::PgPool, orders: &[Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM sent_emails WHERE order_id = ANY($1)")
        .bind(orders)
        .fetch_one(db)
        .await?)
}

async fn duplicated(db: &sqlx::PgPool, orders: &[Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM sent_emails WHERE order_id = ANY($1)
                                GROUP BY order_id, kind HAVING count(*) > 1) d",
    )
    .bind(orders)
    .fetch_one(db)
    .await?)
}

async fn completed(db: &sqlx::PgPool, orders: &[Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'COMPLETED'")
        .bind(orders)
        .fetch_one(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widget_sums_to_the_course_figure() {
        assert_eq!(WIDGET_MS.iter().map(|(_, ms)| ms).sum::<u64>(), 125);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
