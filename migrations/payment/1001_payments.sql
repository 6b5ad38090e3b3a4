-- The payment service's tables: the simulated provider's charges and refunds.

-- Per-customer credit limits; customers without a row get the service's
-- default (PAYMENT_DEFAULT_LIMIT_CENTS).
CREATE TABLE customer_limits (
    customer_id TEXT PRIMARY KEY,
    limit_cents BIGINT      NOT NULL CHECK (limit_cents >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One charge attempt per order: the order id is the provider's idempotency
-- key, so a repeated ProcessPayment (even under a new message id) gets the
-- recorded outcome back instead of a second charge.
CREATE TABLE payments (
    id                 UUID PRIMARY KEY,
    order_id           UUID        NOT NULL UNIQUE,
    customer_id        TEXT        NOT NULL,
    amount_cents       BIGINT      NOT NULL CHECK (amount_cents >= 0),
    payment_method     TEXT        NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_reason     TEXT,
    -- the ProcessPayment that created the row
    request_message_id UUID        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'declined') = (decline_reason IS NOT NULL))
);

CREATE INDEX payments_customer ON payments (customer_id);

-- At most one refund per payment, always of the full amount. A succeeded
-- payment with a refund no longer stands.
CREATE TABLE refunds (
    id                 UUID PRIMARY KEY,
    payment_id         UUID        NOT NULL UNIQUE REFERENCES payments (id),
    order_id           UUID        NOT NULL,
    amount_cents       BIGINT      NOT NULL CHECK (amount_cents >= 0),
    reason             TEXT        NOT NULL,
    -- the RefundPayment that created the row
    request_message_id UUID        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX refunds_order ON refunds (order_id);
