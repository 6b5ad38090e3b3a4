//! The order service protecting itself: `POST /orders` answers 503 with a
//! `Retry-After` and a JSON error, instead of queueing without limit or
//! hanging, when (a) its outbox backlog is over `ORDER_MAX_OUTBOX_BACKLOG`
//! because nothing can be published, and (b) its database pool is
//! exhausted. Every order answered 202 is stored with its outbox rows; no
//! order answered 503 is stored at all.

#![allow(clippy::unwrap_used)]

use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use system_tests::{TestSystem, order_request};
use uuid::Uuid;

/// Nothing listens on port 1: every connection attempt is refused at once.
const UNREACHABLE_AMQP: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
/// No stock service: the order service accepts any well-formed SKU.
const NO_STOCK: &str = "http://127.0.0.1:1";

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

async fn post_order(system: &TestSystem, customer: &str) -> Answer {
    let started = Instant::now();
    let response = system
        .http
        .post(format!("{}/orders", system.url("order")))
        .json(&order_request(customer, &[("SKU-001", 1)], "card"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /orders for {customer}: no answer: {e}"));
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, retry_after, body, took: started.elapsed() }
}

/// A 503 as the API promises it: a `Retry-After` in whole seconds and a JSON
/// error with code `unavailable`.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    let retry_after = answer.retry_after.as_deref().unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "{what}: Retry-After `{retry_after}`");
    assert_eq!(answer.body["error"]["code"], "unavailable", "{what}: {}", answer.body);
    assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", answer.body);
}

fn order_id(answer: &Answer) -> Uuid {
    answer.body["order_id"].as_str().unwrap().parse().unwrap()
}

