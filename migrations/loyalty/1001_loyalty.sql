-- The loyalty service's point ledger and the balance it adds up to.

CREATE TABLE loyalty_accounts (
    customer_id TEXT PRIMARY KEY,
    -- the sum of the customer's ledger entries, kept with each entry
    balance     BIGINT      NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only: one entry per event handled. Nothing here stops the same
-- event from being applied twice: that is the inbox's job, and this table is
-- where a missing inbox shows (the chaos suite's skip-inbox negative control).
CREATE TABLE loyalty_ledger (
    id               BIGSERIAL PRIMARY KEY,
    customer_id      TEXT        NOT NULL REFERENCES loyalty_accounts (customer_id),
    order_id         UUID        NOT NULL,
    kind             TEXT        NOT NULL CHECK (kind IN ('credit', 'reversal')),
    -- signed: a credit adds points, its reversal takes the same back
    points           BIGINT      NOT NULL,
    -- the event that caused the entry
    cause_message_id UUID        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'credit') = (points >= 0))
);

CREATE INDEX loyalty_ledger_customer ON loyalty_ledger (customer_id, id);
CREATE INDEX loyalty_ledger_order ON loyalty_ledger (order_id);
