//! Versioned migrations of the PostgreSQL database, applied in order at
//! start-up, as the SQLite store's are (`store/schema.rs`).
//!
//! `schema_migrations` holds one row per migration applied. A migration is
//! never edited once released: a change is a new entry at the end. All
//! pending migrations run in one transaction under an advisory lock, so
//! nodes starting at the same time apply each one exactly once, and a
//! failed migration leaves the database as it was (PostgreSQL's DDL is
//! transactional).

use super::ClusterError;
use healthchecker_core::cluster::BUCKETS;

/// The migrations, oldest first. Index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: the nodes of the cluster and the bucket leases, one row per bucket.
    r#"
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        addr text NOT NULL DEFAULT '',
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE buckets (
        bucket int PRIMARY KEY CHECK (bucket >= 0 AND bucket < 1024),
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        expires_at timestamptz
    );
    INSERT INTO buckets (bucket) SELECT generate_series(0, 1023);
    "#,
    // 2: the store's tables (cluster/store/), the SQLite schema's as of its
    // version 11 in PostgreSQL types. Times are Unix ms (`bigint`), as in
    // SQLite and the API; JSON lists are `text` read by serde, as in SQLite.
    // Differences, each for PostgreSQL's sake:
    // - `services.bucket` is the service's lease bucket (`Bucket::of` its
    //   name), so that a node selects its buckets' services by index and
    //   the writer fences a batch with one lookup.
    // - `checks` is an ordinary table with one index on `(service_id, id)`
    //   instead of SQLite's chain of `prev_id` (that chain saved SQLite a
    //   random index page per commit; PostgreSQL's B-tree insert is cheap
    //   and a chain would need the writer to know every head). No primary
    //   key: ids come from the sequence, and nothing looks a check up by id
    //   alone, so a second index would only cost writes.
    // - Every id is a sequence, never reused (SQLite needed a `meta` row
    //   for services and AUTOINCREMENT for the outboxes).
    // - `notifications` and `deliveries` carry a claim (`claimed_by`,
    //   `claim_until` on the database's clock): a node delivers the rows it
    //   claimed (`FOR UPDATE SKIP LOCKED`), another takes them over when the
    //   claim expires.
    // - Roll-ups are the packed blob of store/rollup/pack.rs as `bytea`,
    //   merged in Rust by the writer (cluster/store/rollup.rs says why).
    r#"
    CREATE TABLE services (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        bucket int NOT NULL CHECK (bucket >= 0 AND bucket < 1024),
        protocol text NOT NULL,
        host text NOT NULL,
        port bigint NOT NULL,
        path text NOT NULL,
        emails text NOT NULL,
        timeout bigint NOT NULL,
        interval bigint NOT NULL,
        unhealthy_threshold bigint NOT NULL,
        healthy_threshold bigint NOT NULL,
        expected_status text NOT NULL,
        tls_verify boolean NOT NULL,
        cert_warn_days bigint NOT NULL,
        token_hash text NOT NULL,
        paused boolean NOT NULL DEFAULT false,
        state text NOT NULL DEFAULT 'unknown',
        successes bigint NOT NULL DEFAULT 0,
        failures bigint NOT NULL DEFAULT 0,
        state_since bigint NOT NULL,
        last_check_id bigint,
        last_check_at bigint,
        last_result text,
        last_reason text,
        last_duration_us bigint,
        last_healthy_at bigint,
        last_failure_reason text,
        cert_expires_at bigint,
        last_notified_at bigint,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        period bigint,
        grace bigint,
        ping_id text UNIQUE,
        last_ping_at bigint,
        last_success_ping_at bigint,
        channels text NOT NULL DEFAULT '[]',
        tags text NOT NULL DEFAULT '[]',
        depends_on text NOT NULL DEFAULT '[]'
    );
    CREATE INDEX services_by_bucket ON services (bucket);
    CREATE INDEX services_by_change ON services (state_since DESC, name);
    CREATE SEQUENCE checks_id_seq;
    CREATE TABLE checks (
        id bigint NOT NULL DEFAULT nextval('checks_id_seq'),
        service_id bigint NOT NULL,
        at bigint NOT NULL,
        duration_us bigint NOT NULL,
        result text NOT NULL,
        reason text,
        http_status int,
        details text,
        changed boolean NOT NULL DEFAULT false
    );
    ALTER SEQUENCE checks_id_seq OWNED BY checks.id;
    CREATE INDEX checks_by_service ON checks (service_id, id);
    CREATE TABLE events (
        id bigserial PRIMARY KEY,
        at bigint NOT NULL,
        service_id bigint NOT NULL,
        service text NOT NULL,
        kind text NOT NULL,
        from_state text,
        to_state text,
        check_id bigint,
        reason text
    );
    CREATE INDEX events_by_service ON events (service, id);
    CREATE TABLE notifications (
        id bigserial PRIMARY KEY,
        event_id bigint NOT NULL,
        service_id bigint NOT NULL,
        service text NOT NULL,
        created_at bigint NOT NULL,
        from_state text NOT NULL,
        to_state text NOT NULL,
        reason text,
        target text NOT NULL,
        recipients text NOT NULL,
        previous_since bigint,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        last_error text,
        sent_at bigint,
        message_id text,
        batch_id bigint,
        due_at bigint,
        claimed_by text,
        claim_until timestamptz
    );
    CREATE INDEX notifications_by_status ON notifications (status, next_attempt_at);
    CREATE INDEX notifications_by_service ON notifications (service_id, status);
    CREATE INDEX notifications_by_name ON notifications (service, id);
    CREATE TABLE channels (
        name text PRIMARY KEY,
        kind text NOT NULL,
        is_default boolean NOT NULL,
        config text NOT NULL,
        secret text,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL
    );
    CREATE TABLE deliveries (
        id bigserial PRIMARY KEY,
        channel text NOT NULL,
        event_id bigint NOT NULL,
        service_id bigint NOT NULL,
        service text NOT NULL,
        created_at bigint NOT NULL,
        from_state text NOT NULL,
        to_state text NOT NULL,
        reason text,
        target text NOT NULL,
        previous_since bigint,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        last_error text,
        sent_at bigint,
        due_at bigint,
        claimed_by text,
        claim_until timestamptz
    );
    CREATE INDEX deliveries_by_status ON deliveries (status, next_attempt_at);
    CREATE INDEX deliveries_by_service ON deliveries (service_id, channel, status);
    CREATE TABLE silences (
        id bigserial PRIMARY KEY,
        services text NOT NULL,
        tags text NOT NULL,
        starts_at bigint,
        ends_at bigint,
        weekly text,
        tz text,
        comment text,
        created_at bigint NOT NULL
    );
    CREATE TABLE digests (
        id bigserial PRIMARY KEY,
        outbox text NOT NULL,
        destination text NOT NULL,
        starts_at bigint NOT NULL,
        ends_at bigint NOT NULL,
        status text NOT NULL,
        attempts bigint NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        last_error text,
        sent_at bigint
    );
    CREATE INDEX digests_by_destination ON digests (outbox, destination, ends_at);
    CREATE INDEX digests_by_status ON digests (status, next_attempt_at);
    CREATE TABLE uptime (
        hour bigint NOT NULL,
        service_id bigint NOT NULL,
        roll bytea NOT NULL,
        PRIMARY KEY (hour, service_id)
    );
    CREATE TABLE uptime_day (
        day bigint NOT NULL,
        service_id bigint NOT NULL,
        roll bytea NOT NULL,
        PRIMARY KEY (day, service_id)
    );
    "#,
    // 3: digests are claimed like the outbox rows (cluster/store/digests.rs):
    // each node's mail sender and channel dispatcher claim the due digests
    // (`FOR UPDATE SKIP LOCKED`, `claim_until` on the database's clock), so
    // a digest goes out from one node, and from another once a dead node's
    // claim expires.
    r#"
    ALTER TABLE digests ADD COLUMN claimed_by text;
    ALTER TABLE digests ADD COLUMN claim_until timestamptz;
    "#,
    // 4: a check is added to its hour's roll-up only, no longer to its
    // day's too (one row version fewer per check); a past hour is folded
    // into its day once, by the prune job (`PgStore::fold_hours`), and
    // marked `folded` in the same transaction. Reads of days add the
    // hours not folded yet (the partial index finds them). The hour rows
    // written before this version are in their days already: `true` for
    // them, `false` for every row inserted from now on.
    r#"
    ALTER TABLE uptime ADD COLUMN folded boolean NOT NULL DEFAULT true;
    ALTER TABLE uptime ALTER COLUMN folded SET DEFAULT false;
    CREATE INDEX uptime_unfolded ON uptime (service_id, hour) WHERE NOT folded;
    "#,
    // 5: the number of services per bucket, kept by registration and
    // deletion in their transactions, so that the service limit is the sum
    // of 1,024 small rows instead of `count(*)` over `services` (a scan per
    // new name). Per bucket, not one row, so that registrations on several
    // nodes do not queue on one row lock.
    r#"
    CREATE TABLE service_counts (
        bucket int PRIMARY KEY CHECK (bucket >= 0 AND bucket < 1024),
        n bigint NOT NULL DEFAULT 0
    );
    INSERT INTO service_counts (bucket, n)
        SELECT g.b, count(s.id) FROM generate_series(0, 1023) g(b)
        LEFT JOIN services s ON s.bucket = g.b GROUP BY g.b;
    "#,
    // 6: WAL per check (SPEC 18, ≤ 200 B): the writer no longer writes a
    // service's row and its hour's roll-up with every batch
    // (cluster/store/writer.rs, docs/cluster.md "History").
    // - `checks.streak`: the consecutive successes (a pass or warn) or
    //   failures (otherwise) after the check, so that a read takes the
    //   counters and the last check from the newest check row, while the
    //   service row's copy of them is written once per period.
    // - `services.rolled_through`: every check of the service with an id up
    //   to it is in the roll-ups, none above; the writer rolls the checks
    //   above it up from the raw rows and moves it in one transaction, so a
    //   node that took over or restarted rolls each check up exactly once.
    //   Reads add the checks above it; pruning keeps them. Every check
    //   written before this version is in the roll-ups already: the mark
    //   starts at the last id drawn.
    // - Fill factors, so that the writer's once-a-period updates of a
    //   service row and of its hour's roll-up find room on their page (a
    //   HOT update: no index entries, no row lock record). Measured per
    //   service and period: 759 B with full pages, 321 B with these
    //   (cluster/store/tests/hold.rs, `wal_of_a_flush`). They apply to
    //   pages written from now on (`VACUUM FULL services` rewrites an
    //   existing table with them).
    r#"
    ALTER TABLE services SET (fillfactor = 50);
    ALTER TABLE uptime SET (fillfactor = 70);
    ALTER TABLE checks ADD COLUMN streak int;
    ALTER TABLE services ADD COLUMN rolled_through bigint NOT NULL DEFAULT 0;
    UPDATE services SET rolled_through =
        (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM checks_id_seq);
    "#,
    // 7: heartbeat pings kept until their service's owner judged them. A
    // ping served while no node holds the service's bucket (start-up, a
    // takeover's gap) reaches no scheduler; the node that gains the bucket
    // judges the kept pings newer than the service's last check
    // (docs/cluster.md, "Pings without an owner"). Each ping deletes its
    // service's rows older than an hour (`PING_KEEP_MS`), so a service has
    // at most an hour of pings here (30 a minute by the ping limit).
    r#"
    CREATE TABLE heartbeat_pings (
        seq bigserial PRIMARY KEY,
        service_id bigint NOT NULL REFERENCES services (id) ON DELETE CASCADE,
        at bigint NOT NULL,
        ping text NOT NULL,
        output text
    );
    CREATE INDEX heartbeat_pings_service_at ON heartbeat_pings (service_id, at);
    "#,
    // 8: a node that gave up its leases (its write backlog full) keeps its
    // row and heartbeats, marked by `given_up_at`, instead of deleting the
    // row: `GET /api/v1/cluster` shows it (state `given_up`), and the fair
    // share counts only live nodes without the mark.
    r#"
    ALTER TABLE nodes ADD COLUMN given_up_at timestamptz;
    "#,
    // 9: pages of services read by index (SPEC 11's read budgets). Every
    // page sorts names `COLLATE "C"` (SQLite's byte order, whatever the
    // database's locale), which the `name` index (the column's default
    // collation) cannot give: each page of the list API and the dashboard
    // read and sorted every service row (16 ms at 20,000 services while
    // checking). An index per order a page asks for, each ending in
    // `name COLLATE "C"`: by name, by a state filter then name, by the
    // dashboard's state order (the same `CASE` as
    // cluster/store/dashboard.rs's `order_sql`, which the planner matches
    // expression for expression), and by last change. The flush's
    // once-a-period updates change no indexed column and stay HOT; a
    // state change already updated `services_by_change`.
    r#"
    CREATE INDEX services_by_name ON services (name COLLATE "C");
    CREATE INDEX services_by_state ON services (state, name COLLATE "C");
    CREATE INDEX services_by_state_order ON services ((CASE state
        WHEN 'unhealthy' THEN 0 WHEN 'degraded' THEN 1 WHEN 'unknown' THEN 2 ELSE 3 END),
        name COLLATE "C");
    DROP INDEX services_by_change;
    CREATE INDEX services_by_change ON services (state_since DESC, name COLLATE "C");
    "#,
    // 10: raw checks in a ring of slots, emptied a slot at a time
    // (docs/cluster.md, "Raw checks in slots"). `checks` is partitioned by
    // `slot`: the writer appends to the current slot (0..7); a pruning pass
    // closes it after a while, and empties a slot closed long enough ago
    // with one `TRUNCATE` after copying the checks the retention rule
    // still keeps into `checks_kept` (slot -1), which is pruned row by row
    // as the whole table was. Deleting every check row by row cost 66 B of
    // WAL a check, and the inserts into one index over every kept check
    // wrote a full-page image of most of its leaves after each checkpoint.
    // The former table becomes slot 0, the current one: nothing is copied.
    // Rows written without a slot (by hand, by tests) go to `checks_kept`.
    r#"
    ALTER TABLE checks RENAME TO checks_s0;
    ALTER INDEX checks_by_service RENAME TO checks_s0_by_service;
    ALTER TABLE checks_s0 ADD COLUMN slot int NOT NULL DEFAULT 0;
    CREATE TABLE checks (
        id bigint NOT NULL DEFAULT nextval('checks_id_seq'),
        service_id bigint NOT NULL,
        at bigint NOT NULL,
        duration_us bigint NOT NULL,
        result text NOT NULL,
        reason text,
        http_status int,
        details text,
        changed boolean NOT NULL DEFAULT false,
        streak int,
        slot int NOT NULL DEFAULT -1
    ) PARTITION BY LIST (slot);
    ALTER SEQUENCE checks_id_seq OWNED BY checks.id;
    ALTER TABLE checks ATTACH PARTITION checks_s0 FOR VALUES IN (0);
    CREATE TABLE checks_kept PARTITION OF checks FOR VALUES IN (-1);
    CREATE TABLE checks_s1 PARTITION OF checks FOR VALUES IN (1);
    CREATE TABLE checks_s2 PARTITION OF checks FOR VALUES IN (2);
    CREATE TABLE checks_s3 PARTITION OF checks FOR VALUES IN (3);
    CREATE TABLE checks_s4 PARTITION OF checks FOR VALUES IN (4);
    CREATE TABLE checks_s5 PARTITION OF checks FOR VALUES IN (5);
    CREATE TABLE checks_s6 PARTITION OF checks FOR VALUES IN (6);
    CREATE TABLE checks_s7 PARTITION OF checks FOR VALUES IN (7);
    CREATE INDEX checks_by_service ON checks (service_id, id);
    CREATE TABLE check_slots (
        slot int PRIMARY KEY CHECK (slot >= 0 AND slot < 8),
        current boolean NOT NULL DEFAULT false,
        opened_at bigint,
        closed_at bigint
    );
    CREATE UNIQUE INDEX check_slots_one_current ON check_slots ((true)) WHERE current;
    INSERT INTO check_slots (slot, current) SELECT s, s = 0 FROM generate_series(0, 7) s;
    "#,
    // 11: what uptime adds to the roll-ups, read from one row a service
    // (docs/cluster.md, "Checks above the mark"). `checks.unrolled` and
    // `checks.unrolled_failed`: the checks of the service above its mark
    // (`services.rolled_through`) through this one, and how many of them
    // failed, as the writer counted them when it wrote the row. A read
    // takes them from the service's newest check above the mark instead
    // of visiting every such check (up to 60 heap pages a service at 5 s;
    // 6,000 a page of the list). NULL: not counted (rows written before
    // this version, by hand, or a count beyond `smallint`); a read counts
    // the rows then. Adding nullable columns rewrites nothing.
    r#"
    ALTER TABLE checks ADD COLUMN unrolled smallint, ADD COLUMN unrolled_failed smallint;
    "#,
    // 12: a lease lasts while its owner's node row says so
    // (`nodes.lease_until`), renewed with the node's heartbeat: one row a
    // node each round, where each round renewed every bucket row the node
    // held (1,024 row updates and as many row locks every 2 s, ≈ 20 B of
    // WAL a check at 3,333 checks/s; docs/cluster.md "Work split by
    // leases"). A node's leases valid now stay valid until their latest
    // expiry. `buckets.expires_at` goes: a node of an older version still
    // running fails its rounds instead of claiming by it.
    r#"
    ALTER TABLE nodes ADD COLUMN lease_until timestamptz;
    UPDATE nodes n SET lease_until = (SELECT max(b.expires_at) FROM buckets b WHERE b.owner = n.id);
    ALTER TABLE buckets DROP COLUMN expires_at;
    "#,
];

/// The slots of `checks` (migration 10): `checks_s0` … `checks_s7`.
pub const CHECK_SLOTS: i32 = 8;

// Migration 1 writes the bucket count as a number: it must stay the core's.
const _: () = assert!(BUCKETS == 1024);

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key the migrations hold ("hc-migr" in ASCII), so that
/// only one node migrates at a time.
const MIGRATION_LOCK: i64 = 0x0068_632d_6d69_6772;

/// Applies every migration newer than the database, in one transaction.
/// Refuses a database written by a newer build. Running it again is a
/// no-op.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), ClusterError> {
    migrate_to(client, VERSION).await
}

/// As [`migrate`], up to schema version `target` only: the upgrade tests
/// write a database as an older build left it.
pub async fn migrate_to(
    client: &mut tokio_postgres::Client,
    target: i64,
) -> Result<(), ClusterError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > VERSION {
        return Err(ClusterError::NewerSchema {
            found: current,
            ours: VERSION,
        });
    }
    let upto = target.clamp(0, VERSION) as usize;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(upto)
        .skip(current as usize)
    {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The database's schema version (0 before any migration).
pub async fn version(client: &tokio_postgres::Client) -> Result<i64, ClusterError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0))
}
