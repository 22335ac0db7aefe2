//! INFO, with Redis 7.0's section and field names so dashboards and client
//! libraries that parse INFO keep working. Tenant-scoped: keyspace, stats
//! and clients are the caller's tenant's.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::table::registry;
use super::Ctx;
use crate::alloc;
use crate::shared::{ANYKV_VERSION, REDIS_VERSION};

const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];

pub fn info(ctx: &mut Ctx) {
    let mut wanted: Vec<String> = Vec::new();
    for a in &ctx.args[1..] {
        let s = String::from_utf8_lossy(a).to_ascii_lowercase();
        match s.as_str() {
            "default" => wanted.extend(DEFAULT.iter().map(|s| s.to_string())),
            "all" | "everything" => {
                wanted.extend(DEFAULT.iter().map(|s| s.to_string()));
                wanted.push("commandstats".into());
                wanted.push("latencystats".into());
                wanted.push("routing".into());
            }
            _ => wanted.push(s),
        }
    }
    if wanted.is_empty() {
        wanted.extend(DEFAULT.iter().map(|s| s.to_string()));
    }
    let mut out = String::new();
    let mut done: Vec<&str> = Vec::new();
    for sec in [
        "server",
        "clients",
        "memory",
        "persistence",
        "stats",
        "replication",
        "routing",
        "cpu",
        "modules",
        "commandstats",
        "errorstats",
        "latencystats",
        "cluster",
        "keyspace",
    ] {
        if !wanted.iter().any(|w| w == sec) || done.contains(&sec) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        done.push(sec);
        section(ctx, sec, &mut out);
    }
    ctx.out.verbatim(out.as_bytes());
}

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads
    // nothing else; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return (0.0, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_stime), t(ru.ru_utime))
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    }
}

