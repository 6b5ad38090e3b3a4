//! The live system map: the nine components and the channels between them,
//! read over and over from what the system already exposes (each service's
//! `/health/ready` and `/metrics`, the brokers' queue depths and consumer
//! group offsets). The latest sample is kept for the page to poll.

use crate::config::{ConsoleConfig, INFRASTRUCTURE, SERVICES};
use crate::scrape::{self, MetricsSample};
use chrono::{DateTime, Utc};
use contracts::Topology;
use dead_letters::{Broker, DeadLetters, Limits};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one broker read may take before the broker is shown down.
const BROKER_ROUND_TRIP: Duration = Duration::from_secs(2);
/// Dead-letter counts change rarely and cost a client per topic: read
/// them at most this often.
const DEAD_LETTER_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ready,
    NotReady,
    Down,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: String,
    pub kind: &'static str,
    pub url: Option<String>,
    pub state: State,
    pub detail: Option<String>,
    pub outbox: Option<OutboxBacklog>,
    pub published_per_second: Option<f64>,
    pub consumed_per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxBacklog {
    pub pending: f64,
    pub oldest_age_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub id: String,
    pub channel: String,
    pub broker: Broker,
    pub kind: &'static str,
    pub from: String,
    pub to: String,
    pub waiting: Option<u64>,
    pub waiting_label: &'static str,
    pub per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterCount {
    pub destination: String,
    pub broker: Broker,
    pub from: String,
    pub pending: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MapSample {
    pub sampled_at: DateTime<Utc>,
    pub components: Vec<Component>,
    pub edges: Vec<Edge>,
    pub dead_letters: Vec<DeadLetterCount>,
    pub problems: Vec<String>,
}

/// The latest sample, shared between the sampler and the routes.
#[derive(Clone, Default)]
pub struct LatestMap(Arc<RwLock<Option<MapSample>>>);

impl LatestMap {
    pub fn get(&self) -> Option<MapSample> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, sample: MapSample) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(sample);
    }
}

/// Which channel a message type consumed by `service` came over: events
/// are named after their topic, commands after their receiver, and the
/// order service receives only replies on its queue.
fn channel_of(service: &str, message_type: &str, topology: &Topology) -> String {
    let prefix = message_type.split_once('.').map_or(message_type, |(p, _)| p);
    match prefix {
        "orders" => topology.orders_topic(),
        "shipments" => topology.shipments_topic(),
        _ if service == "order" => topology.order_replies(),
        _ => format!("{}{service}.commands", topology.namespace()),
    }
}

/// Reads the system over and over, keeping the latest sample.
pub struct MapSampler {
    http: reqwest::Client,
    pool: PgPool,
    config: ConsoleConfig,
    dead_letters: DeadLetters,
    latest: LatestMap,
    previous: BTreeMap<String, (Instant, MetricsSample)>,
    last_dead_letters: Option<(Instant, Vec<DeadLetterCount>)>,
}

