-- cloudproxy control plane, SQLite. Times are Unix seconds (INTEGER); enums are TEXT
-- holding their wire spelling. Keep in step with ../postgres/0001_init.sql.

CREATE TABLE owners (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Bearer API keys of app owners; only the SHA-256 of the key is stored. The operator's key is
-- configuration, never stored.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE apps (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT REFERENCES owners (id) ON DELETE RESTRICT,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    next_key_seq  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX apps_owner ON apps (owner_id);

CREATE TABLE app_keys (
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    not_after   INTEGER,
    PRIMARY KEY (app_id, key_id)
);

-- One row per region: the lock that serializes reservations and allow-list versions.
CREATE TABLE regions (
    code  TEXT PRIMARY KEY
);
INSERT INTO regions (code) VALUES
    ('mainland_china'), ('europe'), ('india'), ('japan'), ('north_america'), ('southeast_asia');

CREATE TABLE enablement_requests (
    id                           TEXT PRIMARY KEY,
    app_id                       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    region                       TEXT NOT NULL REFERENCES regions (code),
    sdk                          TEXT NOT NULL,
    use_case                     TEXT NOT NULL,
    max_concurrent_channels      INTEGER NOT NULL,
    max_users_per_channel        INTEGER NOT NULL,
    max_proxy_users_per_channel  INTEGER NOT NULL,
    quality                      TEXT NOT NULL,
    mode                         TEXT NOT NULL,
    state                        TEXT NOT NULL,
    reason                       TEXT,
    estimated_kbps               INTEGER NOT NULL,
    reserved_kbps                INTEGER NOT NULL,
    created_at                   INTEGER NOT NULL,
    updated_at                   INTEGER NOT NULL
);
CREATE INDEX enablement_requests_app ON enablement_requests (app_id);
CREATE INDEX enablement_requests_region ON enablement_requests (region, state);

CREATE TABLE edges (
    id             TEXT PRIMARY KEY,
    region         TEXT NOT NULL REFERENCES regions (code),
    pool           TEXT NOT NULL CHECK (pool IN ('static', 'dynamic')),
    capacity_kbps  INTEGER NOT NULL,
    listeners      TEXT NOT NULL, -- JSON array of {transport, ip, port}
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX edges_region ON edges (region);

CREATE TABLE allowlist_versions (
    region        TEXT NOT NULL REFERENCES regions (code),
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    effective_at  INTEGER NOT NULL,
    rows_json     TEXT NOT NULL,
    changes_json  TEXT NOT NULL,
    PRIMARY KEY (region, version)
);
