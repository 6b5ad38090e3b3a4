//! An artificial processing time, for the course's coupling lesson: each
//! message (and each synchronous call, see the services' `sync_api`) takes
//! at least this long, as the course's widget assumes (payment 50 ms, stock
//! 30, shipping 20, email 10, loyalty 15). Zero, the default, adds nothing.

use crate::consumer::{HandlerError, IncomingMessage, MessageHandler};
use sqlx::PgConnection;
use std::time::Duration;

/// `handler`, taking `delay` longer per message.
pub struct DelayedHandler<H> {
    inner: H,
    delay: Duration,
}

impl<H> DelayedHandler<H> {
    pub fn new(inner: H, delay: Duration) -> Self {
        Self { inner, delay }
    }
}

/// Waits `delay` (nothing when it is zero).
pub async fn take(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl<H: MessageHandler> MessageHandler for DelayedHandler<H> {
    fn message_types(&self) -> &'static [&'static str] {
        self.inner.message_types()
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        // Inside the transaction, as real work would be.
        take(self.delay).await;
        self.inner.handle(conn, message).await
    }
}
