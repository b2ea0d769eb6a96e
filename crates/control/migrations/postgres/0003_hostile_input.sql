-- Hostile input. Keep in step with ../sqlite/0003_hostile_input.sql.

-- The address blocks the operator gave each edge: a relay key registering that edge may
-- publish only listener addresses inside them. No row: none (the relay key may publish
-- nothing for that edge; the operator's key may). Kept apart from `edges`, so the operator
-- can grant before the relay first registers and a deregistration keeps the grant.
CREATE TABLE edge_cidrs (
    edge_id     TEXT PRIMARY KEY,
    cidrs       TEXT NOT NULL, -- JSON array of "ADDRESS/PREFIX"
    updated_at  BIGINT NOT NULL
);
