//! The state of the whole system: the producing service's database, the
//! relays, the broker, the consumer. What survives a crash is kept apart
//! from what a crash loses.

use crate::config::ModelConfig;

/// Index of a row in the outbox: its `id` order, which for one order is its
/// commit order (a service writes an order's rows holding the order's row
/// lock).
pub type RowId = u8;
pub type RelayId = u8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemState {
    pub producer: ProducerDb,
    pub relays: Vec<Relay>,
    pub broker: Broker,
    pub consumer: Consumer,
    pub faults: FaultsUsed,
}

impl SystemState {
    /// The same state with the relays in a canonical order: relay instances
    /// are interchangeable, so states that differ only in which relay does
    /// what are checked once.
    pub fn with_relays_sorted(&self) -> Self {
        let mut order: Vec<usize> = (0..self.relays.len()).collect();
        order.sort_by(|&a, &b| self.relays[a].cmp(&self.relays[b]));
        let mut sorted = self.clone();
        sorted.relays = order.iter().map(|&old| self.relays[old].clone()).collect();
        for holder in sorted.producer.lane_holders.iter_mut().flatten() {
            if let Some(new) = order.iter().position(|&old| old == usize::from(*holder)) {
                *holder = new as RelayId;
            }
        }
        sorted
    }

    pub fn initial(config: &ModelConfig) -> Self {
        Self {
            producer: ProducerDb {
                writes: vec![0; config.orders()],
                outbox: Vec::new(),
                lane_holders: vec![None; config.lanes()],
            },
            relays: vec![Relay::Idle; usize::from(config.relays)],
            broker: Broker { log: Vec::new() },
            consumer: Consumer {
                acknowledged: 0,
                next_delivery: 0,
                in_hand: None,
                inbox: Vec::new(),
                applied_sequence: vec![0; config.orders()],
                effects: Vec::new(),
            },
            faults: FaultsUsed::default(),
        }
    }
}

/// The producing service's database: durable, but for the advisory locks,
/// which end with the session of the relay holding them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProducerDb {
    /// Business writes committed per order.
    pub writes: Vec<u8>,
    pub outbox: Vec<OutboxRow>,
    /// The relay whose transaction holds each lane's advisory lock.
    pub lane_holders: Vec<Option<RelayId>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutboxRow {
    pub order: u8,
    /// The order's event sequence number, from 1.
    pub sequence: u8,
    /// `sent_at IS NOT NULL`.
    pub sent: bool,
}

/// A relay instance; all of it is volatile (its open transaction included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relay {
    Idle,
    Publishing(LanePass),
}

/// One lane's pass in one transaction (`OutboxRelay::relay_lanes_on`,
/// which takes a group of lanes and handles each of them as here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LanePass {
    pub lane: u8,
    /// The unsent rows of the lane in id order, as read at the claim.
    pub batch: Vec<RowId>,
    /// Rows of `batch` dealt with so far: sent, or given up.
    pub handled: u8,
    /// Rows handed to the broker client (whatever became of them).
    pub sent: u8,
    /// The confirmed prefix of `batch`.
    pub confirmed: u8,
    /// The first publish of the pass that was not confirmed.
    pub failure: Option<PublishFailure>,
    /// The publishing channel was replaced after this many sends of the
    /// pass: the sends after it would go out on a new channel.
    pub replaced_after: Option<u8>,
}

impl LanePass {
    pub fn is_done(&self) -> bool {
        usize::from(self.handled) == self.batch.len()
    }

    pub fn next_row(&self) -> Option<RowId> {
        self.batch.get(usize::from(self.handled)).copied()
    }

    /// Whether the channel the next send would use still takes messages.
    /// One channel delivers a prefix of what was sent on it: after a message
    /// it dropped, nothing more. A channel opened after that drop is alive.
    pub fn channel_alive(&self) -> bool {
        match self.failure {
            None | Some(PublishFailure::ConfirmLost) => true,
            Some(PublishFailure::Dropped) => self.replaced_after.is_some_and(|sends| self.confirmed < sends),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublishFailure {
    /// The broker stored the message; its confirm never came back.
    ConfirmLost,
    /// The message never reached the broker (connection died with it).
    Dropped,
}

/// One queue or partition holding every order's messages; it keeps them in
/// arrival order and lets nothing go that was stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Broker {
    /// Each stored message is the outbox row it was published from.
    pub log: Vec<RowId>,
}

/// The consumer: its database (inbox, effects) and its acknowledged
/// position are durable, the rest is lost in a crash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Consumer {
    /// Deliveries before this index are acknowledged (offset committed):
    /// the broker will not deliver them again. Held by the broker.
    pub acknowledged: u8,
    /// Volatile: the next delivery the broker hands this consumer.
    pub next_delivery: u8,
    /// Volatile: the delivery being handled.
    pub in_hand: Option<InHand>,
    /// Durable: the rows whose message has an inbox row.
    pub inbox: Vec<RowId>,
    /// Durable: `inbox_sequence.last_sequence` per order.
    pub applied_sequence: Vec<u8>,
    /// Durable: the effects applied, in commit order, by outbox row.
    pub effects: Vec<RowId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InHand {
    /// Index in the broker's log.
    pub delivery: u8,
    /// Its transaction (inbox row and effect) committed.
    pub committed: bool,
}

/// Faults spent so far in this behaviour (bounded by the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FaultsUsed {
    pub relay_crashes: u8,
    pub consumer_crashes: u8,
    pub publish_failures: u8,
    pub channel_replacements: u8,
}
