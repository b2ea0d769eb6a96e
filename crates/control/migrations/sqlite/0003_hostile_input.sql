-- Hostile input. Keep in step with ../postgres/0003_hostile_input.sql.

-- Before usage sums saturated, an overflowing `+` stored a REAL here, which no query can read
-- back as a 64-bit integer. CAST turns a REAL past i64::MAX into i64::MAX (SQLite's rule), so
-- the row keeps the saturated total. (PostgreSQL failed such a report instead: nothing to
-- repair there.)
UPDATE usage_daily SET seconds = CAST(seconds AS INTEGER) WHERE typeof(seconds) <> 'integer';
UPDATE usage_daily SET bytes = CAST(bytes AS INTEGER) WHERE typeof(bytes) <> 'integer';
UPDATE usage_daily SET peak_concurrency = CAST(peak_concurrency AS INTEGER)
    WHERE typeof(peak_concurrency) <> 'integer';

-- The address blocks the operator gave each edge: a relay key registering that edge may
-- publish only listener addresses inside them. No row: none (the relay key may publish
-- nothing for that edge; the operator's key may). Kept apart from `edges`, so the operator
-- can grant before the relay first registers and a deregistration keeps the grant.
CREATE TABLE edge_cidrs (
    edge_id     TEXT PRIMARY KEY,
    cidrs       TEXT NOT NULL, -- JSON array of "ADDRESS/PREFIX"
    updated_at  INTEGER NOT NULL
);
