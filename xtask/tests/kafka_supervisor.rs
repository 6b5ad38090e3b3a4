//! The Kafka supervisor against a real Tansu that wedges: frozen with
//! SIGSTOP past the supervisor's bound it is left alone; then wedged the
//! way the long chaos run found it (a producer epoch Tansu never handed
//! out, after a record timed out while it was frozen: `more or less than
//! one row`), the supervisor restarts it and names the panic.
//!
//! Needs the chaos stack's infrastructure and its supervisor:
//! `cargo xtask infra up --stack chaos`, then
//! `cargo test -p xtask --test kafka_supervisor -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;
use xtask::{Signal, Stack, chaos::backend::Backend, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the chaos stack's infrastructure: cargo xtask infra up --stack chaos"]
async fn a_frozen_tansu_is_left_alone_and_a_wedged_one_is_restarted_with_its_panic_named() {
    let stack = Stack::chaos(xtask::repo_root());
    assert!(stack.kafka_supervisor().pid().is_some(), "no Kafka supervisor: cargo xtask infra up --stack chaos");
    let backend = Backend::Local(&stack);
    let since = backend.broker_log_lens();
    let brokers = stack.kafka_brokers();
    let topic = format!("supervisor-wedge-{}", Uuid::now_v7().simple());
    messaging::kafka::ensure_topics(&brokers, std::slice::from_ref(&topic), 1).await.unwrap();
    // An idempotent producer kept after a timeout: the negative control of
    // tests/tests/faults.rs, which crashes Tansu 0.6.
    let mut config = messaging::kafka::producer_config(&brokers, "supervisor-wedge");
    config.set("message.timeout.ms", "3000").set("request.timeout.ms", "2000");
    let producer: FutureProducer = config.create().unwrap();
    let send = |step: &'static str| {
        let record = FutureRecord::to(&topic).key("k").payload(step);
        producer.send(record, Duration::from_secs(10))
    };
    send("before").await.map_err(|(e, _)| e).unwrap();

    let pid = stack.kafka().pid().unwrap();
    process::signal_process(pid, Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let during = send("during").await;
    assert!(during.is_err(), "a record sent to a frozen broker was delivered");
    // Frozen well past the supervisor's 15 s bound: stopped is exempt.
    tokio::time::sleep_until((frozen + Duration::from_secs(25)).into()).await;
    let left_alone = backend.supervisor_restarts_since(since);
    process::signal_process(pid, Signal::SIGCONT).unwrap();
    assert!(left_alone.is_empty(), "the supervisor restarted a stopped broker: {left_alone:?}");
    assert_eq!(stack.kafka().pid(), Some(pid), "the frozen broker was replaced");
    println!("FROZEN: pid {pid} stopped for {:.1}s, left alone", frozen.elapsed().as_secs_f64());

    let after = tokio::time::timeout(Duration::from_secs(20), send("after")).await;
    let wedged = Instant::now();
    println!("AFTER THE THAW: the kept producer's record: {:?}", after.map(|r| r.map(|_| ()).map_err(|(e, _)| e)));
    let restart = loop {
        if let Some(restart) = backend.supervisor_restarts_since(since).into_iter().next() {
            break restart;
        }
        assert!(
            wedged.elapsed() < Duration::from_secs(90),
            "no restart within 90 s; broker panics: {:?}",
            backend.broker_panics_since(since)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("RESTARTED {:.1}s after the wedge: {}", wedged.elapsed().as_secs_f64(), restart.describe());
    assert_eq!(restart.old_pid, pid);
    assert!(restart.panics.iter().any(|p| p.contains("more or less than one row")), "{restart:?}");
    let new_pid = restart.new_pid.expect("started again");
    stack.kafka().wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stack.kafka().pid(), Some(new_pid));
    let fresh: FutureProducer = messaging::kafka::producer_config(&brokers, "supervisor-wedge-2").create().unwrap();
    let record = FutureRecord::to(&topic).key("k").payload("after the restart");
    fresh.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    println!("SERVING: a new producer's record delivered {:.1}s after the wedge", wedged.elapsed().as_secs_f64());
}
