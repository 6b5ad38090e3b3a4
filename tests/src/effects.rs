//! An `effects` table and a handler that writes to it: the business row of
//! the messaging tests, to count how often each message was applied.

use contracts::MessageContract;
use contracts::catalogue::ReserveStock;
use messaging::{HandlerError, IncomingMessage, MessageHandler};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Creates the `effects` table (one row per applied message) in `pool`.
pub async fn create_table(pool: &PgPool) {
    sqlx::query("CREATE TABLE effects (order_id UUID NOT NULL, message_id UUID NOT NULL)").execute(pool).await.unwrap();
}

/// Records that `message_id` of `order_id` was applied, in the handler's transaction.
pub async fn record(conn: &mut PgConnection, order_id: Uuid, message_id: Uuid) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO effects (order_id, message_id) VALUES ($1, $2)")
        .bind(order_id)
        .bind(message_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every effect, as `(order_id, message_id)`.
pub async fn all(pool: &PgPool) -> Vec<(Uuid, Uuid)> {
    sqlx::query_as("SELECT order_id, message_id FROM effects").fetch_all(pool).await.unwrap()
}

/// How many times a message of `order_id` was applied.
pub async fn of_order(pool: &PgPool, order_id: Uuid) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM effects WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

/// Applies `ReserveStock` messages by recording them, like a real handler's business row.
pub struct ReserveStockRecorder;

impl MessageHandler for ReserveStockRecorder {
    fn message_types(&self) -> &'static [&'static str] {
        &[ReserveStock::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let cmd: ReserveStock = message.decode()?;
        record(conn, cmd.order_id, message.envelope.message_id).await
    }
}
