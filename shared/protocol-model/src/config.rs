//! What is checked: the sizes and fault budgets that bound the state space,
//! and which variant of the protocol runs (the real one, or one with a
//! guarantee removed).

/// One variant of the protocol. `Safe` is what `shared/messaging` does; the
/// others each remove or change one step, to show that the properties
/// notice (negative controls) or to ask what a step is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The protocol as `shared/messaging` implements it.
    Safe,
    /// The consumer acknowledges a delivery as it takes it, before its
    /// transaction commits (`UNSAFE_ACK_BEFORE_COMMIT`).
    AckBeforeCommit,
    /// The relay marks every row it sent, whether the broker confirmed it or
    /// not.
    MarkBeforeConfirm,
    /// The consumer writes no inbox row and applies every delivery
    /// (`UNSAFE_SKIP_INBOX`).
    SkipInbox,
    /// A batch's sends are not pinned to the channel (or Kafka producer) of
    /// its first: after the channel is replaced mid-batch, the rest goes out
    /// on the new one, behind a message lost with the old one. What
    /// `AmqpPublisher::send` and `KafkaPublisher::send` did before the pin.
    UnpinnedBatch,
    /// Relays take lanes without the advisory lock.
    WithoutLaneLock,
}

impl Variant {
    pub fn acks_before_commit(self) -> bool {
        self == Variant::AckBeforeCommit
    }

    pub fn marks_unconfirmed_rows(self) -> bool {
        self == Variant::MarkBeforeConfirm
    }

    pub fn uses_inbox(self) -> bool {
        self != Variant::SkipInbox
    }

    /// A send whose batch's channel was replaced is held back
    /// (`ChannelPin`, `ProducerPin`).
    pub fn pins_batches(self) -> bool {
        self != Variant::UnpinnedBatch
    }

    pub fn locks_lanes(self) -> bool {
        self != Variant::WithoutLaneLock
    }
}

/// Sizes and fault budgets. Faults are bounded so that every behaviour ends
/// in a state where nothing is left to do, where "nothing lost" is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub variant: Variant,
    /// Business writes per order, each with one outbox row (an event with
    /// the order's next sequence number).
    pub writes_per_order: u8,
    /// The lane of each order (`outbox::lane_of`); its length is the number
    /// of orders.
    pub lane_of_order: Vec<u8>,
    /// Relay instances (service instances) publishing the same outbox.
    pub relays: u8,
    /// Relay crashes in one behaviour, at any step of a lane's pass.
    pub max_relay_crashes: u8,
    /// Consumer crashes in one behaviour, at any step of a delivery.
    pub max_consumer_crashes: u8,
    /// Publishes that fail in one behaviour: the broker never got the
    /// message, or got it and its confirm was lost.
    pub max_publish_failures: u8,
    /// Publishing channels (or Kafka producers) replaced in the middle of a
    /// batch in one behaviour: the channel died, or another lane's failure
    /// reset it.
    pub max_channel_replacements: u8,
}

impl ModelConfig {
    /// Two orders of two writes each, two relays, one crash of each kind,
    /// one failed publish and one channel replaced mid-batch: every step of the protocol meets every fault
    /// at least once.
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            writes_per_order: 2,
            lane_of_order: vec![0, 1],
            relays: 2,
            max_relay_crashes: 1,
            max_consumer_crashes: 1,
            max_publish_failures: 1,
            max_channel_replacements: 1,
        }
    }

    /// Both orders in one lane, so one relay batch holds rows of both.
    pub fn one_lane(mut self) -> Self {
        self.lane_of_order = vec![0; self.lane_of_order.len()];
        self
    }

    /// A single order: what one order's events go through, with less
    /// interleaving of another order's.
    pub fn one_order(mut self) -> Self {
        self.lane_of_order = vec![0];
        self
    }

    pub fn orders(&self) -> usize {
        self.lane_of_order.len()
    }

    pub fn lanes(&self) -> usize {
        self.lane_of_order.iter().map(|&lane| usize::from(lane) + 1).max().unwrap_or(0)
    }

    pub fn total_writes(&self) -> usize {
        self.orders() * usize::from(self.writes_per_order)
    }
}
