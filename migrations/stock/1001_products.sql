-- The stock service's catalogue, on-hand quantities and reservations.

CREATE TABLE products (
    sku             TEXT PRIMARY KEY,
    name            TEXT   NOT NULL,
    price_cents     BIGINT NOT NULL CHECK (price_cents >= 0),
    -- quantity at seeding time: the invariant checker compares against it
    initial_on_hand INT    NOT NULL CHECK (initial_on_hand >= 0),
    on_hand         INT    NOT NULL CHECK (on_hand >= 0)
);

-- One row per order line reserved; released when the order is cancelled.
CREATE TABLE reservations (
    order_id    UUID        NOT NULL,
    sku         TEXT        NOT NULL REFERENCES products (sku),
    quantity    INT         NOT NULL CHECK (quantity > 0),
    status      TEXT        NOT NULL CHECK (status IN ('reserved', 'released')),
    reserved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at TIMESTAMPTZ,
    PRIMARY KEY (order_id, sku)
);

CREATE INDEX reservations_sku ON reservations (sku) WHERE status = 'reserved';

-- The seeded catalogue. Plenty of most things; a scarce item and an empty
-- one so that out-of-stock paths run in every demo and test.
INSERT INTO products (sku, name, price_cents, initial_on_hand, on_hand) VALUES
    ('SKU-001', 'Espresso cup',          899, 100000, 100000),
    ('SKU-002', 'Pour-over kettle',     4599, 100000, 100000),
    ('SKU-003', 'Burr grinder',        12900, 100000, 100000),
    ('SKU-004', 'Paper filters (100)',   499, 100000, 100000),
    ('SKU-005', 'Coffee beans 1kg',     2450, 100000, 100000),
    ('SKU-006', 'Milk frother',         3999, 100000, 100000),
    ('SKU-007', 'Travel mug',           1999, 100000, 100000),
    ('SKU-008', 'Barista apron',        2900, 100000, 100000),
    ('SKU-RARE', 'Limited-edition grinder', 49900, 20, 20),
    ('SKU-EMPTY', 'Sold-out dripper',   2999, 0, 0);
