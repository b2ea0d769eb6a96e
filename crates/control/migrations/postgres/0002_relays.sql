-- Relay heartbeats, admission leases and usage metering. Keep in step with
-- ../sqlite/0002_relays.sql.

-- The last heartbeat (Unix seconds; NULL: never) and the load it reported. A relay whose
-- heartbeat is older than the control plane's heartbeat timeout drops out of selection.
ALTER TABLE edges ADD COLUMN heartbeat_at BIGINT;
ALTER TABLE edges ADD COLUMN load_kbps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN allocations BIGINT NOT NULL DEFAULT 0;

-- One row per admitted Force-mode allocation, renewed by its relay while it lives. The counts
-- of a relay that stops renewing (crashed, cut off) disappear when its leases expire.
CREATE TABLE leases (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    region      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    relay_id    TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX leases_app_channel ON leases (app_id, channel);
CREATE INDEX leases_expiry ON leases (expires_at);

-- Usage reports already applied: a retried report is recognised by its id and ignored.
CREATE TABLE usage_reports (
    report_id    TEXT PRIMARY KEY,
    relay_id     TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);

-- Per-day usage. No foreign key: usage is a billing record and outlives a deleted app.
CREATE TABLE usage_daily (
    app_id            TEXT NOT NULL,
    day               TEXT NOT NULL, -- YYYY-MM-DD, UTC
    mode              TEXT NOT NULL, -- auto, force_udp, force_tcp
    quality           TEXT NOT NULL, -- the enablement's tier; 'none' for auto
    seconds           BIGINT NOT NULL,   -- allocation-seconds
    bytes             BIGINT NOT NULL,   -- relayed bytes, both directions
    peak_concurrency  BIGINT NOT NULL,
    PRIMARY KEY (app_id, day, mode, quality)
);
