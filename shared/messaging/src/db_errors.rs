//! What a database error says about the call that failed: whether trying
//! again can help. Shared by the consumers (retry or dead-letter) and the
//! services' HTTP errors (503 or 500).

/// Whether a database error is about the connection or a conflict rather
/// than about the statement.
pub fn is_transient_db_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 40001/40P01: serialization failure,
            // deadlock; 25P03: session ended idle in a transaction (its
            // client went silent); 53: insufficient resources; 57P0x:
            // server shutting down.
            code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code == "25P03"
                || code.starts_with("53")
                || code.starts_with("57P")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_transient_and_a_missing_row_is_not() {
        assert!(is_transient_db_error(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient_db_error(&sqlx::Error::RowNotFound));
    }
}
