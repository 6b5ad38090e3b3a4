-- The shipping service's shipments: exactly one per paid order.

CREATE TABLE shipments (
    id               UUID PRIMARY KEY,
    order_id         UUID        NOT NULL UNIQUE,
    customer_id      TEXT        NOT NULL,
    payment_id       UUID        NOT NULL,
    carrier          TEXT        NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled')),
    -- the OrderPaid event that created the shipment
    cause_message_id UUID        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX shipments_customer ON shipments (customer_id);