fn section(ctx: &mut Ctx, sec: &str, o: &mut String) {
    let sh = ctx.shared;
    let uptime = sh.started.elapsed().as_secs();
    match sec {
        "server" => {
            let cfg = sh.config.read();
            let _ = write!(
                o,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nanykv_version:{ANYKV_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:{}\r\nconfigured_hz:{}\r\nlru_clock:{}\r\nexecutable:{}\r\nconfig_file:{}\r\nio_threads_active:0\r\nexecutors:{}\r\n",
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                sh.run_id,
                sh.tcp_port.load(Relaxed),
                crate::util::ustime(),
                uptime,
                uptime / 86400,
                cfg.hz(),
                cfg.hz(),
                super::lru_clock(ctx.now_ms),
                // The server's paths are the operator's business.
                if ctx.t.is_customer() {
                    String::new()
                } else {
                    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
                },
                if ctx.t.is_customer() {
                    String::new()
                } else {
                    cfg.config_file().map(|p| p.display().to_string()).unwrap_or_default()
                },
                sh.executors,
            );
        }
        "clients" => {
            let maxclients = sh.config.read().maxclients();
            let _ = write!(
                o,
                "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\ntracking_clients:{}\r\nclients_in_timeout_table:0\r\n",
                ctx.t.clients.len(),
                maxclients,
                ctx.t.blocked.len(),
                ctx.t.tracking.clients,
            );
        }
        "memory" => {
            let cfg = sh.config.read();
            // A customer's database sees its own memory and limit; the
            // default tenant sees the process, as in Redis.
            let (lim, own_account) = ctx.t.memory_limits(&ctx.set.evict);
            let (maxmemory, policy) = if own_account {
                (lim.maxmemory, lim.policy.name().to_string())
            } else {
                (cfg.maxmemory(), cfg.maxmemory_policy())
            };
            // (The same figures as MEMORY STATS.)
            let super::memory::Figures {
                used,
                peak,
                rss,
                overhead,
            } = super::memory::figures(ctx);
            let _ = write!(
                o,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nused_memory_peak_perc:{:.2}%\r\nused_memory_overhead:{}\r\nused_memory_startup:0\r\nused_memory_dataset:{}\r\nallocator_allocated:{used}\r\nallocator_resident:{rss}\r\ntotal_system_memory:{}\r\nmaxmemory:{maxmemory}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:libc\r\nrepl_backlog_bytes:{}\r\n",
                human(used),
                human(rss),
                human(peak),
                if peak > 0 { used as f64 * 100.0 / peak as f64 } else { 100.0 },
                overhead,
                used.saturating_sub(overhead),
                alloc::total_system_memory(),
                human(maxmemory),
                policy,
                if used > 0 { rss as f64 / used as f64 } else { 0.0 },
                ctx.t.log.backlog_alloc(),
            );
        }
        "persistence" => {
            let p = &ctx.t.persist;
            let now_s = crate::util::mstime() / 1000;
            let job = p.job.as_ref();
            let current = |purpose| {
                job.filter(|j| j.purpose == purpose)
                    .map(|j| j.started.elapsed().as_secs() as i64)
                    .unwrap_or(-1)
            };
            let _ = write!(
                o,
                "# Persistence\r\nloading:0\r\nasync_loading:0\r\ncurrent_cow_peak:0\r\ncurrent_cow_size:0\r\ncurrent_cow_size_age:0\r\ncurrent_fork_perc:0.00\r\ncurrent_save_keys_processed:{}\r\ncurrent_save_keys_total:{}\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\nrdb_current_bgsave_time_sec:{}\r\nrdb_saves:{}\r\nrdb_last_cow_size:0\r\nrdb_last_load_keys_expired:{}\r\nrdb_last_load_keys_loaded:{}\r\naof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:{}\r\naof_last_rewrite_time_sec:{}\r\naof_current_rewrite_time_sec:{}\r\naof_last_bgrewrite_status:{}\r\naof_rewrites:{}\r\naof_rewrites_consecutive_failures:0\r\naof_last_write_status:{}\r\naof_last_cow_size:0\r\nmodule_fork_in_progress:0\r\nmodule_fork_last_cow_size:0\r\n",
                job.map(|j| j.keys_done).unwrap_or(0),
                job.map(|j| j.keys_total).unwrap_or(0),
                ctx.t.dirty.saturating_sub(p.dirty_at_save),
                p.bgsave_in_progress() as u8,
                p.lastsave.min(now_s),
                if p.last_bgsave_ok { "ok" } else { "err" },
                p.last_bgsave_time_sec,
                current(crate::persist::Purpose::Save),
                p.saves,
                p.loaded_expired,
                p.loaded_keys,
                p.aof.is_some() as u8,
                p.rewrite_in_progress() as u8,
                p.rewrite_scheduled as u8,
                p.aof_last_rewrite_time_sec,
                current(crate::persist::Purpose::Rewrite),
                if p.aof_last_rewrite_ok { "ok" } else { "err" },
                p.aof_rewrites,
                if p.aof.as_ref().is_none_or(|w| w.status.write_ok.load(Relaxed)) { "ok" } else { "err" },
            );
            if let Some(w) = &p.aof {
                let _ = write!(
                    o,
                    "aof_current_size:{}\r\naof_base_size:{}\r\naof_pending_rewrite:{}\r\naof_buffer_length:{}\r\naof_pending_bio_fsync:0\r\naof_delayed_fsync:{}\r\n",
                    w.status.size.load(Relaxed),
                    p.aof_base_size,
                    p.rewrite_scheduled as u8,
                    w.status.pending.load(Relaxed),
                    w.status.delayed_fsync.load(Relaxed),
                );
            }
        }
        "stats" => {
            let g = &sh.stats;
            let st = &ctx.t.stats;
            let _ = write!(
                o,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\nexpired_keys:{}\r\nexpired_stale_perc:{:.2}\r\nexpired_time_cap_reached_count:{}\r\nexpire_cycle_cpu_milliseconds:{}\r\nevicted_keys:{}\r\nevicted_clients:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:0\r\npubsub_patterns:0\r\nlatest_fork_usec:0\r\ntotal_forks:0\r\nclient_query_buffer_limit_disconnections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\ntotal_error_replies:{}\r\nunexpected_error_replies:{}\r\ndump_payload_sanitizations:0\r\ntotal_reads_processed:0\r\ntotal_writes_processed:0\r\nio_threaded_reads_processed:0\r\nio_threaded_writes_processed:0\r\nthrottled_commands:{}\r\n",
                g.connections_received.load(Relaxed),
                st.total_commands,
                st.ops_meter.per_sec(),
                g.net_input_bytes.load(Relaxed),
                g.net_output_bytes.load(Relaxed),
                g.rejected_connections.load(Relaxed),
                st.sync_full,
                st.sync_partial_ok,
                st.sync_partial_err,
                st.expired_keys,
                st.expired_stale_perc,
                st.expired_time_cap_reached_count,
                st.expire_cycle_cpu_milliseconds,
                st.evicted_keys,
                st.keyspace_hits,
                st.keyspace_misses,
                g.client_query_limit_disconnections.load(Relaxed),
                g.client_output_limit_disconnections.load(Relaxed) + ctx.t.pubsub.limit_disconnections,
                ctx.t.tracking.total_keys(),
                ctx.t.tracking.total_items(),
                ctx.t.tracking.total_prefixes(),
                st.total_error_replies,
                st.unexpected_error_replies,
                // anykv's own: commands that waited for the plan's rate.
                st.throttled_commands,
            );
        }
        "replication" => {
            let off = ctx.t.log.offset();
            let _ = write!(
                o,
                "# Replication\r\nrole:{}\r\n{}master_failover_state:{}\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{off}\r\nsecond_repl_offset:{}\r\nrepl_backlog_active:1\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n",
                match ctx.t.role {
                    crate::repl::Role::Primary => "master",
                    crate::repl::Role::Replica => "slave",
                },
                {
                    let mut l = String::new();
                    crate::repl::replica::info_lines(ctx.t, &mut l);
                    crate::repl::primary::info_lines(ctx.t, ctx.set.min_replicas, &mut l);
                    l
                },
                crate::repl::failover::state_name(ctx.t.failover.as_ref()),
                ctx.t.repl.replid,
                ctx.t.repl.replid2,
                ctx.t.repl.second_offset,
                ctx.t.log.backlog_cap(),
                off - ctx.t.log.backlog_len() as u64 + 1,
                ctx.t.log.backlog_len(),
            );
        }
        // anykv's own: where a replica's node sent this database's
        // customer requests (docs/ROUTING.md), and the rule it follows.
        "routing" => {
            let r = &ctx.t.stats.routes;
            let _ = write!(
                o,
                "# Routing\r\nconsistency:{}\r\nryw_wait_ms:{}\r\nrouted_local_reads:{}\r\nrouted_waited_reads:{}\r\nrouted_remote_reads:{}\r\nrouted_primary_reads:{}\r\nrouted_fell_back_reads:{}\r\nrouted_primary_writes:{}\r\nrouted_relayed_writes:{}\r\nrouted_pinned:{}\r\nrouted_pipelined:{}\r\nryw_wait_usec:{}\r\nplan_ops_per_sec:{}\r\nplan_throttled_commands:{}\r\n",
                ctx.t.consistency.as_str(),
                ctx.set.ryw_wait_ms,
                r.local_reads,
                r.waited_reads,
                r.remote_reads,
                r.primary_reads,
                r.fell_back_reads,
                r.primary_writes,
                r.relayed_writes,
                r.pinned,
                r.pipelined,
                r.wait_us,
                ctx.t.rate.as_ref().map_or(0, |r| r.per_sec()),
                ctx.t.stats.throttled_commands,
            );
        }
        "cpu" => {
            let (sys, user) = rusage();
            let _ = write!(
                o,
                "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n"
            );
        }
        "modules" => o.push_str("# Modules\r\n"),
        "commandstats" => {
            o.push_str("# Commandstats\r\n");
            let reg = registry();
            for (id, s) in ctx.t.stats.commands.iter().enumerate() {
                if s.calls == 0 && s.rejected_calls == 0 && s.failed_calls == 0 {
                    continue;
                }
                let Some(r) = reg.all.get(id) else { continue };
                let per = if s.calls > 0 {
                    s.usec as f64 / s.calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    o,
                    "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}\r\n",
                    r.fullname, s.calls, s.usec, per, s.rejected_calls, s.failed_calls
                );
            }
        }
        "errorstats" => {
            o.push_str("# Errorstats\r\n");
            for (code, n) in &ctx.t.stats.errors {
                let _ = write!(o, "errorstat_{code}:count={n}\r\n");
            }
        }
        "latencystats" => {
            let p = sh.config.read().latency_tracking_info_percentiles();
            super::latency::info_section(ctx, &p, o);
        }
        "cluster" => o.push_str("# Cluster\r\ncluster_enabled:0\r\n"),
        "keyspace" => {
            o.push_str("# Keyspace\r\n");
            for (i, db) in ctx.t.ks.dbs.iter().enumerate() {
                if db.is_empty() {
                    continue;
                }
                let _ = write!(
                    o,
                    "db{i}:keys={},expires={},avg_ttl=0\r\n",
                    db.len(),
                    db.volatile_len()
                );
            }
        }
        _ => {}
    }
}
