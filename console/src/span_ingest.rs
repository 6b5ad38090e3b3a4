//! Spans on their way from an OTLP export to the span store. The export is
//! answered as soon as its spans are queued: a slow or unreachable store
//! never holds a service's exporter, and a full queue drops the export at
//! once (counted) instead of making it wait.

use crate::otlp::ReceivedSpan;
use crate::span_store::SpanStore;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Exports queued for the store; each holds up to the exporter's batch
/// (512 spans by default).
const QUEUED_EXPORTS: usize = 256;
/// Exports written in one transaction when they queue up.
const EXPORTS_PER_WRITE: usize = 32;
/// How long one write may take before its spans are dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SpanIngest {
    queue: mpsc::Sender<Vec<ReceivedSpan>>,
}

pub struct SpanWriter {
    queue: mpsc::Receiver<Vec<ReceivedSpan>>,
    store: SpanStore,
}

pub fn channel(store: SpanStore) -> (SpanIngest, SpanWriter) {
    let (tx, rx) = mpsc::channel(QUEUED_EXPORTS);
    (SpanIngest { queue: tx }, SpanWriter { queue: rx, store })
}

impl SpanIngest {
    /// Queues `spans`; false if the queue is full (they are dropped).
    pub fn offer(&self, spans: Vec<ReceivedSpan>) -> bool {
        let count = spans.len() as u64;
        metrics::counter!("console_spans_received_total").increment(count);
        match self.queue.try_send(spans) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("console_spans_dropped_total", "reason" => "queue_full").increment(count);
                false
            }
        }
    }
}

impl SpanWriter {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::new();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => 0,
                n = self.queue.recv_many(&mut batch, EXPORTS_PER_WRITE) => n,
            };
            if received == 0 {
                // Shutting down (or every sender gone): store what is queued.
                self.queue.close();
                while self.queue.recv_many(&mut batch, EXPORTS_PER_WRITE).await > 0 {
                    self.write(std::mem::take(&mut batch)).await;
                }
                return;
            }
            self.write(std::mem::take(&mut batch)).await;
        }
    }

    async fn write(&self, exports: Vec<Vec<ReceivedSpan>>) {
        let spans: Vec<ReceivedSpan> = exports.into_iter().flatten().collect();
        let count = spans.len() as u64;
        match tokio::time::timeout(WRITE_TIMEOUT, self.store.insert(&spans)).await {
            Ok(Ok(())) => metrics::counter!("console_spans_stored_total").increment(count),
            Ok(Err(e)) => {
                metrics::counter!("console_spans_dropped_total", "reason" => "store_error").increment(count);
                tracing::warn!(error = %e, spans = count, "spans dropped: the span store refused them");
            }
            Err(_) => {
                metrics::counter!("console_spans_dropped_total", "reason" => "store_timeout").increment(count);
                tracing::warn!(spans = count, "spans dropped: the span store did not answer within {WRITE_TIMEOUT:?}");
            }
        }
    }
}
