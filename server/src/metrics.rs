//! Prometheus metrics. Hot paths keep plain counters (tenant stats, relaxed
//! atomics); the cron publishes them here once a second, so serving a
//! command never touches the metrics registry.

use std::sync::atomic::Ordering::Relaxed;

use crate::shared::Shared;
use crate::tenant::Tenant;

pub fn publish(t: &Tenant, shared: &Shared) {
    let tenant = t.name.clone();
    let g = &shared.stats;
    metrics::gauge!("anykv_connected_clients").set(g.connected_clients.load(Relaxed) as f64);
    metrics::counter!("anykv_connections_received_total")
        .absolute(g.connections_received.load(Relaxed));
    metrics::counter!("anykv_rejected_connections_total")
        .absolute(g.rejected_connections.load(Relaxed));
    metrics::counter!("anykv_net_input_bytes_total").absolute(g.net_input_bytes.load(Relaxed));
    metrics::counter!("anykv_net_output_bytes_total").absolute(g.net_output_bytes.load(Relaxed));
    metrics::counter!("anykv_protocol_errors_total").absolute(g.protocol_errors.load(Relaxed));
    metrics::gauge!("anykv_used_memory_bytes").set(crate::alloc::allocated() as f64);
    metrics::gauge!("anykv_rss_bytes").set(crate::alloc::rss_bytes() as f64);
    let s = &t.stats;
    metrics::counter!("anykv_commands_processed_total", "tenant" => tenant.clone())
        .absolute(s.total_commands);
    metrics::counter!("anykv_error_replies_total", "tenant" => tenant.clone())
        .absolute(s.total_error_replies);
    metrics::counter!("anykv_keyspace_hits_total", "tenant" => tenant.clone())
        .absolute(s.keyspace_hits);
    metrics::counter!("anykv_keyspace_misses_total", "tenant" => tenant.clone())
        .absolute(s.keyspace_misses);
    metrics::counter!("anykv_expired_keys_total", "tenant" => tenant.clone())
        .absolute(s.expired_keys);
    metrics::counter!("anykv_throttled_commands_total", "tenant" => tenant.clone())
        .absolute(s.throttled_commands);
    metrics::gauge!("anykv_keys", "tenant" => tenant.clone()).set(t.ks.total_keys() as f64);
    metrics::gauge!("anykv_clients", "tenant" => tenant.clone()).set(t.clients.len() as f64);
    metrics::gauge!("anykv_repl_offset", "tenant" => tenant.clone()).set(t.log.offset() as f64);
    metrics::counter!("anykv_repl_sync_full_total", "tenant" => tenant.clone())
        .absolute(s.sync_full);
    metrics::counter!("anykv_repl_sync_partial_ok_total", "tenant" => tenant.clone())
        .absolute(s.sync_partial_ok);
    metrics::counter!("anykv_repl_sync_partial_err_total", "tenant" => tenant.clone())
        .absolute(s.sync_partial_err);
    publish_routes(t);
    let status = ReplStatus::of(t);
    for r in &status.replicas {
        let replica = r.addr.to_string();
        metrics::gauge!("anykv_repl_replica_lag_bytes", "tenant" => tenant.clone(), "replica" => replica.clone())
            .set(status.offset.saturating_sub(r.ack_offset) as f64);
        if let Some(ms) = r.lag_ms {
            metrics::gauge!("anykv_repl_replica_lag_ms", "tenant" => tenant.clone(), "replica" => replica)
                .set(ms as f64);
        }
    }
    if let Some(up) = status.link_up {
        metrics::gauge!("anykv_repl_link_up", "tenant" => tenant.clone())
            .set(f64::from(u8::from(up)));
    }
    if let Some(ms) = status.master_lag_ms {
        metrics::gauge!("anykv_repl_lag_ms", "tenant" => tenant).set(ms as f64);
    }
    shared.repl_status.lock().insert(t.id, status);
}

