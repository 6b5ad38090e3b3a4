//! The order service as the console uses it: an order's state and history
//! (its query), placing an order (its command), and the link to each
//! service's own query for one order.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(3);
/// The twin waits for five services, each up to its own call timeout (5 s).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Products of the stock service's catalogue (migrations/stock).
const SKUS: [&str; 8] = ["SKU-001", "SKU-002", "SKU-003", "SKU-004", "SKU-005", "SKU-006", "SKU-007", "SKU-008"];

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HistoryEntry {
    pub from_status: Option<String>,
    pub to_status: String,
    pub at: String,
    pub message_type: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderState {
    pub status: String,
    pub customer_id: String,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryLink {
    pub service: &'static str,
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderServiceError {
    #[error("the order service did not answer: {0}")]
    Unreachable(String),
    #[error("the order service answered {status}: {body}")]
    Refused { status: u16, body: String },
}

#[derive(Clone)]
pub struct OrderService {
    http: reqwest::Client,
    url: String,
}

/// An order placed from the console, as the order service accepted it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    pub order_id: Uuid,
    pub status: String,
}

impl OrderService {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_else(|_| reqwest::Client::new());
        Self { http, url: url.to_owned() }
    }

    /// The order's state, or `None` if the order service does not know it.
    pub async fn state(&self, order: Uuid) -> Result<Option<OrderState>, OrderServiceError> {
        let response = self
            .http
            .get(format!("{}/orders/{order}", self.url))
            .send()
            .await
            .map_err(|e| OrderServiceError::Unreachable(e.to_string()))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => response.json().await.map(Some).map_err(|e| OrderServiceError::Unreachable(e.to_string())),
            status => Err(OrderServiceError::Refused { status, body: response.text().await.unwrap_or_default() }),
        }
    }

    /// Places one order of one to three products, paid by card.
    pub async fn place(&self) -> Result<Placed, OrderServiceError> {
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&order_body())
            .send()
            .await
            .map_err(|e| OrderServiceError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 202 {
            return Err(OrderServiceError::Refused { status, body: response.text().await.unwrap_or_default() });
        }
        response.json().await.map_err(|e| OrderServiceError::Unreachable(e.to_string()))
    }

    /// Places one order through the synchronous twin (`POST /orders/sync`);
    /// every answer, failures included, comes back as the twin gave it.
    pub async fn place_sync(&self) -> Result<(u16, serde_json::Value), OrderServiceError> {
        let response = self
            .http
            .post(format!("{}/orders/sync", self.url))
            .timeout(SYNC_TIMEOUT)
            .json(&order_body())
            .send()
            .await
            .map_err(|e| OrderServiceError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    }
}

/// One to three products, paid by card, for one of ten customers.
fn order_body() -> serde_json::Value {
    static PLACED: AtomicU64 = AtomicU64::new(0);
    let n = PLACED.fetch_add(1, Ordering::Relaxed);
    let lines: Vec<serde_json::Value> = (0..=(n % 3))
        .map(|i| {
            let sku = SKUS[usize::try_from((n + i * 3) % SKUS.len() as u64).unwrap_or(0)];
            serde_json::json!({ "sku": sku, "quantity": 1 + i })
        })
        .collect();
    serde_json::json!({ "customer_id": format!("console-{}", n % 10), "lines": lines, "payment_method": "card" })
}

/// Each service's own query for `order` (loyalty's is by customer).
pub fn query_links(service_urls: &[(&'static str, String)], order: Uuid, customer: Option<&str>) -> Vec<QueryLink> {
    service_urls
        .iter()
        .filter_map(|(service, url)| {
            let path = match *service {
                "order" => format!("/orders/{order}"),
                "stock" => format!("/reservations?order_id={order}"),
                "payment" => format!("/payments?order_id={order}"),
                "shipping" => format!("/shipments?order_id={order}"),
                "email" => format!("/emails?order_id={order}"),
                "loyalty" => format!("/customers/{}/loyalty", customer?),
                _ => return None,
            };
            Some(QueryLink { service, url: format!("{url}{path}") })
        })
        .collect()
}
