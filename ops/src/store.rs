//! The sidecar's state: one SQLite database (WAL) in its data directory.
//!
//! The schema is versioned: [`MIGRATIONS`] are applied in order, each in
//! its own transaction, and `PRAGMA user_version` records how many ran, so
//! a sidecar upgraded in place migrates its database at start and one
//! started twice does nothing the second time. Never edit a migration
//! that shipped: add the next one.
//!
//! What it holds so far: the nonces of accepted requests ([`Store`] is the
//! sidecar's [`Nonces`]: a replay is refused across restarts too), and the
//! databases provisioned for Fly, keyed by Fly's id so a retried `POST
//! /extensions` finds the database the first one made.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::sign::Nonces;

/// The database's file in the data directory.
pub const DB_FILE: &str = "sidecar.db";

/// Refuses a database at schema version `found` if this build does not
/// know it (a newer anykv wrote it).
pub fn check_version(found: i64) -> Result<(), StoreError> {
    if found > MIGRATIONS.len() as i64 {
        return Err(StoreError::TooNew {
            found,
            known: MIGRATIONS.len(),
        });
    }
    Ok(())
}

/// Schema changes, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: organizations, users, databases, nonces.
    "CREATE TABLE organizations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        organization_id TEXT NOT NULL REFERENCES organizations(id),
        role TEXT NOT NULL CHECK (role IN ('admin', 'member'))
    );
    CREATE TABLE databases (
        fly_id TEXT PRIMARY KEY,
        tenant_id INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        organization_id TEXT NOT NULL REFERENCES organizations(id),
        primary_region TEXT NOT NULL,
        read_regions TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('provisioning', 'ready', 'error', 'deleted')),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE nonces (
        nonce TEXT PRIMARY KEY,
        timestamp INTEGER NOT NULL
    );
    CREATE INDEX nonces_by_time ON nonces(timestamp);",
    // 2: the token (sealed, see `tokens`) and the catalog row's version.
    "ALTER TABLE databases ADD COLUMN token_sealed TEXT NOT NULL DEFAULT '';
    ALTER TABLE databases ADD COLUMN catalog_version INTEGER NOT NULL DEFAULT 1;",
    // 3: the webhook outbox (see `crate::webhook`): a row per event, kept
    // once sent, written in the transaction of the change it reports.
    "CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        sent_at INTEGER
    );
    CREATE INDEX webhooks_due ON webhooks(next_at) WHERE sent_at IS NULL;",
    // 4: each database's plan (`crate::plans`).
    "ALTER TABLE databases ADD COLUMN plan TEXT NOT NULL DEFAULT 'payg';",
    // 5: the Flycast address a database was provisioned for (the host of
    // its REDIS_URL on the dashboard), and the dashboard's sign-in
    // sessions (`crate::sso`): a session id is kept only as its SHA-256.
    "ALTER TABLE databases ADD COLUMN ip_address TEXT NOT NULL DEFAULT '';
    CREATE INDEX databases_by_org ON databases(organization_id);
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        email TEXT NOT NULL,
        organizations TEXT NOT NULL,
        csrf TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions(expires_at);",
    // 6: metering (`crate::metering`): how far each node's usage log was
    // taken, the usage per database per UTC day, and until when a
    // database's read regions were counted.
    "CREATE TABLE usage_cursors (
        log TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        seq INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX usage_cursors_by_node ON usage_cursors(node, updated_at);
    CREATE TABLE usage_daily (
        tenant_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        reads INTEGER NOT NULL DEFAULT 0,
        writes INTEGER NOT NULL DEFAULT 0,
        other INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        connections INTEGER NOT NULL DEFAULT 0,
        storage_byte_seconds INTEGER NOT NULL DEFAULT 0,
        read_region_seconds INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, day)
    );
    ALTER TABLE databases ADD COLUMN regions_metered_at INTEGER NOT NULL DEFAULT 0;",
    // 7: a token rotation's new token (sealed; empty: none under way);
    // usage kept per plan in force when it was taken (a day's charge
    // follows the plan of each part of it); read regions counted from now
    // for databases that were there before; a session's Fly access token
    // (sealed), with which its rights are checked again.
    "ALTER TABLE databases ADD COLUMN next_token_sealed TEXT NOT NULL DEFAULT '';
    CREATE TABLE usage_by_plan (
        tenant_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        plan TEXT NOT NULL,
        reads INTEGER NOT NULL DEFAULT 0,
        writes INTEGER NOT NULL DEFAULT 0,
        other INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        connections INTEGER NOT NULL DEFAULT 0,
        storage_byte_seconds INTEGER NOT NULL DEFAULT 0,
        read_region_seconds INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, day, plan)
    );
    INSERT INTO usage_by_plan
        SELECT u.tenant_id, u.day, COALESCE(d.plan, 'payg'), u.reads, u.writes, u.other,
               u.bytes_in, u.bytes_out, u.connections, u.storage_byte_seconds,
               u.read_region_seconds
        FROM usage_daily u LEFT JOIN databases d ON d.tenant_id = u.tenant_id;
    DROP TABLE usage_daily;
    ALTER TABLE usage_by_plan RENAME TO usage_daily;
    UPDATE databases SET regions_metered_at = CAST(strftime('%s', 'now') AS INTEGER)
        WHERE regions_metered_at = 0;
    ALTER TABLE sessions ADD COLUMN access_sealed TEXT NOT NULL DEFAULT '';",
    // 8: when a database was deleted, and when its files were purged from
    // the nodes after the grace period (`crate::purge`).
    "ALTER TABLE databases ADD COLUMN deleted_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE databases ADD COLUMN purged_at INTEGER NOT NULL DEFAULT 0;",
    // 9: token rotations under way (`crate::rotation`): when each began,
    // and when the nodes last saw the old and the new token in use (Unix
    // ms; 0: not yet).
    "CREATE TABLE rotations (
        fly_id TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        old_seen_at INTEGER NOT NULL,
        new_seen_at INTEGER NOT NULL DEFAULT 0
    );",
    // 10: a user's role in each organization Fly named them in (a Fly
    // user may be in several; `users` keeps the last one seen).
    "CREATE TABLE memberships (
        user_id TEXT NOT NULL REFERENCES users(id),
        organization_id TEXT NOT NULL REFERENCES organizations(id),
        role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
        PRIMARY KEY (user_id, organization_id)
    );
    INSERT INTO memberships (user_id, organization_id, role)
        SELECT id, organization_id, role FROM users;",
    // 11: when a provisioning last failed (its row `error`; 0: never), from
    // which `api::undo_failed` counts its grace period.
    "ALTER TABLE databases ADD COLUMN failed_at INTEGER NOT NULL DEFAULT 0;
    UPDATE databases SET failed_at = created_at WHERE status = 'error';",
];

