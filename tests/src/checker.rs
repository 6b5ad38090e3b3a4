//! The invariant checker run on a test system: its databases, its namespace
//! on the brokers, and the orders the test saw accepted.

use crate::TestSystem;
use uuid::Uuid;

/// Checks every invariant of docs/design.md on `system`; a database or broker
/// that did not answer is an error.
pub async fn check_invariants(
    system: &TestSystem,
    accepted: &[Uuid],
) -> Result<invariants::Report, invariants::CheckError> {
    let urls = invariants::DatabaseUrls {
        order: system.database_url("order"),
        stock: system.database_url("stock"),
        payment: system.database_url("payment"),
        shipping: system.database_url("shipping"),
        email: system.database_url("email"),
        loyalty: system.database_url("loyalty"),
    };
    let databases = invariants::Databases::connect(&urls).await?;
    let options = invariants::CheckOptions {
        accepted: Some(accepted.iter().copied().collect()),
        brokers: invariants::Brokers {
            amqp_url: Some(system.stack().amqp_url()),
            kafka_brokers: Some(system.kafka_brokers().to_owned()),
            topology: system.topology(),
        },
        ..invariants::CheckOptions::default()
    };
    let report = invariants::check(&databases, &options).await;
    databases.close().await;
    report
}

/// Polls the checker until it passes or `timeout` (consumers may still be
/// catching up on the last events); returns the last report.
pub async fn settle_and_check(
    system: &TestSystem,
    accepted: &[Uuid],
    timeout: std::time::Duration,
) -> invariants::Report {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // A broker that did not answer one check (Tansu under the load of
        // the other tests) is asked again; past the deadline it fails the test.
        match check_invariants(system, accepted).await {
            Ok(report) if report.passed() || std::time::Instant::now() >= deadline => return report,
            Ok(_) => {}
            Err(e) if std::time::Instant::now() >= deadline => panic!("running the checker: {e}"),
            Err(e) => eprintln!("the checker could not read everything ({e}); asking again"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
