-- Messaging tables shared by every service database (outbox, inbox).
-- Versions 1..999 belong to this folder; each service's own migrations start at 1000.

-- Transactional outbox: rows are written in the same transaction as the
-- business change and published afterwards by the relay.
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    message_id    UUID        NOT NULL UNIQUE,
    message_type  TEXT        NOT NULL,
    transport     TEXT        NOT NULL CHECK (transport IN ('amqp', 'kafka')),
    -- queue name (AMQP, default exchange) or topic (Kafka)
    destination   TEXT        NOT NULL,
    -- the aggregate (order id): ordering scope and Kafka key
    partition_key TEXT        NOT NULL,
    -- relay lane, a stable hash of partition_key: one relay at a time per lane
    lane          SMALLINT    NOT NULL,
    envelope      JSONB       NOT NULL,
    payload       JSONB       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    sent_at       TIMESTAMPTZ,
    attempts      INT         NOT NULL DEFAULT 0,
    last_error    TEXT
);

CREATE INDEX outbox_pending ON outbox (lane, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wake the relay at commit time; it still polls in case a notification is missed.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotent inbox: one row per (consumer, message) in the same transaction
-- as the message's effect.
CREATE TABLE inbox (
    consumer     TEXT        NOT NULL,
    message_id   UUID        NOT NULL,
    message_type TEXT        NOT NULL,
    -- 'applied', or 'stale' when an older event arrived after a newer one
    outcome      TEXT        NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX inbox_received ON inbox (received_at);

-- Highest event sequence applied per producer aggregate, so an older event
-- delivered late is recorded and skipped instead of moving state backwards.
CREATE TABLE inbox_sequence (
    consumer      TEXT   NOT NULL,
    producer      TEXT   NOT NULL,
    aggregate_id  TEXT   NOT NULL,
    last_sequence BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, producer, aggregate_id)
);