/// A webhook waiting in the outbox (or sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    /// `resource.updated` or `resource.deleted`.
    pub action: String,
    /// The resource, shaped like `GET /extensions/{id}` (JSON).
    pub resource: String,
    pub attempts: u32,
}

#[cfg(test)]
impl Database {
    /// A ready database "shop" of `org_1` for the sidecar's tests: primary
    /// iad, read regions cdg and syd, the default plan.
    pub(crate) fn sample(fly_id: &str, tenant_id: u64) -> Database {
        Database {
            fly_id: fly_id.into(),
            tenant_id,
            name: "shop".into(),
            organization_id: "org_1".into(),
            primary_region: "iad".into(),
            read_regions: vec!["cdg".into(), "syd".into()],
            status: "ready".into(),
            created_at: 1_800_000_000,
            token_sealed: "sealed".into(),
            catalog_version: 1,
            plan: crate::plans::DEFAULT.name.into(),
            ip_address: "fdaa:0:1::3".into(),
            next_token_sealed: String::new(),
        }
    }
}

/// Errors of the sidecar's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sidecar database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("sidecar database is at schema version {found}, newer than this build's {known}: run a newer anykv")]
    TooNew { found: i64, known: usize },
}

/// A database provisioned for Fly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub fly_id: String,
    pub tenant_id: u64,
    pub name: String,
    pub organization_id: String,
    pub primary_region: String,
    pub read_regions: Vec<String>,
    pub status: String,
    pub created_at: i64,
    /// The token, sealed with `ANYKV_TOKEN_KEY` (`tokens::Sealer`).
    pub token_sealed: String,
    /// The version of its row in the cluster's catalog.
    pub catalog_version: u64,
    /// Its plan's name (`crate::plans`).
    pub plan: String,
    /// The Flycast address Fly gave it (`ip_address`; empty when
    /// provisioned before the sidecar kept it).
    pub ip_address: String,
    /// During a token rotation, the new token (sealed like `token_sealed`;
    /// both are valid until the old one is retired); empty otherwise.
    pub next_token_sealed: String,
}

