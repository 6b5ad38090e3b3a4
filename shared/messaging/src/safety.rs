//! Deliberately UNSAFE modes, the negative controls of the chaos suite.
//!
//! Each one removes one guarantee so the invariant checker can show that it
//! notices. They are off unless their environment variable is `1`, and a
//! process that runs with one logs it loudly at start. They exist only in
//! builds with the `fault-injection` feature (the release images have none);
//! a build without it refuses to start when asked for one, or for crash
//! points ([`requested_faults_available`]).
//!
//! - `UNSAFE_PUBLISH_WITHOUT_OUTBOX=1`: messages are handed to the broker
//!   straight from memory, outside the business transaction (the dual write).
//! - `UNSAFE_ACK_BEFORE_COMMIT=1`: deliveries are acknowledged (offsets
//!   committed) before the handler's transaction commits.
//! - `UNSAFE_SKIP_INBOX=1`: no inbox row, so a redelivery has a second effect.
//! - `UNSAFE_FLUSH_BEFORE_CONFIRM=1`: the log-tailing relay reports each
//!   transaction to its slot as flushed as soon as it is received, before
//!   the broker confirmed it (what Eventuate's CDC does), and skips the
//!   sweep that would pick up what the slot skipped.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeModes {
    pub publish_without_outbox: bool,
    pub ack_before_commit: bool,
    pub skip_inbox: bool,
    pub flush_before_confirm: bool,
}

pub const PUBLISH_WITHOUT_OUTBOX: &str = "UNSAFE_PUBLISH_WITHOUT_OUTBOX";
pub const ACK_BEFORE_COMMIT: &str = "UNSAFE_ACK_BEFORE_COMMIT";
pub const SKIP_INBOX: &str = "UNSAFE_SKIP_INBOX";
pub const FLUSH_BEFORE_CONFIRM: &str = "UNSAFE_FLUSH_BEFORE_CONFIRM";

impl UnsafeModes {
    pub fn from_env() -> Self {
        let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self {
            publish_without_outbox: on(PUBLISH_WITHOUT_OUTBOX),
            ack_before_commit: on(ACK_BEFORE_COMMIT),
            skip_inbox: on(SKIP_INBOX),
            flush_before_confirm: on(FLUSH_BEFORE_CONFIRM),
        }
    }

    pub fn any(&self) -> bool {
        self.publish_without_outbox || self.ack_before_commit || self.skip_inbox || self.flush_before_confirm
    }

    /// Names of the enabled modes, for the startup warning and `/health`.
    pub fn enabled(&self) -> Vec<&'static str> {
        [
            (self.publish_without_outbox, PUBLISH_WITHOUT_OUTBOX),
            (self.ack_before_commit, ACK_BEFORE_COMMIT),
            (self.skip_inbox, SKIP_INBOX),
            (self.flush_before_confirm, FLUSH_BEFORE_CONFIRM),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The process-wide modes, read once from the environment (the service
/// host logs them at start); all off in a build without fault injection.
pub fn unsafe_modes() -> UnsafeModes {
    static MODES: OnceLock<UnsafeModes> = OnceLock::new();
    *MODES.get_or_init(|| if FAULT_INJECTION_BUILT_IN { UnsafeModes::from_env() } else { UnsafeModes::default() })
}

/// Whether this build has crash points and unsafe modes (the cargo feature
/// `fault-injection`).
pub const FAULT_INJECTION_BUILT_IN: bool = cfg!(feature = "fault-injection");

/// The variable that arms crash points (the `fail` crate's).
pub const CRASH_POINTS: &str = "FAILPOINTS";

#[derive(Debug, thiserror::Error)]
#[error(
    "{} set, but this build has no fault injection (built without the `fault-injection` feature, as the \
     release images are): refusing to start rather than run otherwise than asked",
    variables.join(", ")
)]
pub struct FaultInjectionMissing {
    pub variables: Vec<&'static str>,
}

/// Fails if the environment asks for crash points or an unsafe mode that
/// this build does not have: a service started so is a test set up wrongly,
/// or a deployment someone tried to weaken, and must not simply run safe.
pub fn requested_faults_available() -> Result<(), FaultInjectionMissing> {
    let variables = faults_missing(FAULT_INJECTION_BUILT_IN, |name| std::env::var(name).ok());
    if variables.is_empty() { Ok(()) } else { Err(FaultInjectionMissing { variables }) }
}

/// The fault-injection variables set in `env` that a build without fault
/// injection cannot honour.
fn faults_missing(built_in: bool, env: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
    if built_in {
        return Vec::new();
    }
    [CRASH_POINTS, PUBLISH_WITHOUT_OUTBOX, ACK_BEFORE_COMMIT, SKIP_INBOX]
        .into_iter()
        .filter(|name| env(name).is_some_and(|value| !value.trim().is_empty() && value.trim() != "0"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_fault_injection_names_what_it_was_asked_for() {
        let env = |name: &str| match name {
            "FAILPOINTS" => Some("relay.mid_batch=return".to_owned()),
            "UNSAFE_SKIP_INBOX" => Some("1".to_owned()),
            "UNSAFE_ACK_BEFORE_COMMIT" => Some("0".to_owned()),
            _ => None,
        };
        assert_eq!(faults_missing(false, env), [CRASH_POINTS, SKIP_INBOX]);
        assert!(faults_missing(true, env).is_empty(), "a build with it honours them");
        assert!(faults_missing(false, |_| None).is_empty(), "nothing asked, nothing missing");
    }
}
