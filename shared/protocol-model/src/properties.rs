//! What must hold. "Nothing lost" is checked where nothing is left to do:
//! every behaviour ends there, since faults are bounded and every other
//! step makes progress (stateright's `eventually` can miss a counterexample
//! when paths join, which this model's paths do all the time).

use crate::model::OutboxProtocol;
use crate::state::{Relay, SystemState};
use stateright::{Model, Property};

pub const NO_EFFECT_TWICE: &str = "no effect applied twice";
pub const EFFECTS_IN_ORDER: &str = "an order's effects apply in commit order";
pub const NOTHING_LOST: &str = "every committed write's effect is applied once nothing is left to do";
pub const ALL_APPLIED_SOMETIMES: &str = "a behaviour ends with every effect applied";
pub const DUPLICATE_ABSORBED_SOMETIMES: &str = "a message delivered twice has one effect";
pub const HELD_BACK_SOMETIMES: &str = "a batch's channel is replaced mid-batch and its next send held back";

pub fn all() -> Vec<Property<OutboxProtocol>> {
    vec![
        Property::always(NO_EFFECT_TWICE, |_, state| no_effect_twice(state)),
        Property::always(EFFECTS_IN_ORDER, |_, state| effects_in_order(state)),
        Property::always(NOTHING_LOST, |model, state| !is_quiescent(model, state) || all_applied(state)),
        // The three below show that the checks above are not vacuous.
        Property::sometimes(ALL_APPLIED_SOMETIMES, |model, state| is_quiescent(model, state) && all_applied(state)),
        Property::sometimes(DUPLICATE_ABSORBED_SOMETIMES, |_, state| {
            duplicate_consumed(state) && no_effect_twice(state)
        }),
        Property::sometimes(HELD_BACK_SOMETIMES, |_, state| held_back(state)),
    ]
}

/// The safety properties, whose discoveries are counterexamples.
pub const SAFETY: [&str; 3] = [NO_EFFECT_TWICE, EFFECTS_IN_ORDER, NOTHING_LOST];

/// A relay's pass ended at a send after its channel was replaced, without
/// making it (only a pinned batch ends so: a send that is made, or lost with
/// its channel, counts as sent).
fn held_back(state: &SystemState) -> bool {
    state.relays.iter().any(|relay| match relay {
        Relay::Publishing(pass) => {
            pass.replaced_after.is_some() && pass.is_done() && usize::from(pass.sent) < pass.batch.len()
        }
        Relay::Idle => false,
    })
}

fn no_effect_twice(state: &SystemState) -> bool {
    let effects = &state.consumer.effects;
    effects.iter().enumerate().all(|(i, row)| !effects[..i].contains(row))
}

/// When an order's event applies, every earlier event of that order has
/// applied before it.
fn effects_in_order(state: &SystemState) -> bool {
    let outbox = &state.producer.outbox;
    let effects = &state.consumer.effects;
    effects.iter().enumerate().all(|(i, &id)| {
        let row = outbox[usize::from(id)];
        (1..row.sequence).all(|earlier| {
            effects[..i]
                .iter()
                .any(|&e| outbox[usize::from(e)].order == row.order && outbox[usize::from(e)].sequence == earlier)
        })
    })
}

fn all_applied(state: &SystemState) -> bool {
    (0..state.producer.outbox.len() as u8).all(|id| state.consumer.effects.contains(&id))
}

/// No step is possible: all writes made, every row sent, every delivery
/// handled and acknowledged.
pub fn is_quiescent(model: &OutboxProtocol, state: &SystemState) -> bool {
    let mut actions = Vec::new();
    model.actions(state, &mut actions);
    actions.is_empty()
}

/// Some message was stored twice by the broker and the consumer has
/// handled and acknowledged both copies.
fn duplicate_consumed(state: &SystemState) -> bool {
    let taken = &state.broker.log[..usize::from(state.consumer.acknowledged)];
    taken.iter().enumerate().any(|(i, row)| taken[..i].contains(row))
}
