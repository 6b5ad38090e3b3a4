//! The protocol as a stateright model: states, steps, properties.

use crate::actions::{self, Action};
use crate::config::ModelConfig;
use crate::state::SystemState;
use crate::{consumer, describe, producer, properties, relay};
use stateright::{Model, Property};

#[derive(Debug, Clone)]
pub struct OutboxProtocol {
    pub config: ModelConfig,
}

impl OutboxProtocol {
    pub fn new(config: ModelConfig) -> Self {
        Self { config }
    }
}

impl Model for OutboxProtocol {
    type State = SystemState;
    type Action = Action;

    fn init_states(&self) -> Vec<SystemState> {
        vec![SystemState::initial(&self.config)]
    }

    fn actions(&self, state: &SystemState, actions: &mut Vec<Action>) {
        actions::enabled(&self.config, state, actions);
    }

    fn next_state(&self, last: &SystemState, action: Action) -> Option<SystemState> {
        let config = &self.config;
        let mut state = last.clone();
        match action {
            Action::BusinessWrite { order } => producer::business_write(&mut state, order),
            Action::ClaimLane { relay, lane } => relay::claim_lane(config, &mut state, relay, lane),
            Action::Publish { relay, outcome } => relay::publish(&mut state, relay, outcome),
            Action::SendAfterFailure { relay, reaches_broker } => {
                relay::send_after_failure(&mut state, relay, reaches_broker)
            }
            Action::ReplaceChannel { relay } => relay::replace_channel(&mut state, relay),
            Action::HoldBack { relay } => relay::hold_back(&mut state, relay),
            Action::MarkSentAndCommit { relay } => relay::mark_sent_and_commit(config, &mut state, relay),
            Action::RelayCrash { relay } => relay::crash(&mut state, relay),
            Action::Receive => consumer::receive(config, &mut state),
            Action::Apply => consumer::apply(config, &mut state),
            Action::Acknowledge => consumer::acknowledge(&mut state),
            Action::ConsumerCrash => consumer::crash(&mut state),
        }
        Some(state)
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn format_step(&self, last: &SystemState, action: Action) -> Option<String> {
        let next = self.next_state(last, action)?;
        Some(format!("{}\n    → {}", describe::step(last, action), describe::summary(&next)))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}
