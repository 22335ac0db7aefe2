//! Metering and billing (docs/METERING.md): the sidecar pulls every
//! node's usage records, rolls them up per database per UTC day, counts
//! read-region hours itself, and answers Fly's daily `GET /billing`.
//!
//! Exactly once: a node's usage log is a sequence of records (a log id
//! made with the file, a sequence number); the sidecar keeps, per log, the
//! last sequence it took, and adds a page of records to the daily rows in
//! the same SQLite transaction that moves that cursor. A retried or
//! repeated pull finds the cursor moved and adds nothing; a node that
//! restarts continues its log's sequence; a node whose log is new (a wiped
//! volume) starts a new cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::api::Api;

/// Prices, pay as you go, in millionths of a cent (µ¢) per unit.
pub mod prices {
    /// Per command: $0.20 per 100,000 commands.
    pub const COMMAND: u128 = 200;
    /// Per GiB stored for an hour: 0.035¢ (about $0.26 per GiB-month).
    pub const GIB_HOUR: u128 = 35_000;
    /// Per GiB in or out: 3¢.
    pub const GIB_TRANSFER: u128 = 3_000_000;
    /// Per read region per hour: 0.5¢ (about $3.65 a month).
    pub const READ_REGION_HOUR: u128 = 500_000;
}

const GIB: u128 = 1 << 30;

