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

struct Loaded {
    skus: HashSet<String>,
    at: Instant,
}

pub struct Catalogue {
    client: reqwest::Client,
    url: String,
    loaded: RwLock<Option<Loaded>>,
}

impl Catalogue {
    pub fn new(stock_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
            url: format!("{}/stock", stock_url.trim_end_matches('/')),
            loaded: RwLock::new(None),
        })
    }

    pub async fn refresh(&self) -> Result<usize, reqwest::Error> {
        let response: CatalogueResponse = self.client.get(&self.url).send().await?.error_for_status()?.json().await?;
        let skus: HashSet<String> = response.products.into_iter().map(|p| p.sku).collect();
        let count = skus.len();
        *self.loaded.write().await = Some(Loaded { skus, at: Instant::now() });
        Ok(count)
    }

    /// Whether `sku` is in the catalogue. An unknown SKU triggers one re-read
    /// (at most every 5 s) in case it was added since.
    pub async fn check(&self, sku: &str) -> SkuCheck {
        let stale = match self.loaded.read().await.as_ref() {
            None => return SkuCheck::NotLoaded,
            Some(l) if l.skus.contains(sku) => return SkuCheck::Known,
            Some(l) => l.at.elapsed() > Duration::from_secs(5),
        };
        if stale {
            let _ = self.refresh().await;
        }
        match self.loaded.read().await.as_ref() {
            Some(l) if l.skus.contains(sku) => SkuCheck::Known,
            _ => SkuCheck::Unknown,
        }
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
