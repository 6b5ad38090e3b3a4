//! The producing service: a business write and its outbox row commit in one
//! transaction (`Outbox::add` in the caller's transaction), so either both
//! exist or neither does; there is no state in between to crash in.

use crate::state::{OutboxRow, SystemState};

pub fn business_write(state: &mut SystemState, order: u8) {
    let writes = &mut state.producer.writes[usize::from(order)];
    *writes += 1;
    // The order's row lock serializes its writes, so its rows get ids (and
    // sequence numbers) in commit order.
    state.producer.outbox.push(OutboxRow { order, sequence: *writes, sent: false });
}