/// Waits until the order service has finished starting (its `startup`
/// readiness component is green): liveness alone is not enough, since the
/// API answers 503 "starting up" until then, and this test counts 503s.
async fn wait_started(system: &TestSystem, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((_, readiness)) = system.get_json("order", "/health/ready").await
            && readiness["components"]["startup"]["ready"] == true
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "order not started after {timeout:?}; log: {}",
            system.log_path("order").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every accepted order is stored once, with its line and its two outbox
/// rows (`ReserveStock`, `OrderPlaced`); no rejected customer has an order;
/// nothing else is stored.
async fn assert_stored_exactly(db: &PgPool, accepted: &[Uuid], rejected_customers: &[String]) {
    let stored: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM orders").fetch_all(db).await.unwrap().into_iter().collect();
    let expected: BTreeSet<Uuid> = accepted.iter().copied().collect();
    assert_eq!(stored, expected, "the orders stored are exactly the orders answered 202");
    for id in accepted {
        let mut types: Vec<String> = sqlx::query_scalar("SELECT message_type FROM outbox WHERE partition_key = $1")
            .bind(id.to_string())
            .fetch_all(db)
            .await
            .unwrap();
        types.sort();
        assert_eq!(types, ["orders.OrderPlaced", "stock.ReserveStock"], "outbox rows of order {id}");
        let (lines,): (i64,) = sqlx::query_as("SELECT count(*) FROM order_lines WHERE order_id = $1")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap();
        assert_eq!(lines, 1, "lines of order {id}");
    }
    let (orders_of_rejected,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE customer_id = ANY($1)")
        .bind(rejected_customers)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(orders_of_rejected, 0, "an order answered 503 was stored");
    let (outbox_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(db).await.unwrap();
    assert_eq!(outbox_rows, 2 * accepted.len() as i64, "outbox rows: two per accepted order, none for a rejected one");
}

/// (a) RabbitMQ unreachable: the relay cannot publish, the backlog grows
/// past `ORDER_MAX_OUTBOX_BACKLOG`, and `POST /orders` sheds load with 503
/// until the broker is back.
///
/// The order service is first started normally (the harness waits for
/// readiness, and that needs RabbitMQ), then killed and started again with
/// `AMQP_URL` on a port nothing listens on. It then serves HTTP and takes
/// orders, but reports not ready (`amqp-publisher` down): placing an order
/// needs only the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_sheds_orders_with_503_and_loses_none_it_accepted() {
    let started = Instant::now();
    let mut system =
        TestSystem::start("backlog", &["order"], &[("ORDER_MAX_OUTBOX_BACKLOG", "5"), ("STOCK_URL", NO_STOCK)])
            .await
            .unwrap();
    system.kill("order").await.unwrap();
    system.spawn_with("order", &[("AMQP_URL", UNREACHABLE_AMQP)]).unwrap();
    wait_started(&system, Duration::from_secs(60)).await;
    let (status, readiness) = system.get_json("order", "/health/ready").await.unwrap();
    assert_eq!(status, 503, "not ready without RabbitMQ: {readiness}");
    assert_eq!(readiness["components"]["amqp-publisher"]["ready"], false, "{readiness}");

    // One order with an idempotency key, to replay while load is shed.
    let keyed = order_request("bp-keyed", &[("SKU-001", 1)], "card");
    let (status, body) = system.place_order(&keyed, Some("bp-key")).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let mut accepted: Vec<Uuid> = vec![body["order_id"].as_str().unwrap().parse().unwrap()];
    let mut rejected = Vec::new();
    for i in 0..200 {
        let customer = format!("bp-{i}");
        let answer = post_order(&system, &customer).await;
        match answer.status {
            202 => {
                assert!(rejected.is_empty(), "{customer} accepted after a 503, with the backlog still growing");
                accepted.push(order_id(&answer));
            }
            503 => {
                assert_unavailable(&answer, &customer);
                rejected.push(customer);
                if rejected.len() == 5 {
                    break;
                }
            }
            other => panic!("{customer}: {other} {}", answer.body),
        }
        // Lets the backlog sampler (every 500 ms) see the new rows.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{} orders accepted, then {} answered 503 ({:?})", accepted.len(), rejected.len(), started.elapsed());
    assert_eq!(rejected.len(), 5, "POST /orders never answered 503; accepted {}", accepted.len());
    assert!(accepted.len() >= 3, "503 before the backlog could pass 5: only {} accepted", accepted.len());
    // Shedding refuses new orders, not answers about accepted ones: a
    // client that lost the 202 and retries gets its order.
    let (status, body) = system.place_order(&keyed, Some("bp-key")).await.unwrap();
    assert_eq!((status, body["order_id"].as_str()), (202, Some(accepted[0].to_string().as_str())), "{body}");
    assert_stored_exactly(system.db("order"), &accepted, &rejected).await;
    let (unsent_commands,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM outbox WHERE message_type = 'stock.ReserveStock' AND sent_at IS NULL")
            .fetch_one(system.db("order"))
            .await
            .unwrap();
    assert_eq!(unsent_commands, accepted.len() as i64, "no command can have been published");
    let (_, metrics) = system.get_text("order", "/metrics").await.unwrap();
    let shed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("orders_rejected_total{") && l.contains("reason=\"backpressure\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no orders_rejected_total{{reason=\"backpressure\"}} in /metrics"));
    assert_eq!(shed, rejected.len() as f64);

    // RabbitMQ back: the relay drains the outbox and orders are taken again.
    let amqp_url = system.stack().amqp_url();
    system.restart_with("order", &[("AMQP_URL", &amqp_url)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (unsent,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(system.db("order"))
            .await
            .unwrap();
        if unsent == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox never drained: {unsent} unsent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = post_order(&system, "bp-after").await;
        if answer.status == 202 {
            break;
        }
        assert_unavailable(&answer, "bp-after");
        assert!(Instant::now() < deadline, "still 503 after the outbox drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("backlog test done in {:?}", started.elapsed());
    system.shutdown().await;
}

/// (b) Database pool exhausted: `POST /orders` and the queries answer 503
/// with `Retry-After` once the pool's acquire timeout (3 s) passes, instead
/// of a 500 or a request that hangs; the request holding the connection
/// completes normally once it is free.
///
/// The test cannot borrow the service's own connections, so it makes the
/// service use them up: `DATABASE_MAX_CONNECTIONS=1` (the relay's LISTEN
/// connection is not in the pool), and the test holds `LOCK TABLE orders`
/// so that the first order's INSERT waits on it while holding the pool's
/// only connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_database_pool_answers_503_not_500_or_a_hang() {
    let started = Instant::now();
    let system =
        TestSystem::start("poolexhaust", &["order"], &[("DATABASE_MAX_CONNECTIONS", "1"), ("STOCK_URL", NO_STOCK)])
            .await
            .unwrap();
    let db = system.db("order").clone();
    let mut lock = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();

    let holder = {
        let url = format!("{}/orders", system.url("order"));
        let http = system.http.clone();
        tokio::spawn(async move {
            let response =
                http.post(url).json(&order_request("pool-holder", &[("SKU-001", 1)], "card")).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    // The holder's INSERT waits on the lock, on the pool's only connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO orders%'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the first order never reached the locked table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shed = post_order(&system, "pool-shed").await;
    assert_unavailable(&shed, "POST /orders with the pool exhausted");
    assert!(shed.took < Duration::from_secs(8), "503 only after {:?}", shed.took);
    println!("POST /orders answered 503 after {:?} with the pool exhausted", shed.took);
    for path in [format!("/orders/{}", Uuid::now_v7()), "/orders?customer_id=pool-holder".to_owned()] {
        let response = system.http.get(format!("{}{path}", system.url("order"))).send().await.unwrap();
        let answer = Answer {
            status: response.status().as_u16(),
            retry_after: response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned()),
            body: response.json().await.unwrap_or(Value::Null),
            took: Duration::ZERO,
        };
        assert_unavailable(&answer, &format!("GET {path} with the pool exhausted"));
    }

    // The connection comes free: the waiting order goes through, and new ones too.
    lock.rollback().await.unwrap();
    let (status, body) = holder.await.unwrap();
    assert_eq!(status, 202, "the order holding the connection: {body}");
    let holder_id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
    let after = post_order(&system, "pool-after").await;
    assert_eq!(after.status, 202, "{}", after.body);
    assert_stored_exactly(&db, &[holder_id, order_id(&after)], &["pool-shed".to_owned()]).await;
    println!("pool test done in {:?}", started.elapsed());
    system.shutdown().await;
}
