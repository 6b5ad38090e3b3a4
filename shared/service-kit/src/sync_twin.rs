//! What the services' synchronous endpoints (the course's phone call, see
//! services/order/src/sync_order.rs) share: their database, and the
//! artificial processing time each call takes, as each message does.

use sqlx::PgPool;
use std::time::Duration;

#[derive(Clone)]
pub struct SyncState {
    pub pool: PgPool,
    pub processing_delay: Duration,
}

impl SyncState {
    pub fn new(pool: PgPool, config: &crate::CommonConfig) -> Self {
        Self { pool, processing_delay: config.processing_delay }
    }

    /// The artificial processing time, before the call's transaction.
    pub async fn process(&self) {
        messaging::processing_delay::take(self.processing_delay).await;
    }
}
