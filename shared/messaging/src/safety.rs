//! Deliberately UNSAFE modes, the negative controls of the chaos suite.
//!
//! Each one removes one guarantee so the invariant checker can show that it
//! notices. They are off unless their environment variable is `1`, and a
//! process that runs with one logs it loudly at start.
//!
//! - `UNSAFE_PUBLISH_WITHOUT_OUTBOX=1`: messages are handed to the broker
//!   straight from memory, outside the business transaction (the dual write).
//! - `UNSAFE_ACK_BEFORE_COMMIT=1`: deliveries are acknowledged (offsets
//!   committed) before the handler's transaction commits.
//! - `UNSAFE_SKIP_INBOX=1`: no inbox row, so a redelivery has a second effect.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeModes {
    pub publish_without_outbox: bool,
    pub ack_before_commit: bool,
    pub skip_inbox: bool,
}

pub const PUBLISH_WITHOUT_OUTBOX: &str = "UNSAFE_PUBLISH_WITHOUT_OUTBOX";
pub const ACK_BEFORE_COMMIT: &str = "UNSAFE_ACK_BEFORE_COMMIT";
pub const SKIP_INBOX: &str = "UNSAFE_SKIP_INBOX";

impl UnsafeModes {
    pub fn from_env() -> Self {
        let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self {
            publish_without_outbox: on(PUBLISH_WITHOUT_OUTBOX),
            ack_before_commit: on(ACK_BEFORE_COMMIT),
            skip_inbox: on(SKIP_INBOX),
        }
    }

    pub fn any(&self) -> bool {
        self.publish_without_outbox || self.ack_before_commit || self.skip_inbox
    }

    /// Names of the enabled modes, for the startup warning and `/health`.
    pub fn enabled(&self) -> Vec<&'static str> {
        [
            (self.publish_without_outbox, PUBLISH_WITHOUT_OUTBOX),
            (self.ack_before_commit, ACK_BEFORE_COMMIT),
            (self.skip_inbox, SKIP_INBOX),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The process-wide modes, read once from the environment (the service
/// host logs them at start).
pub fn unsafe_modes() -> UnsafeModes {
    static MODES: OnceLock<UnsafeModes> = OnceLock::new();
    *MODES.get_or_init(UnsafeModes::from_env)
}
