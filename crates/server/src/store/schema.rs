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
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration newer than the database, each in its own
/// transaction. Refuses a database written by a newer build.
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
    let upto = MIGRATIONS.iter().take(target as usize);
    for (i, sql) in upto.enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(Ok(()))
}