/// A tenant's route counters (INFO routing).
pub fn publish_routes(t: &Tenant) {
    let tenant = t.name.clone();
    let r = &t.stats.routes;
    for (route, n) in [
        ("local_read", r.local_reads),
        ("waited_read", r.waited_reads),
        ("remote_read", r.remote_reads),
        ("primary_read", r.primary_reads),
        ("fell_back_read", r.fell_back_reads),
        ("primary_write", r.primary_writes),
        ("pinned", r.pinned),
        ("pipelined", r.pipelined),
    ] {
        metrics::counter!("anykv_routed_total", "tenant" => tenant.clone(), "route" => route)
            .absolute(n);
    }
    metrics::counter!("anykv_ryw_wait_microseconds_total", "tenant" => tenant.clone())
        .absolute(r.wait_us);
}

/// A tenant's replication as other threads see it (the node's cluster
/// view, metrics), refreshed once a second by its cron.
#[derive(Clone, Debug, Default)]
pub struct ReplStatus {
    pub offset: u64,
    /// As a replica: whether its link to the primary is up (None: it is a
    /// primary).
    pub link_up: Option<bool>,
    /// As a replica on a cluster link: its lag in ms.
    pub master_lag_ms: Option<i64>,
    /// As a primary: its attached replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// The average size of a write in the backlog (bytes of a write
    /// command in the stream, its framing left out), for estimates; only
    /// filled on request ([`ReplStatus::with_write_size`]: it reads the
    /// whole backlog).
    pub avg_write_bytes: Option<u64>,
    /// As a primary with durability `region`: every write waits for the
    /// standby.
    pub waits_for_standby: bool,
    /// As a replica: it completed a sync (full or partial) since this
    /// process started, so it has every write its primary sent up to its
    /// offset. (After a crash a replica may lack what it acknowledged.)
    pub synced_since_start: bool,
    /// Live figures (the dashboard's): `instantaneous_ops_per_sec`, the
    /// tenant's memory account, keys in all its databases.
    pub ops_per_sec: u64,
    pub used_memory: u64,
    pub keys: u64,
}

#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    pub addr: std::net::SocketAddr,
    /// It has completed its sync: streaming, and has acknowledged; and its
    /// node keeps the copy (its acknowledgements do not say `KEEP 0`).
    pub synced: bool,
    pub ack_offset: u64,
    pub lag_ms: Option<i64>,
}

impl ReplStatus {
    /// The offset the replica at `ip` acknowledged last (a primary's
    /// handoff waits for it to reach [`ReplStatus::offset`]), from a
    /// synced link of a copy its node keeps.
    pub fn acked_by(&self, ip: std::net::IpAddr) -> Option<u64> {
        self.replicas
            .iter()
            .filter(|r| r.addr.ip() == ip && r.synced)
            .map(|r| r.ack_offset)
            .max()
    }

    /// [`ReplStatus::of`] plus the backlog's average write size.
    pub fn with_write_size(t: &Tenant) -> ReplStatus {
        let mut s = ReplStatus::of(t);
        let from = t.log.offset() - t.log.backlog_len() as u64;
        s.avg_write_bytes = t.log.since(from).and_then(|tail| {
            let (writes, bytes) = crate::repl::replica::stream_writes(&tail);
            (writes > 0).then(|| bytes / writes)
        });
        s
    }

    pub fn of(t: &Tenant) -> ReplStatus {
        ReplStatus {
            offset: t.log.offset(),
            link_up: t.upstream.as_ref().map(|_| t.upstream_connected()),
            master_lag_ms: t.master_lag_ms,
            replicas: t
                .replicas
                .iter()
                .map(|l| ReplicaStatus {
                    addr: l.addr,
                    synced: l.streaming.get() && l.ack_offset.get() > 0 && l.kept.get(),
                    ack_offset: l.ack_offset.get(),
                    lag_ms: l.lag_ms.get(),
                })
                .collect(),
            avg_write_bytes: None,
            waits_for_standby: t.durable,
            synced_since_start: t.synced_since_start,
            ops_per_sec: t.stats.ops_meter.per_sec(),
            used_memory: t.mem.used(),
            keys: t.ks.dbs.iter().map(|d| d.len() as u64).sum(),
        }
    }
}
