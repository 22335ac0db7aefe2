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
    metrics::gauge!("anykv_keys", "tenant" => tenant.clone()).set(t.ks.total_keys() as f64);
    metrics::gauge!("anykv_clients", "tenant" => tenant.clone()).set(t.clients.len() as f64);
    metrics::gauge!("anykv_repl_offset", "tenant" => tenant).set(t.log.offset() as f64);
}
