//! The course's coupling lesson as a panel: N orders placed one at a time
//! through the phone call (`POST /orders/sync`) and through the mailbox
//! (`POST /orders`), and how long the caller was blocked each way, on the
//! system as it is now (kill `email` first to see which one accepts).
//! `cargo xtask lesson coupling` runs the full experiment on a fresh system.

use crate::order_service::OrderService;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

pub const MAX_ORDERS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouplingRequest {
    pub orders: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct ModeFigures {
    pub accepted: usize,
    pub failed: usize,
    /// The service each failed phone call named, and how often.
    pub failed_at: BTreeMap<String, usize>,
    pub blocked_p50_ms: Option<f64>,
    pub blocked_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CouplingResult {
    pub orders: usize,
    pub sync: ModeFigures,
    #[serde(rename = "async")]
    pub mailbox: ModeFigures,
    /// Median time until each service's answer, for the accepted phone calls.
    pub sync_answered_p50_ms: Vec<(String, f64)>,
}

pub async fn run(orders: &OrderService, count: usize) -> CouplingResult {
    let (mut sync, mut mailbox) = (ModeFigures::default(), ModeFigures::default());
    let (mut sync_blocked, mut mailbox_blocked) = (Vec::new(), Vec::new());
    let mut answered: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
    for _ in 0..count {
        let started = Instant::now();
        let placed = orders.place_sync().await;
        sync_blocked.push(started.elapsed().as_secs_f64() * 1000.0);
        match placed {
            Ok((200, body)) => {
                sync.accepted += 1;
                for (i, step) in body["steps"].as_array().into_iter().flatten().enumerate() {
                    let (Some(service), Some(at)) = (step["service"].as_str(), step["answered_after_ms"].as_f64())
                    else {
                        continue;
                    };
                    answered.entry(service.to_owned()).or_insert_with(|| (i, Vec::new())).1.push(at);
                }
            }
            Ok((_, body)) => {
                sync.failed += 1;
                let service = body["error"]["service"].as_str().unwrap_or("order").to_owned();
                *sync.failed_at.entry(service).or_default() += 1;
            }
            Err(_) => {
                sync.failed += 1;
                *sync.failed_at.entry("order".to_owned()).or_default() += 1;
            }
        }
        let started = Instant::now();
        let placed = orders.place().await;
        mailbox_blocked.push(started.elapsed().as_secs_f64() * 1000.0);
        match placed {
            Ok(_) => mailbox.accepted += 1,
            Err(_) => mailbox.failed += 1,
        }
    }
    (sync.blocked_p50_ms, sync.blocked_p99_ms) =
        (percentile(&mut sync_blocked, 0.5), percentile(&mut sync_blocked, 0.99));
    (mailbox.blocked_p50_ms, mailbox.blocked_p99_ms) =
        (percentile(&mut mailbox_blocked, 0.5), percentile(&mut mailbox_blocked, 0.99));
    let mut by_position: Vec<(usize, String, f64)> = answered
        .into_iter()
        .filter_map(|(service, (position, mut at))| Some((position, service, percentile(&mut at, 0.5)?)))
        .collect();
    by_position.sort_by_key(|(position, _, _)| *position);
    CouplingResult {
        orders: count,
        sync,
        mailbox,
        sync_answered_p50_ms: by_position.into_iter().map(|(_, s, at)| (s, at)).collect(),
    }
}

/// Exact percentile of at most [`MAX_ORDERS`] samples: sorting is enough.
fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    let last = samples.len().checked_sub(1)?;
    samples.get((last as f64 * p).round() as usize).copied()
}
