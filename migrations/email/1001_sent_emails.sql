-- The email service's record of every e-mail, and its SMTP delivery state.

-- One e-mail per order and kind, recorded in the transaction of the event
-- that caused it; SMTP delivery happens afterwards, at least once.
CREATE TABLE sent_emails (
    id                   UUID PRIMARY KEY,
    order_id             UUID        NOT NULL,
    kind                 TEXT        NOT NULL
        CHECK (kind IN ('order_confirmation', 'shipment_notice', 'cancellation_notice')),
    recipient            TEXT        NOT NULL,
    subject              TEXT        NOT NULL,
    body                 TEXT        NOT NULL,
    -- RFC 5322 Message-ID, stable per (order, kind): a redelivered copy is
    -- recognisable downstream
    message_id_header    TEXT        NOT NULL UNIQUE,
    -- the event that caused the e-mail
    cause_message_id     UUID        NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- SMTP delivery: set once the server accepted the message
    smtp_delivered_at    TIMESTAMPTZ,
    -- set when the server or the address refused it for good: not retried
    smtp_rejected_at     TIMESTAMPTZ,
    smtp_attempts        INT         NOT NULL DEFAULT 0,
    smtp_last_error      TEXT,
    -- the sender leaves a row alone until then (backoff, or a claim in progress)
    smtp_next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind)
);

CREATE INDEX sent_emails_undelivered ON sent_emails (smtp_next_attempt_at)
    WHERE smtp_delivered_at IS NULL AND smtp_rejected_at IS NULL;
