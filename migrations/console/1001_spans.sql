-- The console's span store: every span the services export over OTLP,
-- kept for a bounded time and up to a bounded count (see console/src/retention.rs).

CREATE TABLE spans (
    -- insertion order: retention by count removes the lowest ids first
    id              BIGSERIAL   PRIMARY KEY,
    trace_id        TEXT        NOT NULL,
    span_id         TEXT        NOT NULL,
    parent_span_id  TEXT        NOT NULL DEFAULT '',
    service         TEXT        NOT NULL,
    name            TEXT        NOT NULL,
    -- OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    kind            SMALLINT    NOT NULL,
    start_unix_nano BIGINT      NOT NULL,
    end_unix_nano   BIGINT      NOT NULL,
    is_error        BOOLEAN     NOT NULL DEFAULT false,
    -- the order this span is about, when it says so (attribute order_id)
    order_id        UUID,
    attributes      JSONB       NOT NULL DEFAULT '{}',
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (trace_id, span_id)
);

CREATE INDEX spans_trace ON spans (trace_id);
CREATE INDEX spans_order ON spans (order_id, start_unix_nano) WHERE order_id IS NOT NULL;
CREATE INDEX spans_received ON spans (received_at);

-- Orders the console has seen spans of, newest first for the list of
-- recent orders (so the list never scans the span table).
CREATE TABLE orders_seen (
    order_id   UUID        PRIMARY KEY,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_seen_first ON orders_seen (first_seen DESC);
