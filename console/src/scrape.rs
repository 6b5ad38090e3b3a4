//! One service as the map sees it: its readiness (`/health/ready`) and
//! the few figures of its `/metrics` the map draws.

use crate::system_map::State;
use prometheus_parse::{Scrape, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ScrapedService {
    pub state: State,
    pub detail: Option<String>,
    pub metrics: Option<MetricsSample>,
}

/// The figures of one `/metrics` read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSample {
    pub outbox_pending: Option<f64>,
    pub outbox_oldest_age: Option<f64>,
    /// `outbox_published_total`, all destinations.
    pub published: f64,
    /// `messages_consumed_total` by message type, all outcomes.
    pub consumed_by_type: BTreeMap<String, f64>,
}

/// Messages per second between two reads of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub published: f64,
    pub consumed_by_type: BTreeMap<String, f64>,
}

impl MetricsSample {
    /// Per-second rates since `before`, read `elapsed` earlier. A counter
    /// that went down (the service restarted) counts from zero.
    pub fn rates_since(&self, before: &MetricsSample, elapsed: Duration) -> Rates {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let rate = |now: f64, then: f64| if now >= then { (now - then) / seconds } else { now / seconds };
        Rates {
            published: rate(self.published, before.published),
            consumed_by_type: self
                .consumed_by_type
                .iter()
                .map(|(t, now)| (t.clone(), rate(*now, before.consumed_by_type.get(t).copied().unwrap_or(0.0))))
                .collect(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).map_err(|e| e.to_string())?;
        let mut sample = MetricsSample::default();
        for s in scrape.samples {
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => continue,
            };
            match s.metric.as_str() {
                "outbox_pending_messages" => *sample.outbox_pending.get_or_insert(0.0) += value,
                "outbox_oldest_pending_age_seconds" => {
                    sample.outbox_oldest_age = Some(sample.outbox_oldest_age.unwrap_or(0.0).max(value));
                }
                "outbox_published_total" => sample.published += value,
                "messages_consumed_total" => {
                    let message_type = s.labels.get("message_type").unwrap_or("unknown").to_owned();
                    *sample.consumed_by_type.entry(message_type).or_default() += value;
                }
                _ => {}
            }
        }
        Ok(sample)
    }
}

/// Reads `name`'s readiness and metrics at `url`; a service that does not
/// answer is down, one that answers 503 is not ready (with the components
/// that are not, from its readiness body).
pub async fn service(http: &reqwest::Client, name: &str, url: &str) -> ScrapedService {
    let ready = http.get(format!("{url}/health/ready")).send().await;
    let (state, detail) = match ready {
        Err(e) => (State::Down, Some(describe(&e))),
        Ok(response) if response.status().is_success() => (State::Ready, None),
        Ok(response) => {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (State::NotReady, Some(not_ready_detail(&body).unwrap_or_else(|| format!("{name} answered {status}"))))
        }
    };
    let metrics = match state {
        State::Down => None,
        _ => match http.get(format!("{url}/metrics")).send().await {
            Ok(response) => response.text().await.ok().and_then(|t| MetricsSample::parse(&t).ok()),
            Err(_) => None,
        },
    };
    ScrapedService { state, detail, metrics }
}

/// "kafka-consumer:email: replacing a stuck …; amqp: connecting" from a
/// readiness body's components that are not ready.
fn not_ready_detail(body: &serde_json::Value) -> Option<String> {
    let components = body.get("components")?.as_object()?;
    let reasons: Vec<String> = components
        .iter()
        .filter(|(_, c)| c.get("ready").and_then(serde_json::Value::as_bool) == Some(false))
        .map(|(name, c)| match c.get("detail").and_then(serde_json::Value::as_str) {
            Some(detail) => format!("{name}: {detail}"),
            None => name.clone(),
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "not listening (connection refused)".to_owned()
    } else if error.is_timeout() {
        "no answer within 1 s".to_owned()
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE outbox_pending_messages gauge
outbox_pending_messages 3
# TYPE outbox_oldest_pending_age_seconds gauge
outbox_oldest_pending_age_seconds 0.5
# TYPE outbox_published_total counter
outbox_published_total{transport=\"amqp\",destination=\"stock.commands\"} 10
outbox_published_total{transport=\"kafka\",destination=\"orders\"} 20
# TYPE messages_consumed_total counter
messages_consumed_total{consumer=\"email\",message_type=\"orders.OrderPaid\",outcome=\"processed\"} 4
messages_consumed_total{consumer=\"email\",message_type=\"orders.OrderPaid\",outcome=\"duplicate\"} 1
";

    #[test]
    fn the_figures_the_map_draws_are_read_and_turned_into_rates() {
        let now = MetricsSample::parse(METRICS).unwrap();
        assert_eq!((now.outbox_pending, now.outbox_oldest_age, now.published), (Some(3.0), Some(0.5), 30.0));
        assert_eq!(now.consumed_by_type["orders.OrderPaid"], 5.0);
        let before = MetricsSample { published: 10.0, ..MetricsSample::default() };
        let rates = now.rates_since(&before, Duration::from_secs(2));
        assert_eq!((rates.published, rates.consumed_by_type["orders.OrderPaid"]), (10.0, 2.5));
        let restarted = MetricsSample { published: 4.0, ..MetricsSample::default() };
        assert_eq!(restarted.rates_since(&now, Duration::from_secs(2)).published, 2.0);
    }

    #[test]
    fn a_readiness_body_names_what_is_not_ready() {
        let body = serde_json::json!({"components": {"db": {"ready": true}, "amqp": {"ready": false, "detail": "connecting"}}});
        assert_eq!(not_ready_detail(&body).as_deref(), Some("amqp: connecting"));
    }
}
