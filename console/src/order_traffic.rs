//! A stream of orders placed from the page: N per second for M seconds,
//! at a fixed rate (an order that takes long does not delay the next), one
//! stream at a time, bounded so a click cannot flood the machine.

use crate::order_service::OrderService;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const MAX_PER_SECOND: f64 = 50.0;
pub const MAX_SECONDS: u64 = 600;
/// Orders in flight at once; beyond it a tick is skipped and counted failed.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    pub per_second: f64,
    pub seconds: u64,
}

impl TrafficRequest {
    /// The request's problem, naming the field, if any.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(self.per_second > 0.0 && self.per_second <= MAX_PER_SECOND) {
            return Some(("per_second", format!("must be above 0 and at most {MAX_PER_SECOND}")));
        }
        if !(1..=MAX_SECONDS).contains(&self.seconds) {
            return Some(("seconds", format!("must be from 1 to {MAX_SECONDS}")));
        }
        None
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficStatus {
    pub running: bool,
    pub per_second: f64,
    pub seconds: u64,
    pub target: u64,
    pub placed: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Default)]
pub struct OrderTraffic {
    status: Arc<Mutex<TrafficStatus>>,
    stop: Arc<Mutex<Option<CancellationToken>>>,
}

impl OrderTraffic {
    pub fn status(&self) -> TrafficStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts a stream, replacing any running one.
    pub fn start(&self, request: TrafficRequest, orders: OrderService, shutdown: &CancellationToken) -> TrafficStatus {
        self.stop();
        let token = shutdown.child_token();
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        let target = (request.per_second * request.seconds as f64).round() as u64;
        let started = TrafficStatus {
            running: true,
            per_second: request.per_second,
            seconds: request.seconds,
            target,
            ..TrafficStatus::default()
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = started.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / request.per_second));
            let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
            for _ in 0..target {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    record(&status, Err("too many orders in flight; the order service is slower than the rate".into()));
                    continue;
                };
                let (orders, status) = (orders.clone(), status.clone());
                tokio::spawn(async move {
                    record(&status, orders.place().await.map(|_| ()).map_err(|e| e.to_string()));
                    drop(permit);
                });
            }
            // Wait for the last orders in flight before saying it is done.
            let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
            status.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        });
        started
    }

    pub fn stop(&self) {
        if let Some(token) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            token.cancel();
        }
    }
}

fn record(status: &Mutex<TrafficStatus>, result: Result<(), String>) {
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(()) => status.placed += 1,
        Err(e) => {
            status.failed += 1;
            status.last_error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_bounded_in_rate_and_length() {
        let ok = TrafficRequest { per_second: 5.0, seconds: 30 };
        assert!(ok.problem().is_none());
        assert_eq!(TrafficRequest { per_second: 0.0, ..ok }.problem().unwrap().0, "per_second");
        assert_eq!(TrafficRequest { per_second: 500.0, ..ok }.problem().unwrap().0, "per_second");
        assert_eq!(TrafficRequest { seconds: 0, ..ok }.problem().unwrap().0, "seconds");
        assert_eq!(TrafficRequest { per_second: f64::NAN, ..ok }.problem().unwrap().0, "per_second");
    }
}
