//! The five services as the synchronous twin calls them: one HTTP request
//! each, waited for, with the trace context, and every way it can fail told
//! apart (not reachable, no answer in time, an error answer).

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tracing::Instrument;

/// Where each peer is, and how long a call may take.
#[derive(Debug, Clone)]
pub struct SyncPeers {
    http: reqwest::Client,
    urls: PeerUrls,
    timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PeerUrls {
    pub stock: String,
    pub payment: String,
    pub shipping: String,
    pub email: String,
    pub loyalty: String,
}

/// The five peers, in the order the twin calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Stock,
    Payment,
    Shipping,
    Email,
    Loyalty,
}

impl Peer {
    pub const ALL: [Peer; 5] = [Peer::Stock, Peer::Payment, Peer::Shipping, Peer::Email, Peer::Loyalty];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Stock => "stock",
            Peer::Payment => "payment",
            Peer::Shipping => "shipping",
            Peer::Email => "email",
            Peer::Loyalty => "loyalty",
        }
    }
}

/// How a call failed: the course's "not reached" service, told apart.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{peer} is not reachable: {reason}")]
    Unreachable { peer: &'static str, reason: String },
    #[error("{peer} did not answer within {timeout:?}")]
    TimedOut { peer: &'static str, timeout: Duration },
    #[error("{peer} answered {status}: {body}")]
    Failed { peer: &'static str, status: u16, body: String },
}

impl CallError {
    pub fn peer(&self) -> &'static str {
        match self {
            CallError::Unreachable { peer, .. } | CallError::TimedOut { peer, .. } | CallError::Failed { peer, .. } => {
                peer
            }
        }
    }
}

impl SyncPeers {
    pub fn new(urls: PeerUrls, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self { http: reqwest::Client::builder().timeout(timeout).build()?, urls, timeout })
    }

    fn url(&self, peer: Peer) -> &str {
        match peer {
            Peer::Stock => &self.urls.stock,
            Peer::Payment => &self.urls.payment,
            Peer::Shipping => &self.urls.shipping,
            Peer::Email => &self.urls.email,
            Peer::Loyalty => &self.urls.loyalty,
        }
    }

    /// `POST <peer><path>` with `body`, waiting for the answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        peer: Peer,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.url(peer));
        // A client span whose context travels in `traceparent`, so the
        // peer's server span joins the order's trace.
        let span = tracing::info_span!(
            "http client",
            otel.name = format!("POST {path}"),
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %url,
            server.name = peer.name(),
            http.response.status_code = tracing::field::Empty,
        );
        let name = peer.name();
        async {
            let mut request = self.http.post(&url).json(body);
            for (header, value) in telemetry::current_trace_headers().into_pairs() {
                request = request.header(header, value);
            }
            let response = request.send().await.map_err(|e| describe(name, &e, self.timeout))?;
            let status = response.status().as_u16();
            tracing::Span::current().record("http.response.status_code", status);
            if status != 200 {
                let body = response.text().await.unwrap_or_default();
                return Err(CallError::Failed { peer: name, status, body });
            }
            response.json::<T>().await.map_err(|e| describe(name, &e, self.timeout))
        }
        .instrument(span)
        .await
    }
}

fn describe(peer: &'static str, error: &reqwest::Error, timeout: Duration) -> CallError {
    if error.is_timeout() {
        CallError::TimedOut { peer, timeout }
    } else {
        CallError::Unreachable { peer, reason: error.to_string() }
    }
}
