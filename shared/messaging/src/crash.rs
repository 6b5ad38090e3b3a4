//! Named crash points: places where the process can be made to die on purpose
//! (`FAILPOINTS=relay.after_confirm_before_mark=return`, in the `fail`
//! crate's syntax), so tests prove that a crash exactly there loses nothing.
//!
//! The process aborts, like `kill -9`: no destructor, no flush, no ack.
//! Only builds with the `fault-injection` feature have them (see
//! [`crate::safety::requested_faults_available`]).

/// After the relay claimed rows and before it publishes any of them.
pub const RELAY_BEFORE_PUBLISH: &str = "relay.before_publish";
/// After the broker confirmed a batch and before the rows are marked sent.
pub const RELAY_AFTER_CONFIRM_BEFORE_MARK: &str = "relay.after_confirm_before_mark";
/// In the middle of a relay batch: half published, none marked.
pub const RELAY_MID_BATCH: &str = "relay.mid_batch";
/// After the inbox row is inserted and before the handler's effect (same
/// transaction, so the insert must roll back).
pub const INBOX_AFTER_RECORD_BEFORE_EFFECT: &str = "inbox.after_record_before_effect";
/// After the consumer's transaction committed and before the ack / offset commit.
pub const CONSUMER_AFTER_COMMIT_BEFORE_ACK: &str = "consumer.after_commit_before_ack";
/// After a business transaction (with its outbox rows) committed, before
/// anything is published (e.g. right after `POST /orders` commits).
pub const AFTER_BUSINESS_COMMIT: &str = "service.after_business_commit";

pub const ALL: &[&str] = &[
    RELAY_BEFORE_PUBLISH,
    RELAY_AFTER_CONFIRM_BEFORE_MARK,
    RELAY_MID_BATCH,
    INBOX_AFTER_RECORD_BEFORE_EFFECT,
    CONSUMER_AFTER_COMMIT_BEFORE_ACK,
    AFTER_BUSINESS_COMMIT,
];

/// Dies here if the crash point `name` is armed (never in a build without
/// the `fault-injection` feature).
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "fault-injection")]
    fail::fail_point!(name, |_| {
        // stderr is unbuffered: the line survives the abort for the test to read.
        eprintln!("crash point `{name}` reached: aborting");
        std::process::abort();
    });
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// Arms the crash points listed in `FAILPOINTS`. Keep the returned scenario
/// alive for the life of the process.
pub fn arm_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