/// A signed-in dashboard user ([`crate::sso`]), as Fly's token info
/// described them at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub email: String,
    /// (organization id, role: `admin` | `member`).
    pub organizations: Vec<(String, String)>,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_at: i64,
    /// Fly's access token for this user (sealed with `ANYKV_TOKEN_KEY`,
    /// the session's id hash as associated data): an admin action asks
    /// Fly again what the user may do.
    pub access_sealed: String,
}

/// The sidecar's SQLite database.
pub struct Store {
    conn: Connection,
    /// How long a nonce is kept (seconds): twice the signature window.
    keep_nonces: i64,
}

impl Store {
    /// Opens (creating) `dir/sidecar.db` and migrates it.
    pub fn open(dir: &Path, window_secs: i64) -> Result<Store, StoreError> {
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store {
            conn,
            keep_nonces: 2 * window_secs.max(1),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Backs the live database up into `dir` (see [`crate::backup`]),
    /// keeping the newest `keep` backups there.
    pub fn backup_to(
        &self,
        dir: &Path,
        now: i64,
        keep: usize,
    ) -> Result<std::path::PathBuf, crate::backup::BackupError> {
        crate::backup::backup(&self.conn, dir, now, keep)
    }

    /// The schema version (migrations applied).
    pub fn version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.version()?;
        check_version(found)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Records `db` (and its organization, `(id, name, email)`, and the
    /// user who asked, `(id, email, role)`, as Fly sent them last) unless
    /// Fly's id is known already, in one transaction; returns the database
    /// stored under that id either way (a retried provisioning request
    /// gets the first one's database, never a second).
    pub fn insert_database(
        &mut self,
        org: (&str, &str, &str),
        user: Option<(&str, &str, &str)>,
        db: &Database,
    ) -> Result<Database, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO organizations (id, name, email) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, email = excluded.email",
            params![org.0, org.1, org.2],
        )?;
        if let Some((id, email, role)) = user {
            tx.execute(
                "INSERT INTO users (id, email, organization_id, role) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET email = excluded.email,
                     organization_id = excluded.organization_id, role = excluded.role",
                params![id, email, org.0, role],
            )?;
            tx.execute(
                "INSERT INTO memberships (user_id, organization_id, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user_id, organization_id) DO UPDATE SET role = excluded.role",
                params![id, org.0, role],
            )?;
        }
        tx.execute(
            "INSERT INTO databases (fly_id, tenant_id, name, organization_id, primary_region,
                                    read_regions, status, created_at, token_sealed,
                                    catalog_version, plan, ip_address)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(fly_id) DO NOTHING",
            params![
                db.fly_id,
                db.tenant_id as i64,
                db.name,
                db.organization_id,
                db.primary_region,
                db.read_regions.join(","),
                db.status,
                db.created_at,
                db.token_sealed,
                db.catalog_version as i64,
                db.plan,
                db.ip_address
            ],
        )?;
        let stored = get_database(&tx, &db.fly_id)?;
        tx.commit()?;
        stored.ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Sets a database's status (and the catalog version it is at). A
    /// deleted database stays deleted.
    pub fn set_status(
        &self,
        fly_id: &str,
        status: &str,
        catalog_version: u64,
    ) -> Result<(), StoreError> {
        set_status(&self.conn, fly_id, status, catalog_version)?;
        Ok(())
    }

    /// Runs `change` and queues webhook `action` about the database it
    /// leaves (`resource` makes the payload from it) in one transaction:
    /// a change Fly must hear of is never stored without its webhook, nor
    /// the webhook without the change, whatever stops the sidecar. A
    /// change that touched no row queues nothing.
    pub fn change_and_notify(
        &mut self,
        fly_id: &str,
        now: i64,
        action: &str,
        change: impl FnOnce(&Connection) -> rusqlite::Result<usize>,
        resource: impl FnOnce(&Database) -> String,
    ) -> Result<Database, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = change(&tx)?;
        let db = get_database(&tx, fly_id)?
            .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))?;
        if changed > 0 {
            tx.execute(
                "INSERT INTO webhooks (action, resource, created_at, next_at)
                 VALUES (?1, ?2, ?3, ?3)",
                params![action, resource(&db), now],
            )?;
        }
        tx.commit()?;
        Ok(db)
    }

    /// The databases still `provisioning` (Fly id, tenant id).
    pub fn provisioning(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT fly_id, tenant_id FROM databases WHERE status = 'provisioning'")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Webhooks due at `now`, oldest first (at most `limit`). A webhook
    /// waits while an older one about the same resource is unsent (one
    /// that failed waits for its retry): Fly hears of a database's changes
    /// in the order they were made, never a `resource.updated` after the
    /// `resource.deleted` that followed it.
    pub fn due_webhooks(&self, now: i64, limit: usize) -> Result<Vec<Webhook>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, action, resource, attempts FROM webhooks w
             WHERE sent_at IS NULL AND next_at <= ?1
               AND NOT EXISTS (
                   SELECT 1 FROM webhooks o
                   WHERE o.sent_at IS NULL AND o.id < w.id
                     AND json_extract(o.resource, '$.id') = json_extract(w.resource, '$.id'))
             ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, limit as i64], |r| {
            Ok(Webhook {
                id: r.get(0)?,
                action: r.get(1)?,
                resource: r.get(2)?,
                attempts: r.get::<_, i64>(3)? as u32,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets webhooks Fly took before `before` (the outbox keeps sent
    /// ones for a while, to look into). How many went.
    pub fn prune_sent_webhooks(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM webhooks WHERE sent_at IS NOT NULL AND sent_at < ?1",
            params![before],
        )?)
    }

    /// Fly took webhook `id`.
    pub fn webhook_sent(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE webhooks SET sent_at = ?2, attempts = attempts + 1, last_error = ''
             WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Webhook `id` failed (`why`): it is tried again at `next_at`.
    pub fn webhook_failed(&self, id: i64, next_at: i64, why: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE webhooks SET attempts = attempts + 1, next_at = ?2, last_error = ?3
             WHERE id = ?1",
            params![id, next_at, why],
        )?;
        Ok(())
    }

    /// A user as the last provisioning request named them: (email,
    /// organization id, role).
    pub fn user(&self, id: &str) -> Result<Option<(String, String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT email, organization_id, role FROM users WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// The organizations Fly named user `id` in, with their role in each
    /// (as the last request from that organization said), by id.
    pub fn memberships(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT organization_id, role FROM memberships WHERE user_id = ?1
             ORDER BY organization_id",
        )?;
        let rows = q.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The database Fly knows as `fly_id`.
    pub fn database(&self, fly_id: &str) -> Result<Option<Database>, StoreError> {
        get_database(&self.conn, fly_id)
    }

    /// The databases that are `ready`.
    pub fn ready(&self) -> Result<Vec<Database>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached(&format!("{SELECT_DATABASE} WHERE status = 'ready'"))?;
        let rows = q.query_map([], database_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The databases of `organizations` not deleted, by name.
    pub fn databases_of(&self, organizations: &[String]) -> Result<Vec<Database>, StoreError> {
        let mut out = Vec::new();
        let mut q = self.conn.prepare_cached(&format!(
            "{SELECT_DATABASE} WHERE organization_id = ?1 AND status != 'deleted'"
        ))?;
        for org in organizations {
            for d in q.query_map(params![org], database_row)? {
                out.push(d?);
            }
        }
        out.sort_by(|a, b| (&a.name, &a.fly_id).cmp(&(&b.name, &b.fly_id)));
        Ok(out)
    }

    /// Keeps a new session under `id_hash` (the SHA-256 of its id), and
    /// forgets the expired ones.
    pub fn create_session(
        &mut self,
        id_hash: &str,
        s: &Session,
        now: i64,
    ) -> Result<(), StoreError> {
        let orgs = serde_json::Value::Array(
            s.organizations
                .iter()
                .map(|(id, role)| serde_json::json!({"id": id, "role": role}))
                .collect(),
        );
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])?;
        tx.execute(
            "INSERT INTO sessions (id_hash, user_id, email, organizations, csrf, expires_at,
                                   access_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id_hash,
                s.user_id,
                s.email,
                orgs.to_string(),
                s.csrf,
                s.expires_at,
                s.access_sealed
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session kept under `id_hash`, unless it expired.
    pub fn session(&self, id_hash: &str, now: i64) -> Result<Option<Session>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT user_id, email, organizations, csrf, expires_at, access_sealed
                 FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![id_hash, now],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()?;
        Ok(
            row.map(|(user_id, email, orgs, csrf, expires_at, access_sealed)| {
                let orgs: serde_json::Value = serde_json::from_str(&orgs).unwrap_or_default();
                let organizations = orgs
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| {
                                Some((
                                    o["id"].as_str()?.to_string(),
                                    o["role"].as_str()?.to_string(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Session {
                    user_id,
                    email,
                    organizations,
                    csrf,
                    expires_at,
                    access_sealed,
                }
            }),
        )
    }

    /// Replaces a session's organizations and roles (Fly said again).
    pub fn set_session_organizations(
        &self,
        id_hash: &str,
        organizations: &[(String, String)],
    ) -> Result<(), StoreError> {
        let orgs = serde_json::Value::Array(
            organizations
                .iter()
                .map(|(id, role)| serde_json::json!({"id": id, "role": role}))
                .collect(),
        );
        self.conn.execute(
            "UPDATE sessions SET organizations = ?2 WHERE id_hash = ?1",
            params![id_hash, orgs.to_string()],
        )?;
        Ok(())
    }

    /// Ends the session kept under `id_hash` (signing out).
    pub fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM sessions WHERE id_hash = ?1", params![id_hash])?;
        Ok(())
    }

    /// Runs `f` in one transaction (committed when it returns Ok).
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let tx = self.conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The next free tenant id (ids are never reused, deleted ones included).
    pub fn next_tenant_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> =
            self.conn
                .query_row("SELECT MAX(tenant_id) FROM databases", [], |r| r.get(0))?;
        Ok(max.map_or(1, |m| m as u64 + 1))
    }
}

/// [`Store::set_status`] on `conn` (a transaction's, for
/// [`Store::change_and_notify`]).
pub fn set_status(
    conn: &Connection,
    fly_id: &str,
    status: &str,
    catalog_version: u64,
) -> rusqlite::Result<usize> {
    // The version never goes back: a retried provisioning says 1 again
    // for a row a change has moved on since.
    conn.execute(
        "UPDATE databases SET status = ?2, catalog_version = MAX(catalog_version, ?3)
         WHERE fly_id = ?1 AND status != 'deleted'",
        params![fly_id, status, catalog_version as i64],
    )
}

/// Sets a database's plan (its catalog row at `catalog_version`).
pub fn set_plan(
    conn: &Connection,
    fly_id: &str,
    plan: &str,
    catalog_version: u64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET plan = ?2, catalog_version = ?3 WHERE fly_id = ?1",
        params![fly_id, plan, catalog_version as i64],
    )
}

/// Sets a database's tokens (sealed; `next` empty when no rotation is
/// under way) and the catalog version they went out at.
pub fn set_tokens(
    conn: &Connection,
    fly_id: &str,
    current: &str,
    next: &str,
    catalog_version: u64,
) -> rusqlite::Result<usize> {
    let n = conn.execute(
        "UPDATE databases SET token_sealed = ?2, next_token_sealed = ?3, catalog_version = ?4
         WHERE fly_id = ?1",
        params![fly_id, current, next, catalog_version as i64],
    )?;
    // A rotation begins with its new token (the old one counts as in use
    // from then on) and ends when either token is left alone.
    if next.is_empty() {
        conn.execute("DELETE FROM rotations WHERE fly_id = ?1", params![fly_id])?;
    } else {
        conn.execute(
            "INSERT OR IGNORE INTO rotations (fly_id, started_at, old_seen_at) VALUES (?1, ?2, ?2)",
            params![fly_id, crate::unix_now_ms()],
        )?;
    }
    Ok(n)
}

/// Marks a provisioning failed at `now` (`error`; a deleted row stays
/// deleted).
pub fn set_failed(conn: &Connection, fly_id: &str, now: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET status = 'error', failed_at = ?2
         WHERE fly_id = ?1 AND status != 'deleted'",
        params![fly_id, now],
    )
}

/// Records when a database was deleted (its files are purged from the
/// nodes a grace period later).
pub fn set_deleted_at(conn: &Connection, fly_id: &str, at: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET deleted_at = ?2 WHERE fly_id = ?1 AND deleted_at = 0",
        params![fly_id, at],
    )
}

/// Marks a `provisioning` database `ready` (nothing else: a deleted one
/// stays deleted).
pub fn set_ready(conn: &Connection, fly_id: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET status = 'ready' WHERE fly_id = ?1 AND status = 'provisioning'",
        params![fly_id],
    )
}