/// The UTC day (`YYYY-MM-DD`) of Unix second `t`.
pub fn day_of(t: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix milliseconds of an RFC 3339 time as Fly writes them
/// (`2026-12-06T10:31:08.123Z`, or with an offset such as `+02:00`);
/// None for anything else.
pub fn unix_ms_of(t: &str) -> Option<u64> {
    let (date, rest) = t.split_at_checked(10)?;
    if !valid_day(date) {
        return None;
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    // Digits only (no sign, as parse would take).
    let num = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let (h, m, sec) = (
        num(rest.get(0..2)?)?,
        num(rest.get(3..5)?)?,
        num(rest.get(6..8)?)?,
    );
    if rest.get(2..3)? != ":" || rest.get(5..6)? != ":" || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut tail = &rest[8..];
    let mut ms = 0i64;
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = num(&first3)?;
        tail = &frac[digits..];
    }
    let offset_min = match tail {
        "Z" | "z" => 0,
        _ => {
            let sign = match tail.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            if tail.len() != 6 || tail.get(3..4)? != ":" {
                return None;
            }
            let (oh, om) = (num(tail.get(1..3)?)?, num(tail.get(4..6)?)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    let (y, mo, d) = (num(&date[0..4])?, num(&date[5..7])?, num(&date[8..10])?);
    // Howard Hinnant's days-from-civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

/// A `YYYY-MM-DD` that names a real day.
pub fn valid_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !(1..=12).contains(&m) || d < 1 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    d <= days[(m - 1) as usize]
}

/// One database's usage over a day (or a month).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub reads: u64,
    pub writes: u64,
    pub other: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    pub storage_byte_seconds: u64,
    pub read_region_seconds: u64,
}

impl Totals {
    pub fn commands(&self) -> u64 {
        self.reads + self.writes + self.other
    }

    /// The amount at pay-as-you-go prices, in millionths of a cent.
    pub fn amount_micro(&self) -> u128 {
        u128::from(self.commands()) * prices::COMMAND
            + u128::from(self.storage_byte_seconds) * prices::GIB_HOUR / (GIB * 3600)
            + u128::from(self.bytes_in + self.bytes_out) * prices::GIB_TRANSFER / GIB
            + u128::from(self.read_region_seconds) * prices::READ_REGION_HOUR / 3600
    }

    /// The amount at pay-as-you-go prices, in cents (rounded half up).
    pub fn amount_cents(&self) -> u64 {
        cents(self.amount_micro())
    }

    pub fn add(&mut self, o: &Totals) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.other += o.other;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.connections += o.connections;
        self.storage_byte_seconds += o.storage_byte_seconds;
        self.read_region_seconds += o.read_region_seconds;
    }

    /// As the billing answer shows it, with its amount (`micro`, µ¢: in
    /// cents, rounded half up, and exactly).
    pub fn json(&self, micro: u128) -> Value {
        json!({
            "commands": {
                "read": self.reads,
                "write": self.writes,
                "other": self.other,
                "total": self.commands(),
            },
            "bandwidth_bytes": { "in": self.bytes_in, "out": self.bytes_out },
            "connections": self.connections,
            "storage_gb_hours": self.storage_byte_seconds as f64 / GIB as f64 / 3600.0,
            "storage_byte_seconds": self.storage_byte_seconds,
            "read_region_hours": self.read_region_seconds as f64 / 3600.0,
            "read_region_seconds": self.read_region_seconds,
            "amount_cents": cents(micro),
            "amount_micro_cents": u64::try_from(micro).unwrap_or(u64::MAX),
        })
    }
}

/// µ¢ to cents, rounded half up.
fn cents(micro: u128) -> u64 {
    u64::try_from((micro + 500_000) / 1_000_000).unwrap_or(u64::MAX)
}

/// Usage over any number of (day, plan) rows, and what it costs: each
/// part at the plan that was in force when it was taken (`free` is not
/// charged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bill {
    pub totals: Totals,
    /// The charged parts' amount, µ¢.
    pub micro: u128,
}

impl Bill {
    pub fn add(&mut self, t: &Totals, plan: &str) {
        self.totals.add(t);
        if plan != "free" {
            self.micro += t.amount_micro();
        }
    }

    pub fn cents(&self) -> u64 {
        cents(self.micro)
    }

    pub fn json(&self) -> Value {
        self.totals.json(self.micro)
    }
}

fn totals_row(r: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<Totals> {
    let g = |i: usize| r.get::<_, i64>(from + i).map(|v| v.max(0) as u64);
    Ok(Totals {
        reads: g(0)?,
        writes: g(1)?,
        other: g(2)?,
        bytes_in: g(3)?,
        bytes_out: g(4)?,
        connections: g(5)?,
        storage_byte_seconds: g(6)?,
        read_region_seconds: g(7)?,
    })
}

/// The plan database `id` is on now (`payg` for one the store does not
/// know).
fn plan_now(tx: &rusqlite::Transaction<'_>, id: i64) -> rusqlite::Result<String> {
    Ok(tx
        .query_row(
            "SELECT plan FROM databases WHERE tenant_id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| crate::plans::DEFAULT.name.to_string()))
}

/// Adds `t` to tenant `id`'s row of `day` under `plan`.
fn add(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    day: &str,
    plan: &str,
    t: &Totals,
) -> rusqlite::Result<()> {
    let v = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO usage_daily (tenant_id, day, plan, reads, writes, other, bytes_in, bytes_out,
                                  connections, storage_byte_seconds, read_region_seconds)
         VALUES (?1, ?2, ?11, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(tenant_id, day, plan) DO UPDATE SET
            reads = reads + excluded.reads, writes = writes + excluded.writes,
            other = other + excluded.other, bytes_in = bytes_in + excluded.bytes_in,
            bytes_out = bytes_out + excluded.bytes_out,
            connections = connections + excluded.connections,
            storage_byte_seconds = storage_byte_seconds + excluded.storage_byte_seconds,
            read_region_seconds = read_region_seconds + excluded.read_region_seconds",
        params![
            id,
            day,
            v(t.reads),
            v(t.writes),
            v(t.other),
            v(t.bytes_in),
            v(t.bytes_out),
            v(t.connections),
            v(t.storage_byte_seconds),
            v(t.read_region_seconds),
            plan
        ],
    )?;
    Ok(())
}

/// One record's totals per tenant: its counts, and its stored bytes over
/// the interval it covers; the day is the one its interval ends in.
fn record_totals(rec: &Value) -> (String, Vec<(i64, Totals)>) {
    let from = rec["from_ms"].as_i64().unwrap_or(0);
    let to = rec["to_ms"].as_i64().unwrap_or(from);
    let secs_ms = u128::try_from((to - from).max(0)).unwrap_or(0);
    let mut out = Vec::new();
    if let Some(ts) = rec["tenants"].as_object() {
        for (id, u) in ts {
            let Ok(id) = id.parse::<i64>() else { continue };
            let g = |k: &str| u[k].as_u64().unwrap_or(0);
            let stored = u128::from(g("stored_bytes"));
            out.push((
                id,
                Totals {
                    reads: g("reads"),
                    writes: g("writes"),
                    other: g("other"),
                    bytes_in: g("bytes_in"),
                    bytes_out: g("bytes_out"),
                    connections: g("connections"),
                    storage_byte_seconds: u64::try_from(stored * secs_ms / 1000)
                        .unwrap_or(u64::MAX),
                    read_region_seconds: 0,
                },
            ));
        }
    }
    (day_of(to.div_euclid(1000)), out)
}

/// Takes one page of node `node`'s records (log `log`), past the cursor:
/// added to the daily rows and the cursor moved, in one transaction. The
/// number of records added.
pub fn take_records(
    store: &mut crate::store::Store,
    node: &str,
    log: &str,
    records: &[Value],
    now: i64,
) -> Result<usize, crate::store::StoreError> {
    store.transaction(|tx| {
        let cursor: i64 = tx
            .query_row(
                "SELECT seq FROM usage_cursors WHERE log = ?1",
                params![log],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut last = cursor;
        let mut added = 0;
        for rec in records {
            let Some(seq) = rec["seq"].as_i64() else {
                continue;
            };
            if seq <= last || rec["log"].as_str() != Some(log) {
                continue;
            }
            let (day, tenants) = record_totals(rec);
            for (id, t) in &tenants {
                // Charged at the plan in force now: records are pulled
                // within a minute of their end.
                add(tx, *id, &day, &plan_now(tx, *id)?, t)?;
            }
            last = seq;
            added += 1;
        }
        tx.execute(
            "INSERT INTO usage_cursors (log, node, seq, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(log) DO UPDATE SET node = excluded.node, seq = excluded.seq,
                 updated_at = excluded.updated_at",
            params![log, node, last, now],
        )?;
        Ok(added)
    })
}

/// Counts every ready database's read regions up to `now` (split at UTC
/// midnights), and marks every database not deleted counted up to now (a
/// database waiting in `provisioning` is not charged for the wait).
pub fn count_read_regions(
    store: &mut crate::store::Store,
    now: i64,
    copies: &HashMap<u64, HashSet<String>>,
) -> Result<(), crate::store::StoreError> {
    store.transaction(|tx| {
        type Row = (i64, String, i64, i64, String, String);
        let rows: Vec<Row> = {
            let mut q = tx.prepare(
                "SELECT tenant_id, read_regions, created_at, regions_metered_at, status, plan
                 FROM databases WHERE status != 'deleted'",
            )?;
            let rows = q.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (id, regions, created, metered, status, plan) in rows {
            // The read regions it asks for that have its replica (one
            // added where no node runs yet counts once a node has it). A
            // ready database the view does not list (its node behind)
            // waits: the next view that lists it counts the time.
            let held = copies.get(&(id as u64));
            if held.is_none() && status == "ready" {
                continue;
            }
            let n = regions
                .split(',')
                .filter(|r| !r.is_empty() && held.is_some_and(|h| h.contains(*r)))
                .count() as i64;
            let mut from = metered.max(created);
            if n > 0 && status == "ready" {
                while from < now {
                    let midnight = (from.div_euclid(86_400) + 1) * 86_400;
                    let until = midnight.min(now);
                    let t = Totals {
                        read_region_seconds: ((until - from) * n) as u64,
                        ..Totals::default()
                    };
                    add(tx, id, &day_of(from), &plan, &t)?;
                    from = until;
                }
            }
            tx.execute(
                "UPDATE databases SET regions_metered_at = ?2 WHERE tenant_id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    })
}

/// Every member a `/cluster` answer lists, as (machine, its HTTP address
/// if it published one).
fn members(cluster_json: &str) -> Result<Vec<Member>, String> {
    let v: Value = serde_json::from_str(cluster_json).map_err(|e| e.to_string())?;
    Ok(v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    Some(Member {
                        machine: m["machine"].as_str()?.to_string(),
                        http: m["meta"]["http_addr"].as_str().map(str::to_string),
                        down: m["state"].as_str() == Some("down"),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Most pages taken from one node in one pull.
const PAGES: usize = 100;

/// The cursor of log `log` (0: none yet).
fn cursor(api: &Api, log: &str) -> Result<i64, String> {
    let store = api.store.lock();
    store
        .conn()
        .query_row(
            "SELECT seq FROM usage_cursors WHERE log = ?1",
            params![log],
            |r| r.get(0),
        )
        .optional()
        .map(|c| c.unwrap_or(0))
        .map_err(|e| e.to_string())
}

/// One page of node `addr`'s records after `after`: its log id (None: no
/// log yet) and the records.
async fn page(api: &Api, addr: &str, after: i64) -> Result<(Option<String>, Vec<Value>), String> {
    let (status, body) = api
        .cluster
        .get_at(addr, &format!("/admin/usage?after={after}"))
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let log = v["log"].as_str().map(str::to_string);
    Ok((log, v["records"].as_array().cloned().unwrap_or_default()))
}

/// Pulls node `machine`'s new records from `addr` until it has no more.
/// The node names its log in every answer; the cursor is that log's (a
/// first guess is the log this node wrote last, asked again when the
/// node's log is another).
async fn pull_node(api: &Api, machine: &str, addr: &str) -> Result<usize, String> {
    let guess: Option<String> = {
        let store = api.store.lock();
        store
            .conn()
            .query_row(
                "SELECT log FROM usage_cursors WHERE node = ?1
                 ORDER BY updated_at DESC, rowid DESC LIMIT 1",
                params![machine],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?
    };
    let mut after = match &guess {
        Some(log) => cursor(api, log)?,
        None => 0,
    };
    let mut total = 0;
    // The log and the cursor the store holds for it, once known.
    let mut held: Option<(String, i64)> = None;
    for _ in 0..PAGES {
        let (log, mut records) = page(api, addr, after).await?;
        let Some(log) = log else {
            break;
        };
        let known = cursor(api, &log)?;
        if known != after {
            // Another log than the guess: ask again from its own cursor.
            after = known;
            let (again, more) = page(api, addr, after).await?;
            if again.as_deref() != Some(log.as_str()) {
                return Err(format!("{machine}'s usage log changed while it was read"));
            }
            records = more;
        }
        held = Some((log.clone(), after));
        if records.is_empty() {
            break;
        }
        let added = {
            let mut store = api.store.lock();
            take_records(&mut store, machine, &log, &records, crate::unix_now())
                .map_err(|e| e.to_string())?
        };
        total += added;
        after = cursor(api, &log)?;
        held = Some((log, after));
        if added == 0 {
            break;
        }
    }
    // What the store holds (committed) the node may drop from its file.
    if let Some((log, seq)) = held.filter(|h| h.1 > 0) {
        let path = format!(
            "/admin/usage/taken?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("log", &log)
                .append_pair("seq", &seq.to_string())
                .finish()
        );
        match api.cluster.post_at(addr, &path).await {
            Ok((200, _)) => {}
            Ok((code, body)) => {
                tracing::debug!(node = %machine, "usage taken not told: HTTP {code}: {body}")
            }
            Err(e) => tracing::debug!(node = %machine, "usage taken not told: {e}"),
        }
    }
    Ok(total)
}

/// The cluster view (`/cluster`) from the sidecar's admin endpoints, or
/// from node `addr`'s HTTP port.
pub(crate) async fn cluster_view(api: &Api, addr: Option<&str>) -> Result<String, String> {
    let (status, body) = match addr {
        None => api.cluster.get("/cluster").await,
        Some(a) => api.cluster.get_at(a, "/cluster").await,
    }
    .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/cluster: HTTP {status}"));
    }
    Ok(body)
}

/// A member of the cluster as `/cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub machine: String,
    /// Its HTTP address (host:port), once it published one.
    pub http: Option<String>,
    /// The gossip holds it down.
    pub down: bool,
}

/// Every member `/cluster` lists.
pub(crate) async fn all_members(api: &Api) -> Result<Vec<Member>, String> {
    members(&cluster_view(api, None).await?)
}

/// Per tenant, the regions where the cluster view (`/cluster`'s
/// `tenants`) shows a replica of it; None when the view has no tenants
/// (not a node's).
pub(crate) fn replica_regions(cluster_json: &str) -> Option<HashMap<u64, HashSet<String>>> {
    let v: Value = serde_json::from_str(cluster_json).ok()?;
    let tenants = v["tenants"].as_array()?;
    Some(
        tenants
            .iter()
            .filter_map(|t| {
                let regions = t["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["region"].as_str().map(str::to_string))
                    .collect();
                Some((t["id"].as_u64()?, regions))
            })
            .collect(),
    )
}

/// One pull: every node's new records, then the read regions.
pub async fn pull(api: &Api) -> Result<usize, String> {
    let view = cluster_view(api, None).await?;
    let mut total = 0;
    let nodes: Vec<(String, String)> = members(&view)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m.machine, m.http?)))
        .collect();
    for (machine, addr) in nodes {
        match pull_node(api, &machine, &addr).await {
            Ok(n) => total += n,
            // Its records wait in its log until it answers again.
            Err(e) => tracing::debug!(node = %machine, "usage not pulled: {e}"),
        }
    }
    // Without the view the regions wait: the next pull counts the time.
    if let Some(copies) = replica_regions(&view) {
        count_read_regions(&mut api.store.lock(), crate::unix_now(), &copies)
            .map_err(|e| e.to_string())?;
    }
    // The same view brings the regions the cluster's operators moved
    // databases to (before the next pull counts their read regions).
    crate::api::adopt_moves(api, &view).await;
    Ok(total)
}

/// Pulls every `every`, for ever.
pub async fn run(api: Arc<Api>, every: Duration) {
    loop {
        match pull(&api).await {
            Ok(n) if n > 0 => tracing::debug!("took {n} usage records"),
            Ok(_) => {}
            Err(e) => tracing::warn!("pulling usage: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// The columns [`totals_row`] reads, by name.
const COLUMNS: &str = "reads, writes, other, bytes_in, bytes_out, connections,
    storage_byte_seconds, read_region_seconds";

/// Database `tenant_id`'s usage and charge over the days from `first` to
/// `last`.
pub fn totals(
    store: &crate::store::Store,
    tenant_id: u64,
    first: &str,
    last: &str,
) -> Result<Bill, crate::store::StoreError> {
    let mut q = store.conn().prepare_cached(&format!(
        "SELECT plan, {COLUMNS} FROM usage_daily
         WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3"
    ))?;
    let rows = q.query_map(params![tenant_id as i64, first, last], |r| {
        Ok((r.get::<_, String>(0)?, totals_row(r, 1)?))
    })?;
    let mut b = Bill::default();
    for row in rows {
        let (plan, t) = row?;
        b.add(&t, &plan);
    }
    Ok(b)
}

/// Database `tenant_id`'s days from `first` on, in order.
pub fn days(
    store: &crate::store::Store,
    tenant_id: u64,
    first: &str,
) -> Result<Vec<(String, Bill)>, crate::store::StoreError> {
    let mut q = store.conn().prepare_cached(&format!(
        "SELECT day, plan, {COLUMNS} FROM usage_daily
         WHERE tenant_id = ?1 AND day >= ?2 ORDER BY day"
    ))?;
    let rows = q.query_map(params![tenant_id as i64, first], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            totals_row(r, 2)?,
        ))
    })?;
    let mut out: Vec<(String, Bill)> = Vec::new();
    for row in rows {
        let (day, plan, t) = row?;
        match out.last_mut() {
            Some((d, b)) if *d == day => b.add(&t, &plan),
            _ => {
                let mut b = Bill::default();
                b.add(&t, &plan);
                out.push((day, b));
            }
        }
    }
    Ok(out)
}

/// Fly's daily billing fetch: `GET /billing?date=YYYY-MM-DD` (signed like
/// every request, over the query string).
pub async fn billing(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = query.unwrap_or_default();
    if let Err(r) = crate::api::verified(&api, "GET", "/billing", &q, &headers, b"") {
        return *r;
    }
    let date = form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "date")
        .map(|(_, v)| v.into_owned());
    let Some(date) = date.filter(|d| valid_day(d)) else {
        return crate::api::error(
            StatusCode::BAD_REQUEST,
            "date: expected a day as YYYY-MM-DD",
            Some("date"),
        );
    };
    match bill(&api.store.lock(), &date) {
        Ok(v) => Json(v).into_response(),
        Err(e) => crate::api::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

/// The billing answer for `date`: per organization, per database.
pub fn bill(store: &crate::store::Store, date: &str) -> Result<Value, crate::store::StoreError> {
    let mut q = store.conn().prepare(
        "SELECT d.organization_id, d.fly_id, d.name, d.plan, d.status, u.plan,
                u.reads, u.writes, u.other, u.bytes_in, u.bytes_out, u.connections,
                u.storage_byte_seconds, u.read_region_seconds
         FROM usage_daily u JOIN databases d ON d.tenant_id = u.tenant_id
         WHERE u.day = ?1 ORDER BY d.organization_id, d.fly_id, u.plan",
    )?;
    let rows = q.query_map(params![date], |r| {
        Ok((
            [
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ],
            r.get::<_, String>(5)?,
            totals_row(r, 6)?,
        ))
    })?;
    // (organization, database id, name, plan now, status, plans used, bill)
    type Line = ([String; 5], Vec<String>, Bill);
    let mut lines: Vec<Line> = Vec::new();
    for row in rows {
        let (who, plan, t) = row?;
        match lines.last_mut() {
            Some((w, plans, b)) if w[1] == who[1] => {
                plans.push(plan.clone());
                b.add(&t, &plan);
            }
            _ => {
                let mut b = Bill::default();
                b.add(&t, &plan);
                lines.push((who, vec![plan], b));
            }
        }
    }
    let mut orgs: Vec<(String, Vec<Value>, u64)> = Vec::new();
    for ([org, id, name, plan, status], plans, b) in lines {
        // Each part at the plan it was taken under: the free plan is not
        // charged; its usage is still shown.
        let mut line = b.json();
        line["id"] = json!(id);
        line["name"] = json!(name);
        line["plan"] = json!(plan);
        line["plans_used"] = json!(plans);
        line["status"] = json!(status);
        let amount = b.cents();
        match orgs.last_mut() {
            Some((o, ls, sum)) if *o == org => {
                ls.push(line);
                *sum += amount;
            }
            _ => orgs.push((org, vec![line], amount)),
        }
    }
    Ok(json!({
        "date": date,
        "currency": "usd",
        "organizations": orgs
            .into_iter()
            .map(|(o, lines, sum)| json!({
                "organization_id": o,
                "amount_cents": sum,
                "databases": lines,
            }))
            .collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_checked() {
        assert_eq!(day_of(0), "1970-01-01");
        // Fly's volume and machine times.
        assert_eq!(unix_ms_of("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_ms_of("2026-12-06T00:00:00Z"), Some(1_796_515_200_000));
        assert_eq!(
            unix_ms_of("2026-12-06T10:31:08.1234Z"),
            Some(1_796_515_200_000 + 37_868_123)
        );
        assert_eq!(
            unix_ms_of("2026-12-06T02:00:00+02:00"),
            Some(1_796_515_200_000)
        );
        assert_eq!(
            unix_ms_of("2024-02-29T00:00:00.5Z"),
            Some(1_709_164_800_500)
        );
        for bad in [
            "2026-12-06T-1:00:00Z",
            "2026-12-06T00:00:00+99:99",
            "",
            "2026-12-06",
            "2026-13-06T00:00:00Z",
            "2026-12-06T00:00:00",
            "2026-12-06T24:00:00Z",
            "2026-12-06T00:00:00.Z",
        ] {
            assert_eq!(unix_ms_of(bad), None, "{bad}");
        }
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_796_515_199), "2026-12-05");
        assert_eq!(day_of(1_796_515_200), "2026-12-06");
        assert!(valid_day("2024-02-29") && !valid_day("2023-02-29"));
        assert!(!valid_day("2026-13-01") && !valid_day("2026-1-01") && !valid_day("x"));
    }

    #[test]
    fn amounts_follow_the_prices() {
        let t = Totals {
            reads: 60_000,
            writes: 40_000,
            ..Totals::default()
        };
        // 100,000 commands: 20 cents.
        assert_eq!(t.amount_cents(), 20);
        // A GiB for 30 days: 0.035¢ × 720 = 25.2¢.
        let t = Totals {
            storage_byte_seconds: (1u64 << 30) * 30 * 86_400,
            ..Totals::default()
        };
        assert_eq!(t.amount_cents(), 25);
        let t = Totals {
            bytes_out: 10 << 30,
            read_region_seconds: 2 * 24 * 3600,
            ..Totals::default()
        };
        // 30¢ of transfer and 48 region-hours at 0.5¢.
        assert_eq!(t.amount_cents(), 54);
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("anykv-metering-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rec(log: &str, seq: u64, to_ms: i64, reads: u64, stored: u64) -> Value {
        json!({"seq": seq, "log": log, "boot": "b", "node": "n1", "from_ms": to_ms - 10_000,
               "to_ms": to_ms, "tenants": {"5": {"reads": reads, "writes": 1, "other": 0,
               "bytes_in": 10, "bytes_out": 20, "connections": 1, "stored_bytes": stored}}})
    }

    #[test]
    fn records_are_taken_once_whatever_is_pulled_again() {
        let dir = tmp("once");
        let mut s = crate::store::Store::open(&dir, 300).unwrap();
        let t0 = 1_796_515_190_000; // 2026-12-05 23:59:50 UTC
        let page = [rec("L", 1, t0, 5, 1000), rec("L", 2, t0 + 10_000, 7, 1000)];
        assert_eq!(take_records(&mut s, "n1", "L", &page, 1).unwrap(), 2);
        // The same page again, and an overlapping one: only seq 3 is new.
        assert_eq!(take_records(&mut s, "n1", "L", &page, 2).unwrap(), 0);
        let more = [page[1].clone(), rec("L", 3, t0 + 20_000, 100, 0)];
        assert_eq!(take_records(&mut s, "n1", "L", &more, 3).unwrap(), 1);
        // Another log (a new volume) starts its own sequence.
        assert_eq!(
            take_records(&mut s, "n1", "M", &[rec("M", 1, t0, 1, 0)], 4).unwrap(),
            1
        );
        let day1 = totals(&s, 5, "2026-12-05", "2026-12-05").unwrap().totals;
        let day2 = totals(&s, 5, "2026-12-06", "2026-12-06").unwrap().totals;
        assert_eq!((day1.reads, day1.writes), (6, 2));
        assert_eq!((day2.reads, day2.writes), (107, 2));
        // 1000 bytes for 10 s in each of the first two records.
        assert_eq!(day1.storage_byte_seconds, 10_000);
        assert_eq!(day2.storage_byte_seconds, 10_000);
        assert_eq!(day1.bytes_in + day2.bytes_in, 40);
        let none = totals(&s, 6, "2026-12-01", "2026-12-31").unwrap();
        assert_eq!(none, Bill::default());
    }

    #[test]
    fn a_day_with_a_plan_change_is_charged_part_by_part() {
        let dir = tmp("plans");
        let mut s = crate::store::Store::open(&dir, 300).unwrap();
        let db = crate::store::Database {
            read_regions: vec![],
            created_at: 1,
            plan: "free".into(),
            ..crate::store::Database::sample("ext_5", 5)
        };
        s.insert_database(("org_1", "Acme", ""), None, &db).unwrap();
        let t0 = 1_796_515_000_000; // 2026-12-05
        let big = |seq, to| {
            let mut r = rec("L", seq, to, 100_000, 0);
            r["tenants"]["5"]["writes"] = json!(0);
            r["tenants"]["5"]["bytes_in"] = json!(0);
            r["tenants"]["5"]["bytes_out"] = json!(0);
            r
        };
        take_records(&mut s, "n1", "L", &[big(1, t0)], 1).unwrap();
        s.transaction(|tx| crate::store::set_plan(tx, "ext_5", "payg", 2))
            .unwrap();
        take_records(&mut s, "n1", "L", &[big(2, t0 + 10_000)], 2).unwrap();
        let v = bill(&s, "2026-12-05").unwrap();
        let line = &v["organizations"][0]["databases"][0];
        // 200,000 commands, of which the 100,000 taken under payg cost 20¢.
        assert_eq!(line["commands"]["total"], 200_000, "{v}");
        assert_eq!(line["amount_cents"], 20, "{v}");
        assert_eq!(line["plans_used"], json!(["free", "payg"]));
        assert_eq!(v["organizations"][0]["amount_cents"], 20);
        assert_eq!(
            totals(&s, 5, "2026-12-01", "2026-12-31").unwrap().cents(),
            20
        );
    }

    /// Database `id`'s read-region seconds on 2026-12-05.
    fn region_seconds(s: &crate::store::Store, id: u64) -> u64 {
        totals(s, id, "2026-12-05", "2026-12-05")
            .unwrap()
            .totals
            .read_region_seconds
    }

    #[test]
    fn read_regions_count_where_their_replica_runs() {
        let dir = tmp("regions");
        let mut s = crate::store::Store::open(&dir, 300).unwrap();
        let db = |id: &str, tenant: u64, status: &str| crate::store::Database {
            status: status.into(),
            created_at: 1,
            plan: "payg".into(),
            ..crate::store::Database::sample(id, tenant)
        };
        let org = ("org_1", "Acme", "");
        s.insert_database(org, None, &db("ext_1", 1, "ready"))
            .unwrap();
        s.insert_database(org, None, &db("ext_2", 2, "provisioning"))
            .unwrap();
        let t0 = 1_796_428_800; // 2026-12-05 00:00 UTC
        s.conn()
            .execute("UPDATE databases SET regions_metered_at = ?1", params![t0])
            .unwrap();
        // ext_1's syd replica is not there yet (no node in syd); ext_2
        // waits for its regions (provisioning): neither counts for those.
        let copies = HashMap::from([
            (1u64, HashSet::from(["iad".to_string(), "cdg".to_string()])),
            (2u64, HashSet::from(["cdg".to_string()])),
        ]);
        count_read_regions(&mut s, t0 + 3600, &copies).unwrap();
        assert_eq!((region_seconds(&s, 1), region_seconds(&s, 2)), (3600, 0));
        // A view that does not list ext_1 (its node behind): its time
        // waits for the next view that does.
        count_read_regions(&mut s, t0 + 4000, &HashMap::new()).unwrap();
        assert_eq!(region_seconds(&s, 1), 3600);
        // The syd replica came: both regions count from then.
        let copies = HashMap::from([(1u64, HashSet::from(["cdg".to_string(), "syd".to_string()]))]);
        count_read_regions(&mut s, t0 + 5400, &copies).unwrap();
        assert_eq!(region_seconds(&s, 1), 3600 + 2 * 1800);
    }

    #[test]
    fn replica_regions_come_from_the_cluster_views_tenants() {
        let view = r#"{"members": [], "tenants": [
            {"id": 1, "replicas": [{"node": "n2", "region": "iad"}, {"node": "n3", "region": "cdg"}]},
            {"id": 2, "replicas": []}]}"#;
        let r = replica_regions(view).unwrap();
        assert_eq!(r[&1], HashSet::from(["iad".to_string(), "cdg".to_string()]));
        assert!(r[&2].is_empty());
        assert!(replica_regions(r#"{"members": []}"#).is_none());
    }
}
