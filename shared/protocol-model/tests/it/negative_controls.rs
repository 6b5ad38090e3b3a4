//! Each variant removes one guarantee; the checker must find the behaviour
//! that breaks it, and prints it. One order is enough to break each, and
//! the shortest counterexamples come sooner.

use protocol_model::properties::{EFFECTS_IN_ORDER, NO_EFFECT_TWICE, NOTHING_LOST};
use protocol_model::{CheckReport, ModelConfig, Search, Variant, run};

fn counterexamples_of(variant: Variant, properties: &'static [&'static str]) -> CheckReport {
    let report = run(ModelConfig::new(variant).one_order(), Search::CounterexamplesTo(properties));
    println!("{report}");
    for property in properties {
        assert!(report.counterexample(property).is_some(), "expected a counterexample to \"{property}\":\n{report}");
    }
    report
}

#[test]
fn acknowledging_before_the_commit_loses_a_message_in_a_crash() {
    counterexamples_of(Variant::AckBeforeCommit, &[NOTHING_LOST]);
}

#[test]
fn marking_rows_sent_before_the_confirm_loses_a_message_the_broker_never_got() {
    counterexamples_of(Variant::MarkBeforeConfirm, &[NOTHING_LOST]);
}

#[test]
fn without_the_inbox_a_redelivery_applies_twice() {
    counterexamples_of(Variant::SkipInbox, &[NO_EFFECT_TWICE]);
}

/// The finding the pin fixes: unpinned, each send takes the current channel
/// or producer (as `AmqpPublisher::send` and `KafkaPublisher::send` do), so
/// one batch can span a replaced one, and a message dropped with the old one
/// is overtaken by the next, sent on the new one. The inbox then skips the
/// dropped one as stale when it comes again: its effect is lost.
#[test]
fn an_unpinned_batch_across_a_replaced_channel_lets_a_later_event_overtake_and_void_a_dropped_one() {
    counterexamples_of(Variant::UnpinnedBatch, &[EFFECTS_IN_ORDER, NOTHING_LOST]);
}
