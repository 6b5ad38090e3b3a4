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
/// Log-tailing relay: after the broker confirmed messages (and they were
/// marked sent), before their log position is reported to the slot.
pub const LOG_TAILING_AFTER_CONFIRM_BEFORE_REPORT: &str = "log_tailing.after_confirm_before_report";
/// Log-tailing relay: once the server was told a position covering
/// published messages.
pub const LOG_TAILING_AFTER_REPORT: &str = "log_tailing.after_report";
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
    LOG_TAILING_AFTER_CONFIRM_BEFORE_REPORT,
    LOG_TAILING_AFTER_REPORT,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrashPointError {
    #[error("FAILPOINTS: `{0}` is not `<crash point>=<action>`")]
    Malformed(String),
    #[error("FAILPOINTS names `{name}`, which is no crash point; the crash points are {}", ALL.join(", "))]
    Unknown { name: String },
    #[error("FAILPOINTS: crash point `{name}`: {reason}")]
    BadAction { name: String, reason: String },
}

/// Arms the crash points listed in `FAILPOINTS` (the `fail` crate's syntax,
/// `name=action;…`). A name that is no crash point is refused: a misspelt
/// one would arm nothing, and the test meant to die there would pass
/// without ever crashing. (The `fail` crate's own reader panics on a bad
/// value; this one says what is wrong.)
pub fn arm_from_env() -> Result<(), CrashPointError> {
    match std::env::var(crate::safety::CRASH_POINTS) {
        Ok(value) => arm(&value),
        Err(_) => Ok(()),
    }
}

fn arm(value: &str) -> Result<(), CrashPointError> {
    for entry in value.split(';').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (name, action) = entry.split_once('=').ok_or_else(|| CrashPointError::Malformed(entry.to_owned()))?;
        let name = name.trim();
        if !ALL.contains(&name) {
            return Err(CrashPointError::Unknown { name: name.to_owned() });
        }
        fail::cfg(name, action.trim())
            .map_err(|reason| CrashPointError::BadAction { name: name.to_owned(), reason })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_crash_points_with_valid_actions_are_armed() {
        assert_eq!(arm(""), Ok(()));
        assert_eq!(arm(" ; "), Ok(()));
        assert_eq!(arm("relay.before_publish=off"), Ok(()));
        assert_eq!(arm("relay.before_publish"), Err(CrashPointError::Malformed("relay.before_publish".to_owned())));
        assert_eq!(
            arm("relay.before_publish=off;relay.befor_publish=return"),
            Err(CrashPointError::Unknown { name: "relay.befor_publish".to_owned() })
        );
        assert!(matches!(arm("relay.mid_batch=explode(1)"), Err(CrashPointError::BadAction { .. })));
        // Leave nothing armed for the other tests of this binary.
        assert_eq!(arm("relay.mid_batch=off"), Ok(()));
    }
}