/// Sets a database's read regions (its catalog row at `catalog_version`).
pub fn set_read_regions(
    conn: &Connection,
    fly_id: &str,
    regions: &[String],
    catalog_version: u64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET read_regions = ?2, catalog_version = ?3 WHERE fly_id = ?1",
        params![fly_id, regions.join(","), catalog_version as i64],
    )
}

/// Sets a database's primary region (the cluster's operators moved it:
/// `anykv regions remove --move-primaries-to`).
pub fn set_primary_region(
    conn: &Connection,
    fly_id: &str,
    region: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE databases SET primary_region = ?2 WHERE fly_id = ?1",
        params![fly_id, region],
    )
}

/// The columns of a [`Database`], as [`database_row`] reads them.
const SELECT_DATABASE: &str = "SELECT fly_id, tenant_id, name, organization_id, primary_region,
        read_regions, status, created_at, token_sealed, catalog_version, plan, ip_address,
        next_token_sealed
    FROM databases";

fn database_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Database> {
    let regions: String = r.get(5)?;
    Ok(Database {
        fly_id: r.get(0)?,
        tenant_id: r.get::<_, i64>(1)? as u64,
        name: r.get(2)?,
        organization_id: r.get(3)?,
        primary_region: r.get(4)?,
        read_regions: regions
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        status: r.get(6)?,
        created_at: r.get(7)?,
        token_sealed: r.get(8)?,
        catalog_version: r.get::<_, i64>(9)? as u64,
        plan: r.get(10)?,
        ip_address: r.get(11)?,
        next_token_sealed: r.get(12)?,
    })
}

