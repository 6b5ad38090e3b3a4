-- A row the broker keeps refusing (no such queue, message too large, a
-- corrupt row) would otherwise block every later row of its relay lane
-- forever. After a bounded number of refusals the relay parks it: it stays
-- unsent (the invariant checker and the outbox metrics report it) and the
-- rest of the lane moves on. `UPDATE outbox SET parked_at = NULL, refusals = 0
-- WHERE id = …` hands it back to the relay once the cause is fixed.
ALTER TABLE outbox
    ADD COLUMN refusals  INT NOT NULL DEFAULT 0,
    ADD COLUMN parked_at TIMESTAMPTZ;

DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (lane, id) WHERE sent_at IS NULL AND parked_at IS NULL;
