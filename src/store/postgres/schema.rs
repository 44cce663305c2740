//! Schema migrations of the PostgreSQL store: an ordered list of SQL scripts run inside the
//! store's own PostgreSQL schema, tracked in its `keyward_schema` table, applied in one
//! transaction under an advisory lock. Owns only the table layout; must not touch rows
//! beyond what a migration needs.

/// Version 1: keys, the append-only audit log with its sequence counter, the apply lease,
/// quota usage, meta. Text timestamps use the same fixed-width RFC 3339 encoding as the
/// SQLite store (UTC, nanoseconds), in the "C" collation so text order is time order.
const V1: &str = r#"
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE keys (
    id                   text COLLATE "C" PRIMARY KEY,
    name                 text NOT NULL,
    environment          text NOT NULL,
    owner                text NOT NULL,
    purpose              text,
    scopes               jsonb NOT NULL,              -- array of "area:level"
    labels               jsonb NOT NULL,              -- object
    status               text NOT NULL CHECK (status IN ('active', 'disabled', 'revoked')),
    issued_at            text COLLATE "C" NOT NULL,   -- RFC 3339, UTC, nanoseconds
    created_at           text COLLATE "C" NOT NULL,
    updated_at           text COLLATE "C" NOT NULL,
    expires_at           text COLLATE "C",
    lifetime             text,
    version              bigint NOT NULL CHECK (version >= 1),
    generation           bigint NOT NULL CHECK (generation >= 0),
    spec_generation      bigint NOT NULL CHECK (spec_generation >= 0),
    previous_valid_until text COLLATE "C",
    recipients           jsonb NOT NULL,              -- object principal -> fingerprint
    quota_per_day        bigint CHECK (quota_per_day >= 0),
    protected            boolean NOT NULL,
    managed_by           text,
    applied_digest       text,
    secret_mac           bytea NOT NULL,              -- HMAC-SHA256(pepper, sha256 hex of secret)
    previous_secret_mac  bytea
);
CREATE INDEX keys_owner ON keys (owner);
CREATE INDEX keys_environment ON keys (environment);
CREATE INDEX keys_name_environment ON keys (name, environment);
CREATE INDEX keys_expires_at ON keys (expires_at) WHERE expires_at IS NOT NULL;

-- One row; bumped in the transaction that appends an event, so sequence numbers are
-- gapless and in commit order (a reader paging with `seq > n` never skips an event that
-- commits later with a smaller number, as it could with a plain sequence).
CREATE TABLE event_seq (
    slot integer PRIMARY KEY CHECK (slot = 1),
    last bigint NOT NULL
);
INSERT INTO event_seq (slot, last) VALUES (1, 0);

CREATE TABLE events (
    seq        bigint PRIMARY KEY,
    at         text COLLATE "C" NOT NULL,
    who        text NOT NULL,
    action     text NOT NULL,
    key_id     text COLLATE "C",
    key_name   text,
    commit_sha text,
    detail     jsonb NOT NULL                         -- never a secret or a hash
);
CREATE INDEX events_key_id ON events (key_id);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;
CREATE TRIGGER events_append_only_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

CREATE TABLE locks (
    slot        integer PRIMARY KEY CHECK (slot = 1), -- a single lease row
    id          text NOT NULL,
    holder      text NOT NULL,
    acquired_at text COLLATE "C" NOT NULL,
    expires_at  text COLLATE "C" NOT NULL
);

-- No foreign key to keys: a verify's counter upsert then never waits on, or deadlocks
-- with, a change of the key row. `delete` removes the key's counters itself.
CREATE TABLE quota_usage (
    key_id text COLLATE "C" NOT NULL,
    day    text COLLATE "C" NOT NULL,                 -- UTC date, YYYY-MM-DD
    calls  bigint NOT NULL CHECK (calls >= 0),
    PRIMARY KEY (key_id, day)
);
CREATE INDEX quota_usage_day ON quota_usage (day);
"#;

/// Version 2: the idempotency records of `keyward serve` (`POST /v1/keys` with an
/// `Idempotency-Key`), kept beside the keys so every instance on this schema shares them.
/// Written only by `server::idempotency_pg`; never holds a secret.
const V2: &str = r#"
CREATE TABLE serve_idempotency (
    idem_key    text COLLATE "C" PRIMARY KEY,
    fingerprint text NOT NULL,
    key_id      text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'done')),
    status      integer,
    body        text,
    created_at  text COLLATE "C" NOT NULL,
    updated_at  text COLLATE "C" NOT NULL
);
CREATE INDEX serve_idempotency_created ON serve_idempotency (created_at);
"#;

/// Version 3: key usage counted at verify by `keyward serve` (`store::usage`), added to in
/// batches by every instance (an upsert adding calls), so several instances add up.
const V3: &str = r#"
CREATE TABLE key_usage (
    key_id  text COLLATE "C" NOT NULL,
    day     text COLLATE "C" NOT NULL,                -- UTC date, YYYY-MM-DD
    reason  text NOT NULL,                            -- the verify reason, `ok` when valid
    calls   bigint NOT NULL CHECK (calls >= 0),
    last_at text COLLATE "C" NOT NULL,                -- RFC 3339 of the last of these calls
    PRIMARY KEY (key_id, day, reason)
);
CREATE INDEX key_usage_day ON key_usage (day);
"#;

/// Version 4: every change to a key row (insert, update, delete; truncate as `*`) notifies
/// the channel [`keys_channel`] of this schema with the key id, at commit, whoever made it
/// (an instance, or SQL typed by hand), so each serving instance's key cache
/// (`super::cache`) forgets the key.
const V4: &str = r#"
CREATE FUNCTION keyward_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    channel text := left('keyward_keys_' || TG_TABLE_SCHEMA, 63);
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify(channel, '*');
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify(channel, OLD.id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id <> OLD.id) THEN
        PERFORM pg_notify(channel, NEW.id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER keys_notify AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keyward_keys_changed();
CREATE TRIGGER keys_notify_truncate AFTER TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keyward_keys_changed();
"#;

/// The LISTEN/NOTIFY channel of a schema's key changes (as V4's trigger names it: at most
/// 63 bytes, PostgreSQL's identifier length).
pub(super) fn keys_channel(schema: &str) -> String {
    let mut c = format!("keyward_keys_{schema}");
    c.truncate(63);
    c
}

/// Version 5: the shared daily budget's counters and alert claims (`store::budget`).
const V5: &str = r#"
CREATE TABLE budget_usage (
    scope text COLLATE "C" NOT NULL,                  -- `store`, or `label:name=value`
    day   text COLLATE "C" NOT NULL,                  -- UTC date, YYYY-MM-DD
    calls bigint NOT NULL CHECK (calls >= 0),         -- reserved by the serving instances
    PRIMARY KEY (scope, day)
);
CREATE TABLE budget_alerts (
    scope   text COLLATE "C" NOT NULL,
    day     text COLLATE "C" NOT NULL,
    percent integer NOT NULL CHECK (percent BETWEEN 1 AND 100),
    at      text COLLATE "C" NOT NULL,                -- when an instance claimed it
    PRIMARY KEY (scope, day, percent)
);
"#;

/// Every migration in order; migration `i` brings the schema to version `i + 1`.
/// Append only: never edit or reorder a migration that has been released.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The table that records the schema version (created before any migration).
pub(super) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS keyward_schema (
    slot       integer PRIMARY KEY CHECK (slot = 1),
    version    integer NOT NULL CHECK (version >= 0),
    updated_at text NOT NULL
)";
