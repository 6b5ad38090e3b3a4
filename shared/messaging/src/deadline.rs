//! Deadlines on database calls. A connection whose peer went silent (a
//! partition that drops packets, a middlebox that forgot the connection, a
//! frozen server) reports no error: a call on it just never returns. Loops
//! that must keep going bound their calls, so silence fails like any lost
//! connection (an I/O error, transient) and they go around again; the
//! connection, dropped mid-call, is closed on release, not pooled (see
//! `service_kit::db::pool`).

use std::future::Future;
use std::time::Duration;

/// Bound on a small query (a count, a claim, a probe) in a work loop.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, or an I/O timeout error if it has not finished within `limit`.
/// `call` may be a single query or a whole piece of database work (a
/// consumer attempt, a relay lane) whose error type wraps sqlx's.
pub async fn within<T, E: From<sqlx::Error>>(
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| Err(timed_out(limit).into()))
}

/// The error of a database call that got no answer within `limit`.
pub fn timed_out(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from the database within {limit:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silence_becomes_a_transient_error() {
        let silent = std::future::pending::<Result<(), sqlx::Error>>();
        let error: sqlx::Error = within(Duration::from_millis(10), silent).await.unwrap_err();
        assert!(crate::db_errors::is_transient_db_error(&error), "{error}");
        assert_eq!(within(Duration::from_secs(1), async { Ok::<_, sqlx::Error>(7) }).await.unwrap(), 7);
    }
}
