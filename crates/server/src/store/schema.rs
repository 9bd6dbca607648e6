//! Versioned schema migrations, applied in order at start-up.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A migration
//! is never edited once released: a change is a new entry at the end.

use rusqlite::Connection;

/// The migrations, oldest first. Index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: services, check history, events, outbox, hourly uptime.
    r#"
    CREATE TABLE services (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        protocol TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        path TEXT NOT NULL,
        emails TEXT NOT NULL,
        timeout INTEGER NOT NULL,
        interval INTEGER NOT NULL,
        unhealthy_threshold INTEGER NOT NULL,
        healthy_threshold INTEGER NOT NULL,
        expected_status TEXT NOT NULL,
        tls_verify INTEGER NOT NULL,
        cert_warn_days INTEGER NOT NULL,
        token_hash TEXT NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'unknown',
        successes INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        state_since INTEGER NOT NULL,
        last_check_at INTEGER,
        last_result TEXT,
        last_reason TEXT,
        last_duration_us INTEGER,
        last_healthy_at INTEGER,
        last_failure_reason TEXT,
        cert_expires_at INTEGER,
        last_notified_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        service_id INTEGER NOT NULL,
        at INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        result TEXT NOT NULL,
        reason TEXT,
        http_status INTEGER,
        details TEXT
    );
    CREATE INDEX checks_by_service ON checks(service_id, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        check_id INTEGER,
        reason TEXT
    );
    CREATE INDEX events_by_service ON events(service, id);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        service TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT,
        target TEXT NOT NULL,
        recipients TEXT NOT NULL,
        previous_since INTEGER,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        sent_at INTEGER,
        message_id TEXT,
        batch_id INTEGER
    );
    CREATE INDEX notifications_by_status ON notifications(status, next_attempt_at);
    CREATE INDEX notifications_by_service ON notifications(service_id, status);
    CREATE TABLE uptime (
        service_id INTEGER NOT NULL,
        hour INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (service_id, hour)
    ) WITHOUT ROWID;
    "#,
    // 2: check history as one chain per service instead of an index.
    //
    // `checks_by_service` put one random index page in every commit for
    // every check (100,000 services: most of the writer's I/O). Each check
    // now names its service's previous check (`prev_id`) and its number in
    // that service's history (`seq`); the service row names its newest
    // check. The table is only ever appended to (its tail pages), a history
    // read walks the chain by rowid, and pruning compares `seq` with the
    // service's newest. `meta.heads_through`: every check up to this id is
    // reflected in `services.last_check_id` (start-up repairs the rest).
    r#"
    ALTER TABLE checks ADD COLUMN prev_id INTEGER;
    ALTER TABLE checks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN last_check_id INTEGER;
    ALTER TABLE services ADD COLUMN check_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE checks SET prev_id = w.p, seq = w.s FROM (
        SELECT id,
               LAG(id) OVER (PARTITION BY service_id ORDER BY id) AS p,
               ROW_NUMBER() OVER (PARTITION BY service_id ORDER BY id) AS s
        FROM checks
    ) AS w WHERE w.id = checks.id;
    UPDATE services SET last_check_id = h.m, check_seq = h.n FROM (
        SELECT service_id, MAX(id) AS m, COUNT(*) AS n FROM checks GROUP BY service_id
    ) AS h WHERE h.service_id = services.id;
    DROP INDEX checks_by_service;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('heads_through', (SELECT COALESCE(MAX(id), 0) FROM checks));
    "#,
    // 3: heartbeat (push) services (SPEC section 15). Their protocol is
    // `HEARTBEAT` (the kind); `period` and `grace` in seconds; `ping_id` is
    // the 128-bit credential of the ping URL, unique; `last_ping_at` the
    // latest ping of any kind, `last_success_ping_at` the latest success
    // (the deadline counts from it, or from `created_at` before the first).
    // Other services keep every column as it was: their stored target is
    // not re-derived (SPEC section 2).
    r#"
    ALTER TABLE services ADD COLUMN period INTEGER;
    ALTER TABLE services ADD COLUMN grace INTEGER;
    ALTER TABLE services ADD COLUMN ping_id TEXT;
    ALTER TABLE services ADD COLUMN last_ping_at INTEGER;
    ALTER TABLE services ADD COLUMN last_success_ping_at INTEGER;
    CREATE UNIQUE INDEX services_by_ping_id ON services(ping_id) WHERE ping_id IS NOT NULL;
    "#,
    // 4: notification channels as named objects (SPEC section 13). A
    // channel's public settings are JSON in `config`, its credential alone
    // in `secret` (never read back by the API). `services.channels` is the
    // service's JSON list of channel names (empty: the default channels).
    // `deliveries` is the outbox of named channels: one row per
    // notification and channel, written in the event's transaction, retried
    // on its own; AUTOINCREMENT so that a delivery id is never reused.
    r#"
    CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        is_default INTEGER NOT NULL,
        config TEXT NOT NULL,
        secret TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ALTER TABLE services ADD COLUMN channels TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        service TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT,
        target TEXT NOT NULL,
        previous_since INTEGER,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        sent_at INTEGER
    );
    CREATE INDEX deliveries_by_status ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_by_service ON deliveries(service_id, channel, status);
    "#,
    // 5: tags and silences (SPEC section 14). `services.tags` is a JSON list.
    // A silence matches services by name or tag (JSON lists); it is one-off
    // (`starts_at`, `ends_at`, Unix ms) or weekly (`weekly` such as
    // "sun 02:00-04:00" in the IANA zone `tz`). Outbox rows of a silenced
    // service are written `held` until the silence's end (`next_attempt_at`).
    r#"
    ALTER TABLE services ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        services TEXT NOT NULL,
        tags TEXT NOT NULL,
        starts_at INTEGER,
        ends_at INTEGER,
        weekly TEXT,
        tz TEXT,
        comment TEXT,
        created_at INTEGER NOT NULL
    );
    "#,
    // 6: dependencies (SPEC section 14): `services.depends_on` is a JSON
    // list of the names of the service's parents.
    r#"
    ALTER TABLE services ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
    "#,
    // 7: history that stays small (SPEC section 18). The hourly `uptime`
    // buckets become roll-ups (failures, warnings, latency min / sum / max
    // over `lat_n` checks, and a latency histogram `h0`..`h11`, see
    // store/rollup.rs), kept 30 days; `uptime_day` the same per day, kept
    // 400 days. Both are keyed by period first: the rows of the current
    // period are contiguous (the writer's updates dirty few pages), new
    // periods are appended (full pages) and old ones pruned from the head;
    // one service's rows are point reads, one per period. `checks.changed`
    // marks a check that changed its service's state (kept 7 days like
    // failures). The data step (`rollup::migrate_history`) turns the raw
    // history into roll-ups; the background prune then removes raw checks
    // beyond the new retention.
    r#"
    CREATE TABLE uptime_new (
        hour INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        total INTEGER NOT NULL,
        fails INTEGER NOT NULL DEFAULT 0,
        warns INTEGER NOT NULL DEFAULT 0,
        lat_n INTEGER NOT NULL DEFAULT 0,
        lat_min INTEGER,
        lat_sum INTEGER NOT NULL DEFAULT 0,
        lat_max INTEGER,
        h0 INTEGER NOT NULL DEFAULT 0,
        h1 INTEGER NOT NULL DEFAULT 0,
        h2 INTEGER NOT NULL DEFAULT 0,
        h3 INTEGER NOT NULL DEFAULT 0,
        h4 INTEGER NOT NULL DEFAULT 0,
        h5 INTEGER NOT NULL DEFAULT 0,
        h6 INTEGER NOT NULL DEFAULT 0,
        h7 INTEGER NOT NULL DEFAULT 0,
        h8 INTEGER NOT NULL DEFAULT 0,
        h9 INTEGER NOT NULL DEFAULT 0,
        h10 INTEGER NOT NULL DEFAULT 0,
        h11 INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, service_id)
    ) WITHOUT ROWID;
    INSERT INTO uptime_new (hour, service_id, ok, total, fails)
        SELECT hour, service_id, ok, total, total - ok FROM uptime;
    DROP TABLE uptime;
    ALTER TABLE uptime_new RENAME TO uptime;
    CREATE TABLE uptime_day (
        day INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        total INTEGER NOT NULL,
        fails INTEGER NOT NULL DEFAULT 0,
        warns INTEGER NOT NULL DEFAULT 0,
        lat_n INTEGER NOT NULL DEFAULT 0,
        lat_min INTEGER,
        lat_sum INTEGER NOT NULL DEFAULT 0,
        lat_max INTEGER,
        h0 INTEGER NOT NULL DEFAULT 0,
        h1 INTEGER NOT NULL DEFAULT 0,
        h2 INTEGER NOT NULL DEFAULT 0,
        h3 INTEGER NOT NULL DEFAULT 0,
        h4 INTEGER NOT NULL DEFAULT 0,
        h5 INTEGER NOT NULL DEFAULT 0,
        h6 INTEGER NOT NULL DEFAULT 0,
        h7 INTEGER NOT NULL DEFAULT 0,
        h8 INTEGER NOT NULL DEFAULT 0,
        h9 INTEGER NOT NULL DEFAULT 0,
        h10 INTEGER NOT NULL DEFAULT 0,
        h11 INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, service_id)
    ) WITHOUT ROWID;
    ALTER TABLE checks ADD COLUMN changed INTEGER;
    "#,
    // 8: the dashboard's sort by last change (`ORDER BY state_since DESC,
    // name`, store/dashboard.rs) walks this index and stops after a page,
    // instead of sorting every service (56 ms at 100,000 services before,
    // docs/performance.md). `state_since` changes only with the state, so
    // the writer's per-check updates do not touch it.
    r#"
    CREATE INDEX services_by_change ON services(state_since DESC, name);
    "#,
    // 9: digests (SPEC section 14, store/digests.rs). `due_at` is when the
    // outbox decided a row (Unix ms): sent on its own, or `digested` into
    // the digest of its destination's window. A digest is one message per
    // destination (`outbox` 'channel' with the channel's name, or 'mail'
    // with one recipient address) listing the rows due in [starts_at,
    // ends_at); it is delivered from `ends_at` on and retried like any row.
    r#"
    ALTER TABLE notifications ADD COLUMN due_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN due_at INTEGER;
    CREATE INDEX deliveries_by_due ON deliveries(channel, due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX notifications_by_due ON notifications(due_at) WHERE due_at IS NOT NULL;
    CREATE TABLE digests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outbox TEXT NOT NULL,
        destination TEXT NOT NULL,
        starts_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        sent_at INTEGER
    );
    CREATE INDEX digests_by_destination ON digests(outbox, destination, ends_at);
    CREATE INDEX digests_by_status ON digests(status, next_attempt_at);
    "#,
    // 10: one service's mail, newest first (the dashboard's service page,
    // `/api/v1/notifications?service=`, store/outbox.rs) read through this
    // index instead of walking the whole outbox backwards until enough
    // rows of that name turn up.
    r#"
    CREATE INDEX notifications_by_name ON notifications(service, id);
    "#,
    // 11: packed roll-ups (SPEC section 18, store/rollup.rs "Packed
    // rows"). A row of `uptime` / `uptime_day` becomes its key and one
    // blob, `roll`, holding total, fails, warns, lat_n, lat_min, lat_sum,
    // lat_max and the non-empty histogram buckets as varints (`ok` is
    // total - fails in every row): about 30 instead of 48 bytes per hourly
    // row (docs/storage.md, "Disk needed"). `hc_roll_pack` is registered
    // on the connection by `migrate_to`. The freed pages stay in the file
    // (its free list, reused as it grows) until a `VACUUM`.
    r#"
    CREATE TABLE uptime_packed (
        hour INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        roll BLOB NOT NULL,
        PRIMARY KEY (hour, service_id)
    ) WITHOUT ROWID;
    INSERT INTO uptime_packed (hour, service_id, roll)
        SELECT hour, service_id, hc_roll_pack(total, fails, warns, lat_n, lat_min, lat_sum,
            lat_max, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11)
        FROM uptime ORDER BY hour, service_id;
    DROP TABLE uptime;
    ALTER TABLE uptime_packed RENAME TO uptime;
    CREATE TABLE uptime_day_packed (
        day INTEGER NOT NULL,
        service_id INTEGER NOT NULL,
        roll BLOB NOT NULL,
        PRIMARY KEY (day, service_id)
    ) WITHOUT ROWID;
    INSERT INTO uptime_day_packed (day, service_id, roll)
        SELECT day, service_id, hc_roll_pack(total, fails, warns, lat_n, lat_min, lat_sum,
            lat_max, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11)
        FROM uptime_day ORDER BY day, service_id;
    DROP TABLE uptime_day;
    ALTER TABLE uptime_day_packed RENAME TO uptime_day;
    "#,
];

/// The migration whose data step is [`super::rollup::migrate_history`].
const ROLLUP_MIGRATION: usize = 7;

/// The migration that packs the roll-ups (it calls `hc_roll_pack`).
#[cfg(test)]
pub(crate) const PACK_MIGRATION: usize = 11;

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration newer than the database, each in its own
/// transaction. Refuses a database written by a newer build. Registers the
/// roll-ups' SQL functions on `conn` first ([`super::rollup::register_functions`]).
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    migrate_to(conn, VERSION)
}

/// [`migrate`], stopping at schema version `target` (tests build old files).
pub(crate) fn migrate_to(
    conn: &mut Connection,
    target: i64,
) -> rusqlite::Result<Result<(), String>> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Ok(Err(format!(
            "database schema version {current} is newer than this build's {VERSION}; upgrade healthchecker"
        )));
    }
    // Migration 11 packs roll-ups with `hc_roll_pack`; the writer (whose
    // connection `Store::open` migrates) upserts them with `hc_roll_merge`.
    super::rollup::register_functions(conn)?;
    let upto = MIGRATIONS.iter().take(target as usize);
    for (i, sql) in upto.enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i + 1 == ROLLUP_MIGRATION {
            super::rollup::migrate_history(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(Ok(()))
}
