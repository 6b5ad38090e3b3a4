//! Drives a real stack through the library API (the way the system tests
//! will). Ignored by default: it needs PostgreSQL, RabbitMQ and Tansu on the
//! machine and takes ~30 s. Run with
//! `cargo test -p xtask --test stack_lifecycle -- --ignored`.

use sqlx::{Connection as _, PgConnection};
use xtask::{Component, Stack, StartOutcome};

#[tokio::test]
#[ignore = "starts real PostgreSQL, RabbitMQ and Tansu processes"]
async fn chaos_stack_survives_kill_and_restart() {
    let stack = Stack::chaos(xtask::repo_root());

    // Concurrent starts (parallel tests) must converge on one set of processes.
    let (first, second) = tokio::join!(stack.start_infra(), stack.start_infra());
    first.unwrap();
    second.unwrap();
    for component in Component::ALL {
        assert!(matches!(stack.start_component(component).await.unwrap(), StartOutcome::AlreadyRunning { .. }));
    }

    // `order` is an SQL keyword: creation must quote it, and be idempotent.
    stack.create_database("order").await.unwrap();
    stack.create_database("order").await.unwrap();
    let url = stack.postgres_url("order");
    let mut connection = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS survivor (id int); INSERT INTO survivor VALUES (1)")
        .execute(&mut connection)
        .await
        .unwrap();

    stack.kafka().create_topics(&[("orders", 4), ("shipments", 4)]).await.unwrap();
    stack.kafka().create_topics(&[("orders", 4)]).await.unwrap();
    let topics = stack.kafka().list_topics().await.unwrap();
    assert!(topics.contains(&("orders".to_owned(), 4)), "{topics:?}");

    for component in Component::ALL {
        let before = stack.component_pid(component).unwrap();
        stack.kill_component(component).await.unwrap();
        assert_eq!(stack.component_pid(component), None, "{component} still running after kill");
        let after = stack.restart_component(component).await.unwrap();
        assert_ne!(before, after);
        assert_eq!(stack.component_pid(component), Some(after));
    }

    // The committed row survived SIGKILL of the whole cluster.
    let mut connection = PgConnection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM survivor").fetch_one(&mut connection).await.unwrap();
    assert!(rows >= 1);
    drop(connection);
    let topics = stack.kafka().list_topics().await.unwrap();
    assert!(topics.contains(&("shipments".to_owned(), 4)), "{topics:?}");

    stack.drop_database("order").await.unwrap();
    stack.stop_infra().await.unwrap();
    for component in Component::ALL {
        assert_eq!(stack.component_pid(component), None);
    }
}