impl MapSampler {
    pub fn new(config: ConsoleConfig, pool: PgPool, latest: LatestMap) -> Self {
        let dead_letters = DeadLetters::new(config.amqp_url.expose(), &config.kafka_brokers, config.topology())
            .with_timeout(BROKER_ROUND_TRIP);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, pool, config, dead_letters, latest, previous: BTreeMap::new(), last_dead_letters: None }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.sample_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let sample = self.sample().await;
            self.latest.set(sample);
        }
    }

    async fn sample(&mut self) -> MapSample {
        let topology = self.config.topology();
        let mut problems = Vec::new();
        let services = futures::future::join_all(
            self.config.service_urls.iter().map(|(name, url)| scrape::service(&self.http, name, url)),
        );
        let stale = self.last_dead_letters.as_ref().is_none_or(|(at, _)| at.elapsed() >= DEAD_LETTER_INTERVAL);
        let fresh_dead_letters = async {
            match stale {
                true => Some(self.dead_letter_counts().await),
                false => None,
            }
        };
        let (services, queues, lags, fresh_dead_letters, postgres) = tokio::join!(
            services,
            self.queue_depths(&topology),
            self.consumer_lags(&topology),
            fresh_dead_letters,
            self.postgres()
        );
        if let Some(counts) = fresh_dead_letters {
            self.last_dead_letters = Some((Instant::now(), counts));
        }
        let dead_letters = self.last_dead_letters.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();

        let mut components = Vec::new();
        let mut consumed: BTreeMap<String, f64> = BTreeMap::new();
        let now = Instant::now();
        for ((name, url), scraped) in self.config.service_urls.iter().zip(services) {
            let metrics = scraped.metrics.clone();
            let rates = match (&metrics, self.previous.get(*name)) {
                (Some(current), Some((then, before))) => Some(current.rates_since(before, now.duration_since(*then))),
                _ => None,
            };
            if let Some(current) = metrics.clone() {
                self.previous.insert((*name).to_owned(), (now, current));
            } else {
                self.previous.remove(*name);
            }
            if let Some(rates) = &rates {
                for (message_type, per_second) in &rates.consumed_by_type {
                    *consumed.entry(format!("{}:{name}", channel_of(name, message_type, &topology))).or_default() +=
                        per_second;
                }
            }
            components.push(Component {
                name: (*name).to_owned(),
                kind: "service",
                url: Some(url.clone()),
                state: scraped.state,
                detail: scraped.detail,
                outbox: metrics.as_ref().and_then(|m| {
                    Some(OutboxBacklog {
                        pending: m.outbox_pending?,
                        oldest_age_seconds: m.outbox_oldest_age.unwrap_or(0.0),
                    })
                }),
                published_per_second: rates.as_ref().map(|r| r.published),
                consumed_per_second: rates.as_ref().map(|r| r.consumed_by_type.values().sum()),
            });
        }
        let infrastructure = [
            ("postgres", postgres),
            ("rabbitmq", queues.as_ref().map(|_| ()).map_err(Clone::clone)),
            ("kafka", lags.as_ref().map(|_| ()).map_err(Clone::clone)),
        ];
        debug_assert_eq!(infrastructure.len(), INFRASTRUCTURE.len());
        for (name, reachable) in infrastructure {
            if let Err(e) = &reachable {
                problems.push(format!("{name}: {e}"));
            }
            components.push(Component {
                name: name.to_owned(),
                kind: "infrastructure",
                url: None,
                state: if reachable.is_ok() { State::Ready } else { State::Down },
                detail: reachable.err(),
                outbox: None,
                published_per_second: None,
                consumed_per_second: None,
            });
        }
        let queues = queues.unwrap_or_default();
        let lags = lags.unwrap_or_default();
        let edges = crate::channels::of(&topology)
            .into_iter()
            .map(|c| {
                let id = format!("{}:{}", c.name, c.to);
                let (waiting, waiting_label) = match c.broker {
                    Broker::Rabbitmq => (queues.get(&c.name).copied(), "ready messages"),
                    Broker::Kafka => (lags.get(&id).copied(), "consumer lag"),
                };
                Edge {
                    per_second: self.previous.contains_key(c.to).then(|| consumed.get(&id).copied().unwrap_or(0.0)),
                    channel: c.name.strip_prefix(topology.namespace()).unwrap_or(&c.name).to_owned(),
                    id: id.strip_prefix(topology.namespace()).unwrap_or(&id).to_owned(),
                    broker: c.broker,
                    kind: c.kind,
                    from: c.from.join(","),
                    to: c.to.to_owned(),
                    waiting,
                    waiting_label,
                }
            })
            .collect();
        debug_assert!(SERVICES.iter().all(|s| self.config.service_url(s).is_some()));
        MapSample { sampled_at: Utc::now(), components, edges, dead_letters, problems }
    }

    async fn postgres(&self) -> Result<(), String> {
        let probe = sqlx::query_scalar!("SELECT 1 AS probe").fetch_one(&self.pool);
        match tokio::time::timeout(BROKER_ROUND_TRIP, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {BROKER_ROUND_TRIP:?}")),
        }
    }

    /// Ready messages per command and reply queue.
    async fn queue_depths(&self, topology: &Topology) -> Result<BTreeMap<String, u64>, String> {
        let queues = topology.command_queues();
        let limits = Limits::new(BROKER_ROUND_TRIP, Some(BROKER_ROUND_TRIP * 2));
        let counts = dead_letters::amqp::counts(self.config.amqp_url.expose(), &queues, limits)
            .await
            .map_err(|e| e.to_string())?;
        Ok(queues.into_iter().zip(counts).collect())
    }

    /// Records each consumer group has yet to commit past, per `topic:service`.
    async fn consumer_lags(&self, topology: &Topology) -> Result<BTreeMap<String, u64>, String> {
        let limits = Limits::new(BROKER_ROUND_TRIP, Some(BROKER_ROUND_TRIP * 2));
        let pairs: Vec<(String, String, &str)> = topology
            .subscriptions()
            .into_iter()
            .flat_map(|(service, topics)| {
                let group = topology.consumer_group(service);
                topics.into_iter().map(move |topic| (group.clone(), topic, service))
            })
            .collect();
        let lags = futures::future::try_join_all(pairs.iter().map(|(group, topic, _)| {
            dead_letters::kafka::unconsumed(&self.config.kafka_brokers, group, topic, limits)
        }))
        .await
        .map_err(|e| e.to_string())?;
        Ok(pairs.into_iter().zip(lags).map(|((_, topic, service), lag)| (format!("{topic}:{service}"), lag)).collect())
    }

    /// Letters waiting in each dead-letter destination (`None`: unknown).
    async fn dead_letter_counts(&self) -> Vec<DeadLetterCount> {
        let topology = self.config.topology();
        let destinations = self.dead_letters.destinations();
        let pending = self.dead_letters.pending(&destinations).await.ok();
        destinations
            .iter()
            .enumerate()
            .map(|(i, d)| DeadLetterCount {
                destination: d.name.strip_prefix(topology.namespace()).unwrap_or(&d.name).to_owned(),
                broker: d.broker,
                from: consumer_of_dead_letters(d, &topology),
                pending: pending.as_ref().and_then(|p| p.get(i)).map(|p| p.pending),
            })
            .collect()
    }
}

/// The service whose consumer dead-letters into `destination`.
fn consumer_of_dead_letters(destination: &dead_letters::Destination, topology: &Topology) -> String {
    match &destination.group {
        Some(group) => group.strip_prefix(topology.namespace()).unwrap_or(group).to_owned(),
        None => {
            let queue = destination.source.strip_prefix(topology.namespace()).unwrap_or(&destination.source);
            queue.split('.').next().unwrap_or(queue).to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumed_message_type_is_counted_on_the_channel_it_came_over() {
        let t = Topology::new("t.");
        assert_eq!(channel_of("email", "orders.OrderPaid", &t), "t.orders");
        assert_eq!(channel_of("order", "shipments.ShipmentScheduled", &t), "t.shipments");
        assert_eq!(channel_of("order", "stock.StockReserved", &t), "t.order.replies");
        assert_eq!(channel_of("stock", "stock.ReserveStock", &t), "t.stock.commands");
    }
}
