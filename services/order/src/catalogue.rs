//! The SKUs `POST /orders` accepts, read from the stock service's catalogue
//! with an HTTP query and kept in memory. Placing an order never waits on
//! stock being up: with no catalogue loaded yet, any well-formed SKU is
//! accepted and stock rejects what it does not know.

use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuCheck {
    Known,
    Unknown,
    /// No catalogue could be read yet.
    NotLoaded,
}

#[derive(Deserialize)]
struct CatalogueResponse {
    products: Vec<Product>,
}

#[derive(Deserialize)]
struct Product {
    sku: String,
}

pub struct Catalogue {
    client: reqwest::Client,
    url: String,
    loaded: RwLock<Option<HashSet<String>>>,
    /// When a request last re-read the catalogue for an unknown SKU, whether
    /// that worked or not: with stock down, requests must not each wait for
    /// their own failing read.
    last_reread: std::sync::Mutex<Option<Instant>>,
}

/// How often an unknown SKU may trigger a re-read.
const REREAD_INTERVAL: Duration = Duration::from_secs(5);

impl Catalogue {
    pub fn new(stock_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
            url: format!("{}/stock", stock_url.trim_end_matches('/')),
            loaded: RwLock::new(None),
            last_reread: std::sync::Mutex::new(None),
        })
    }

    pub async fn refresh(&self) -> Result<usize, reqwest::Error> {
        // A client span whose context travels in `traceparent`: the stock
        // service's server span joins the trace of the request that asked.
        let span = tracing::info_span!(
            "http client",
            otel.name = "GET",
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %self.url,
            http.response.status_code = tracing::field::Empty,
        );
        let request = async {
            let mut request = self.client.get(&self.url);
            for (header, value) in telemetry::current_trace_headers().into_pairs() {
                request = request.header(header, value);
            }
            let response = request.send().await?;
            tracing::Span::current().record("http.response.status_code", response.status().as_u16());
            response.error_for_status()?.json::<CatalogueResponse>().await
        };
        let response = request.instrument(span).await?;
        let skus: HashSet<String> = response.products.into_iter().map(|p| p.sku).collect();
        let count = skus.len();
        *self.loaded.write().await = Some(skus);
        Ok(count)
    }

    /// Whether `sku` is in the catalogue. An unknown SKU triggers a re-read
    /// in case it was added since, by one request every [`REREAD_INTERVAL`]
    /// at most.
    pub async fn check(&self, sku: &str) -> SkuCheck {
        match self.loaded.read().await.as_ref() {
            None => return SkuCheck::NotLoaded,
            Some(skus) if skus.contains(sku) => return SkuCheck::Known,
            Some(_) => {}
        }
        if self.claim_reread() {
            let _ = self.refresh().await;
        }
        match self.loaded.read().await.as_ref() {
            Some(skus) if skus.contains(sku) => SkuCheck::Known,
            _ => SkuCheck::Unknown,
        }
    }

    fn claim_reread(&self) -> bool {
        let mut last = self.last_reread.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < REREAD_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Re-reads the catalogue every 30 s (every 2 s until the first success).
    pub async fn refresh_periodically(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let delay = match self.refresh().await {
                Ok(count) => {
                    tracing::debug!(count, "catalogue refreshed");
                    Duration::from_secs(30)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "catalogue not readable");
                    if self.loaded.read().await.is_some() { Duration::from_secs(30) } else { Duration::from_secs(2) }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// With stock down, one request in each interval tries the re-read; the
    /// others answer from what is loaded without waiting.
    #[tokio::test]
    async fn an_unknown_sku_rereads_the_catalogue_once_per_interval() {
        // Nothing listens on port 9 here: every read fails at once.
        let catalogue = Catalogue::new("http://127.0.0.1:9").unwrap();
        *catalogue.loaded.write().await = Some(HashSet::from(["SKU-001".to_owned()]));
        assert_eq!(catalogue.check("SKU-001").await, SkuCheck::Known);
        assert_eq!(catalogue.check("SKU-NEW").await, SkuCheck::Unknown);
        assert!(catalogue.last_reread.lock().unwrap().is_some(), "the first unknown SKU tried a re-read");
        assert!(!catalogue.claim_reread(), "a failed re-read still counts for the interval");
    }
}
