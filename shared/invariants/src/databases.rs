//! Where the six service databases are, and connections to them.

use crate::CheckError;
use messaging::secret::redact_url;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::fmt;
use std::time::Duration;

/// The server of the local runner's development stack.
pub const DEV_SERVER_URL: &str = "postgres://postgres@127.0.0.1:21432";

/// The services, in the order their databases are listed everywhere.
pub const SERVICES: [&str; 6] = ["order", "stock", "payment", "shipping", "email", "loyalty"];

/// One `T` per service. `Debug` by hand for each `T`: URLs hold passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct PerService<T> {
    pub order: T,
    pub stock: T,
    pub payment: T,
    pub shipping: T,
    pub email: T,
    pub loyalty: T,
}

impl<T> PerService<T> {
    /// `(service, value)` for every service, in [`SERVICES`] order.
    pub fn iter(&self) -> [(&'static str, &T); 6] {
        [
            ("order", &self.order),
            ("stock", &self.stock),
            ("payment", &self.payment),
            ("shipping", &self.shipping),
            ("email", &self.email),
            ("loyalty", &self.loyalty),
        ]
    }
}

/// The URL of each service's database.
pub type DatabaseUrls = PerService<String>;

/// A small pool per service database.
pub type Databases = PerService<PgPool>;

impl DatabaseUrls {
    /// `<server_url>/<database_name(service)>` for every service.
    pub fn on_server(server_url: &str, database_name: impl Fn(&str) -> String) -> Self {
        let url = |service: &str| format!("{}/{}", server_url.trim_end_matches('/'), database_name(service));
        Self {
            order: url("order"),
            stock: url("stock"),
            payment: url("payment"),
            shipping: url("shipping"),
            email: url("email"),
            loyalty: url("loyalty"),
        }
    }

    /// The development stack: databases named after their services.
    pub fn dev() -> Self {
        Self::on_server(DEV_SERVER_URL, str::to_owned)
    }
}

impl fmt::Debug for DatabaseUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut urls = f.debug_struct("DatabaseUrls");
        for (service, url) in self.iter() {
            urls.field(service, &redact_url(url));
        }
        urls.finish()
    }
}

impl fmt::Debug for Databases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pools = f.debug_struct("Databases");
        for (service, pool) in self.iter() {
            pools.field(service, pool);
        }
        pools.finish()
    }
}

impl Databases {
    /// Connects to all six; the first one that does not answer is named in the error.
    pub async fn connect(urls: &DatabaseUrls) -> Result<Self, CheckError> {
        Ok(Self {
            order: connect("order", &urls.order).await?,
            stock: connect("stock", &urls.stock).await?,
            payment: connect("payment", &urls.payment).await?,
            shipping: connect("shipping", &urls.shipping).await?,
            email: connect("email", &urls.email).await?,
            loyalty: connect("loyalty", &urls.loyalty).await?,
        })
    }

    pub async fn close(&self) {
        for (_, pool) in self.iter() {
            pool.close().await;
        }
    }
}

async fn connect(service: &'static str, url: &str) -> Result<PgPool, CheckError> {
    let failed = |error| CheckError::Connect { service, error };
    // One plain attempt first: a pool would retry until its timeout and
    // report only that, hiding the cause (refused, unknown database, …).
    let probe = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url))
        .await
        .map_err(|_| failed(sqlx::Error::PoolTimedOut))?
        .map_err(failed)?;
    let _ = probe.close().await;
    PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect_lazy(url).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_per_service() {
        let urls = DatabaseUrls::on_server("postgres://pg@h:1/", |s| format!("t1_{s}"));
        assert_eq!(urls.order, "postgres://pg@h:1/t1_order");
        assert_eq!(urls.loyalty, "postgres://pg@h:1/t1_loyalty");
        assert_eq!(DatabaseUrls::dev().email, "postgres://postgres@127.0.0.1:21432/email");
        assert_eq!(urls.iter().map(|(s, _)| s), SERVICES);
    }

    #[test]
    fn database_passwords_do_not_print() {
        let urls = DatabaseUrls::on_server("postgres://postgres:hunter2@127.0.0.1:5432", str::to_owned);
        let printed = format!("{urls:?}");
        assert!(!printed.contains("hunter2") && printed.contains("127.0.0.1:5432/loyalty"), "{printed}");
    }
}
