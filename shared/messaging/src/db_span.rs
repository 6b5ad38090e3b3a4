//! Client spans of database transactions, after the OpenTelemetry database
//! conventions, so a trace shows where an order's time goes in PostgreSQL.

use sqlx::PgPool;

/// A span for one transaction on `pool`, named `<operation> <database>`.
pub fn transaction_span(pool: &PgPool, operation: &str) -> tracing::Span {
    let options = pool.connect_options();
    let database = options.get_database().unwrap_or("postgres").to_owned();
    tracing::info_span!(
        "db",
        otel.name = format!("{operation} {database}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.namespace = %database,
        db.operation.name = operation,
        server.address = options.get_host(),
        server.port = options.get_port(),
    )
}
