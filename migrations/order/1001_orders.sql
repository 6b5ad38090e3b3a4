-- The order service's own tables. The order saga's state is the order row.

CREATE TABLE orders (
    id                  UUID PRIMARY KEY,
    customer_id         TEXT        NOT NULL,
    payment_method      TEXT        NOT NULL,
    status              TEXT        NOT NULL
        CHECK (status IN ('PLACED', 'STOCK_RESERVED', 'PAID', 'COMPLETED', 'CANCELLED')),
    -- known once stock has priced the reserved lines
    total_cents         BIGINT,
    payment_id          UUID,
    cancel_reason       TEXT,
    -- the command whose reply the saga waits for (replies carry it as causation id)
    awaiting_message_id UUID,
    -- sequence number of the last event published for this order
    event_sequence      BIGINT      NOT NULL DEFAULT 0,
    idempotency_key     TEXT UNIQUE,
    request_fingerprint TEXT,
    trace_id            TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE INDEX orders_status ON orders (status);

CREATE TABLE order_lines (
    order_id         UUID    NOT NULL REFERENCES orders (id),
    line_no          INT     NOT NULL,
    sku              TEXT    NOT NULL,
    quantity         INT     NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT,
    PRIMARY KEY (order_id, line_no)
);

-- Every transition, and every message the saga recorded but ignored.
CREATE TABLE order_history (
    id           BIGSERIAL PRIMARY KEY,
    order_id     UUID        NOT NULL REFERENCES orders (id),
    from_status  TEXT,
    to_status    TEXT        NOT NULL,
    message_id   UUID,
    message_type TEXT,
    note         TEXT,
    at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX order_history_order ON order_history (order_id, id);