fn get_database(conn: &Connection, fly_id: &str) -> Result<Option<Database>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{SELECT_DATABASE} WHERE fly_id = ?1"),
            params![fly_id],
            database_row,
        )
        .optional()?)
}

impl Nonces for Store {
    fn claim(&mut self, nonce: &str, timestamp: i64, now: i64) -> bool {
        let claimed = (|| -> rusqlite::Result<bool> {
            let tx = self.conn.transaction()?;
            tx.execute(
                "DELETE FROM nonces WHERE timestamp < ?1",
                params![now - self.keep_nonces],
            )?;
            let n = tx.execute(
                "INSERT INTO nonces (nonce, timestamp) VALUES (?1, ?2)
                 ON CONFLICT(nonce) DO NOTHING",
                params![nonce, timestamp],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })();
        // A nonce that cannot be recorded is not accepted: refusing a
        // genuine request (Fly retries) beats accepting a replay.
        claimed.unwrap_or_else(|e| {
            tracing::error!("sidecar: recording a nonce failed: {e}");
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("anykv-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn shop(fly_id: &str, tenant_id: u64) -> Database {
        Database::sample(fly_id, tenant_id)
    }

    #[test]
    fn a_resources_webhooks_go_out_in_order() {
        let dir = tmp("hook-order");
        let mut s = Store::open(&dir, 300).unwrap();
        let org = ("org_1", "Acme", "admins@acme.example");
        s.insert_database(org, None, &shop("ext_1", 1)).unwrap();
        s.insert_database(org, None, &shop("ext_2", 2)).unwrap();
        let res = |d: &Database| format!("{{\"id\":\"{}\"}}", d.fly_id);
        let ch = |c: &Connection, id: &str, st: &str| set_status(c, id, st, 2);
        s.change_and_notify(
            "ext_1",
            100,
            "resource.updated",
            |c| ch(c, "ext_1", "error"),
            res,
        )
        .unwrap();
        s.change_and_notify(
            "ext_2",
            100,
            "resource.updated",
            |c| ch(c, "ext_2", "error"),
            res,
        )
        .unwrap();
        s.change_and_notify(
            "ext_1",
            101,
            "resource.deleted",
            |c| ch(c, "ext_1", "deleted"),
            res,
        )
        .unwrap();
        let ids = |s: &Store, now| -> Vec<(String, String)> {
            s.due_webhooks(now, 10)
                .unwrap()
                .into_iter()
                .map(|w| (w.action, w.resource))
                .collect()
        };
        // ext_1's deletion waits behind its update; ext_2's goes.
        let due = s.due_webhooks(101, 10).unwrap();
        assert_eq!(
            ids(&s, 101),
            vec![
                (
                    "resource.updated".to_string(),
                    "{\"id\":\"ext_1\"}".to_string()
                ),
                (
                    "resource.updated".to_string(),
                    "{\"id\":\"ext_2\"}".to_string()
                ),
            ]
        );
        // ext_1's update fails (retry at 200): its deletion still waits.
        s.webhook_failed(due[0].id, 200, "503").unwrap();
        s.webhook_sent(due[1].id, 101).unwrap();
        assert!(ids(&s, 150).is_empty());
        assert_eq!(ids(&s, 200).len(), 1);
        assert_eq!(ids(&s, 200)[0].0, "resource.updated");
        s.webhook_sent(due[0].id, 200).unwrap();
        // Sent ones are forgotten after a while; unsent ones never.
        assert_eq!(s.prune_sent_webhooks(150).unwrap(), 1);
        assert_eq!(s.prune_sent_webhooks(150).unwrap(), 0);
        assert_eq!(
            ids(&s, 200),
            vec![(
                "resource.deleted".to_string(),
                "{\"id\":\"ext_1\"}".to_string()
            )]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tmp("migrate");
        let s = Store::open(&dir, 300).unwrap();
        assert_eq!(s.version().unwrap(), MIGRATIONS.len() as i64);
        drop(s);
        // Opening again applies nothing (a second CREATE TABLE would fail).
        let s = Store::open(&dir, 300).unwrap();
        s.conn
            .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&dir, 300),
            Err(StoreError::TooNew { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_retried_provisioning_finds_the_first_database() {
        let dir = tmp("provision");
        let mut s = Store::open(&dir, 300).unwrap();
        let org = ("org_1", "Acme", "admins@acme.example");
        assert_eq!(s.next_tenant_id().unwrap(), 1);
        let user = Some(("u_1", "u1@customer.fly.io", "admin"));
        let first = s.insert_database(org, user, &shop("ext_1", 1)).unwrap();
        assert_eq!(first, shop("ext_1", 1));
        assert_eq!(
            s.user("u_1").unwrap(),
            Some((
                "u1@customer.fly.io".to_string(),
                "org_1".to_string(),
                "admin".to_string()
            ))
        );
        // The retry would have picked the next id: it gets the first; the
        // user's role is as Fly sent it last.
        let user = Some(("u_1", "u1@customer.fly.io", "member"));
        let retry = s.insert_database(org, user, &shop("ext_1", 2)).unwrap();
        assert_eq!(retry, first);
        assert_eq!(s.user("u_1").unwrap().unwrap().2, "member");
        assert_eq!(s.next_tenant_id().unwrap(), 2);
        // The same user provisioning in a second organization is in both.
        let other = ("org_3", "Beta", "ops@beta.example");
        let mut beta = shop("ext_3", 3);
        beta.organization_id = "org_3".into();
        s.insert_database(other, Some(("u_1", "u1@customer.fly.io", "admin")), &beta)
            .unwrap();
        assert_eq!(
            s.memberships("u_1").unwrap(),
            vec![
                ("org_1".to_string(), "member".to_string()),
                ("org_3".to_string(), "admin".to_string())
            ]
        );
        // A database whose organization does not match the one recorded
        // with it is refused, and nothing of it is kept (one transaction).
        let mut orphan = shop("ext_2", 2);
        orphan.organization_id = "org_unknown".into();
        let user = Some(("u_2", "u2@customer.fly.io", "admin"));
        assert!(s
            .insert_database(("org_2", "Other", ""), user, &orphan)
            .is_err());
        assert_eq!(s.user("u_2").unwrap(), None, "rolled back too");
        assert_eq!(s.database("ext_2").unwrap(), None);
        let orgs: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM organizations WHERE id = 'org_2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orgs, 0, "org_2 was rolled back with its database");
        // Deleted stays deleted.
        s.set_status("ext_1", "deleted", 2).unwrap();
        s.set_status("ext_1", "ready", 1).unwrap();
        assert_eq!(s.database("ext_1").unwrap().unwrap().status, "deleted");
        s.set_status("ext_1", "ready", 1).unwrap();
        drop(s);
        // After a restart it is still there.
        let s = Store::open(&dir, 300).unwrap();
        let mut deleted = first;
        deleted.status = "deleted".into();
        deleted.catalog_version = 2;
        assert_eq!(s.database("ext_1").unwrap(), Some(deleted));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_nonce_is_refused_after_a_restart_and_forgotten_after_twice_the_window() {
        let dir = tmp("nonces");
        let mut s = Store::open(&dir, 10).unwrap();
        assert!(s.claim("n1", 100, 100));
        assert!(!s.claim("n1", 100, 101));
        drop(s);
        let mut s = Store::open(&dir, 10).unwrap();
        assert!(!s.claim("n1", 100, 110), "replayed after a restart");
        assert!(!s.claim("n1", 100, 120));
        assert!(s.claim("n1", 100, 121), "kept for twice the window only");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
