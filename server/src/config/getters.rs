//! The typed getters the server reads its configuration through
//! (`port() -> u16`, `maxmemory() -> u64`, ...), and the private accessors
//! under them.
//!
//! Every accessor takes a compile-time checked [`Id`] made by [`param!`],
//! never a name string: a misspelled or non-existent parameter name, or a
//! parameter read through the accessor of another type (`bool_of` on a
//! number, ...), fails the build instead of silently reading 0, `false`
//! or "". See `table.rs` for how. The conversions (clamping negatives,
//! saturating to the target integer type, fallbacks) are those the
//! by-name getters had.

use super::parse::{enum_name, ObLimit, Val};
use super::table::param;
use super::table::shape::{BOOL, ENUM, NUM, STR};
use super::table::{Id, PARAMS};
use super::{Config, OutputBufferLimits, OutputLimit};

impl Config {
    // --- accessors by parameter handle -----------------------------------

    /// The stored value of a parameter (`None` cannot happen: `vals` has
    /// one entry per table row).
    pub(super) fn val<const S: u8>(&self, id: Id<S>) -> Option<&Val> {
        self.vals.get(id.index())
    }

    /// The rendered value, as CONFIG GET shows it.
    fn rendered_value<const S: u8>(&self, id: Id<S>) -> Option<&str> {
        self.rendered.get(id.index()).map(String::as_str)
    }

    pub(super) fn num_of(&self, id: Id<NUM>) -> i128 {
        match self.val(id) {
            Some(Val::Num(n)) => *n,
            _ => 0,
        }
    }

    fn u64_of(&self, id: Id<NUM>) -> u64 {
        u64::try_from(self.num_of(id).max(0)).unwrap_or(u64::MAX)
    }

    fn i64_of(&self, id: Id<NUM>) -> i64 {
        i64::try_from(self.num_of(id)).unwrap_or(i64::MAX)
    }

    fn u32_of(&self, id: Id<NUM>) -> u32 {
        u32::try_from(self.num_of(id).max(0)).unwrap_or(u32::MAX)
    }

    fn bool_of(&self, id: Id<BOOL>) -> bool {
        matches!(self.val(id), Some(Val::Bool(true)))
    }

    /// The rendered name of an enum parameter's value.
    pub(super) fn enum_of(&self, id: Id<ENUM>) -> &'static str {
        match (PARAMS.get(id.index()), self.val(id)) {
            (Some(p), Some(Val::Enum(e))) => enum_name(p, *e),
            _ => "unknown",
        }
    }

    fn str_of(&self, id: Id<STR>) -> &str {
        match self.val(id) {
            Some(Val::Str(s)) => s,
            _ => "",
        }
    }

    // --- typed getters ---------------------------------------------------

    pub fn port(&self) -> u16 {
        u16::try_from(self.num_of(param!(NUM, "port"))).unwrap_or(6379)
    }

    /// Addresses to listen on (may be empty: `bind ""`).
    pub fn bind(&self) -> Vec<String> {
        match self.val(param!(BIND, "bind")) {
            Some(Val::Bind(a)) => a.clone(),
            _ => Vec::new(),
        }
    }

    pub fn requirepass(&self) -> Option<Vec<u8>> {
        Some(self.str_of(param!(STR, "requirepass")))
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
    }

    /// `masteruser`: the ACL user a replica logs in to its primary as.
    pub fn masteruser(&self) -> Option<String> {
        Some(self.str_of(param!(STR, "masteruser")))
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
    }

    pub fn masterauth(&self) -> Option<Vec<u8>> {
        Some(self.str_of(param!(STR, "masterauth")))
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
    }

    pub fn maxclients(&self) -> u64 {
        self.u64_of(param!(NUM, "maxclients"))
    }

    /// Idle client timeout in seconds (0 = never).
    pub fn timeout(&self) -> u64 {
        self.u64_of(param!(NUM, "timeout"))
    }

    pub fn tcp_keepalive(&self) -> u64 {
        self.u64_of(param!(NUM, "tcp-keepalive"))
    }

    pub fn tcp_backlog(&self) -> u32 {
        self.u32_of(param!(NUM, "tcp-backlog"))
    }

    pub fn databases(&self) -> usize {
        usize::try_from(self.num_of(param!(NUM, "databases"))).unwrap_or(16)
    }

    pub fn proto_max_bulk_len(&self) -> i64 {
        self.i64_of(param!(NUM, "proto-max-bulk-len"))
    }

    pub fn max_multibulk_len(&self) -> i64 {
        self.i64_of(param!(NUM, "max-multibulk-len"))
    }

    pub fn client_query_buffer_limit(&self) -> u64 {
        self.u64_of(param!(NUM, "client-query-buffer-limit"))
    }

    pub fn client_output_buffer_limit(&self) -> OutputBufferLimits {
        let conv = |l: &ObLimit| OutputLimit {
            hard: l.hard,
            soft: l.soft,
            soft_secs: u64::try_from(l.secs).unwrap_or(0),
        };
        match self.val(param!(OUTPUT_LIMITS, "client-output-buffer-limit")) {
            Some(Val::OutputLimits([n, r, p])) => OutputBufferLimits {
                normal: conv(n),
                replica: conv(r),
                pubsub: conv(p),
            },
            _ => OutputBufferLimits::default(),
        }
    }

    /// Bytes (0 = no limit).
    pub fn maxmemory(&self) -> u64 {
        self.u64_of(param!(NUM, "maxmemory"))
    }

    pub fn maxmemory_policy(&self) -> String {
        self.enum_of(param!(ENUM, "maxmemory-policy")).to_string()
    }

    pub fn maxmemory_samples(&self) -> u32 {
        self.u32_of(param!(NUM, "maxmemory-samples"))
    }

    pub fn maxmemory_eviction_tenacity(&self) -> u32 {
        self.u32_of(param!(NUM, "maxmemory-eviction-tenacity"))
    }

    /// Client memory limit: bytes when >= 0, a percentage of maxmemory when
    /// negative (-10 = 10%), as Redis stores it.
    pub fn maxmemory_clients(&self) -> i64 {
        self.i64_of(param!(NUM, "maxmemory-clients"))
    }

    /// Effective `hz` (already clamped to 1..=500).
    pub fn hz(&self) -> u32 {
        self.u32_of(param!(NUM, "hz"))
    }

    pub fn dynamic_hz(&self) -> bool {
        self.bool_of(param!(BOOL, "dynamic-hz"))
    }

    /// Microseconds; negative disables the slow log, 0 logs everything.
    pub fn slowlog_log_slower_than(&self) -> i64 {
        self.i64_of(param!(NUM, "slowlog-log-slower-than"))
    }

    pub fn slowlog_max_len(&self) -> u64 {
        self.u64_of(param!(NUM, "slowlog-max-len"))
    }

    /// Milliseconds (0 = latency monitor off).
    pub fn latency_monitor_threshold(&self) -> u64 {
        self.u64_of(param!(NUM, "latency-monitor-threshold"))
    }

    pub fn latency_tracking(&self) -> bool {
        self.bool_of(param!(BOOL, "latency-tracking"))
    }

    pub fn latency_tracking_info_percentiles(&self) -> Vec<f64> {
        match self.val(param!(PERCENTILES, "latency-tracking-info-percentiles")) {
            Some(Val::Percentiles(v)) => v.clone(),
            _ => Vec::new(),
        }
    }

    /// "no" | "yes" | "local".
    pub fn enable_debug_command(&self) -> String {
        self.enum_of(param!(ENUM, "enable-debug-command"))
            .to_string()
    }

    /// "no" | "yes" | "local".
    pub fn enable_protected_configs(&self) -> String {
        self.enum_of(param!(ENUM, "enable-protected-configs"))
            .to_string()
    }

    /// "no" | "yes" | "local".
    pub fn enable_module_command(&self) -> String {
        self.enum_of(param!(ENUM, "enable-module-command"))
            .to_string()
    }

    /// Canonical flag string, as CONFIG GET shows it.
    pub fn notify_keyspace_events(&self) -> String {
        self.rendered_value(param!(NOTIFY, "notify-keyspace-events"))
            .unwrap_or("")
            .to_string()
    }

    /// Flag bits (`NOTIFY_*`); unlike the string, keeps 'n' when 'A' is set.
    pub fn notify_keyspace_flags(&self) -> u32 {
        match self.val(param!(NOTIFY, "notify-keyspace-events")) {
            Some(Val::Notify(f)) => *f,
            _ => 0,
        }
    }

    /// Absolute working directory for RDB/AOF files.
    pub fn dir(&self) -> String {
        self.str_of(param!(STR, "dir")).to_string()
    }

    /// The operator's users file (ACL LOAD/SAVE); empty: none.
    pub fn aclfile(&self) -> String {
        self.str_of(param!(STR, "aclfile")).to_string()
    }

    pub fn dbfilename(&self) -> String {
        self.str_of(param!(STR, "dbfilename")).to_string()
    }

    /// (seconds, changes) snapshot points; empty = no automatic saves.
    pub fn save_params(&self) -> Vec<(i64, i32)> {
        match self.val(param!(SAVE, "save")) {
            Some(Val::Save(v)) => v.clone(),
            _ => Vec::new(),
        }
    }

    pub fn appendonly(&self) -> bool {
        self.bool_of(param!(BOOL, "appendonly"))
    }

    /// "always" | "everysec" | "no".
    pub fn appendfsync(&self) -> String {
        self.enum_of(param!(ENUM, "appendfsync")).to_string()
    }

    pub fn appendfilename(&self) -> String {
        self.str_of(param!(STR, "appendfilename")).to_string()
    }

    pub fn appenddirname(&self) -> String {
        self.str_of(param!(STR, "appenddirname")).to_string()
    }

    pub fn stop_writes_on_bgsave_error(&self) -> bool {
        self.bool_of(param!(BOOL, "stop-writes-on-bgsave-error"))
    }

    /// Path of the tenant catalog (empty: none).
    pub fn tenants_file(&self) -> String {
        self.str_of(param!(STR, "tenants-file")).to_string()
    }

    /// `--repair yes`: salvage a corrupt append-only log at start.
    pub fn repair(&self) -> bool {
        self.bool_of(param!(BOOL, "repair"))
    }

    pub fn tenants_only(&self) -> bool {
        self.bool_of(param!(BOOL, "tenants-only"))
    }

    pub fn auto_aof_rewrite_percentage(&self) -> i64 {
        self.i64_of(param!(NUM, "auto-aof-rewrite-percentage"))
    }

    pub fn auto_aof_rewrite_min_size(&self) -> u64 {
        u64::try_from(self.num_of(param!(NUM, "auto-aof-rewrite-min-size"))).unwrap_or(0)
    }

    /// Microseconds an executor keeps polling after its last request before
    /// it sleeps, to start with (0 = never spin; see busypoll.rs).
    pub fn executor_poll_us(&self) -> u64 {
        u64::try_from(self.num_of(param!(NUM, "executor-poll-us"))).unwrap_or(0)
    }

    /// How far that poll time may adapt up, in microseconds.
    pub fn executor_poll_max_us(&self) -> u64 {
        u64::try_from(self.num_of(param!(NUM, "executor-poll-max-us"))).unwrap_or(0)
    }

    /// The CPU cost of one executor wake-up the poller weighs its spinning
    /// against, in nanoseconds.
    pub fn executor_poll_wake_ns(&self) -> u64 {
        u64::try_from(self.num_of(param!(NUM, "executor-poll-wake-ns"))).unwrap_or(0)
    }

    /// How many executors may spin at once (0 = half the cores, at least 1).
    pub fn executor_poll_spinners(&self) -> usize {
        usize::try_from(self.num_of(param!(NUM, "executor-poll-spinners"))).unwrap_or(0)
    }

    /// Executor threads (0 = one per core).
    pub fn executors(&self) -> usize {
        usize::try_from(self.num_of(param!(NUM, "executors"))).unwrap_or(0)
    }

    /// Prometheus listen address, if any.
    pub fn metrics_addr(&self) -> Option<String> {
        Some(self.str_of(param!(STR, "metrics-addr")))
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    /// "debug" | "verbose" | "notice" | "warning".
    pub fn loglevel(&self) -> String {
        self.enum_of(param!(ENUM, "loglevel")).to_string()
    }

    /// Log file path ("" = stdout).
    pub fn logfile(&self) -> String {
        self.str_of(param!(STR, "logfile")).to_string()
    }

    pub fn pidfile(&self) -> Option<String> {
        Some(self.str_of(param!(STR, "pidfile")))
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    pub fn unixsocket(&self) -> Option<String> {
        Some(self.str_of(param!(STR, "unixsocket")))
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    /// Permissions for the unix socket (0 = leave as created).
    pub fn unixsocketperm(&self) -> u32 {
        self.u32_of(param!(NUM, "unixsocketperm"))
    }

    pub fn protected_mode(&self) -> bool {
        self.bool_of(param!(BOOL, "protected-mode"))
    }

    pub fn daemonize(&self) -> bool {
        self.bool_of(param!(BOOL, "daemonize"))
    }

    pub fn active_expire_effort(&self) -> u32 {
        self.u32_of(param!(NUM, "active-expire-effort"))
    }

    pub fn busy_reply_threshold(&self) -> u64 {
        self.u64_of(param!(NUM, "busy-reply-threshold"))
    }

    pub fn script_time_slice_us(&self) -> u64 {
        self.u64_of(param!(NUM, "script-time-slice-us"))
    }

    /// `replica-serve-stale-data`: a replica whose link is down still
    /// answers reads (yes) or refuses with -MASTERDOWN (no).
    pub fn replica_serve_stale_data(&self) -> bool {
        self.bool_of(param!(BOOL, "replica-serve-stale-data"))
    }

    /// `min-replicas-to-write` (0: off).
    pub fn min_replicas_to_write(&self) -> u64 {
        self.u64_of(param!(NUM, "min-replicas-to-write"))
    }

    /// `min-replicas-max-lag` (seconds; 0: off).
    pub fn min_replicas_max_lag(&self) -> u64 {
        self.u64_of(param!(NUM, "min-replicas-max-lag"))
    }

    /// `repl-timeout` (seconds): how long a write of a tenant with
    /// durability `region` waits for a standby to be attached.
    pub fn repl_timeout(&self) -> u64 {
        self.u64_of(param!(NUM, "repl-timeout"))
    }

    /// `repl-link-timeout-ms`: an anykv replica link silent this long is
    /// dropped by its primary.
    pub fn repl_link_timeout_ms(&self) -> u64 {
        self.u64_of(param!(NUM, "repl-link-timeout-ms"))
    }

    /// `standby-wait-ms`: how long a `region` write waits for a standby.
    pub fn standby_wait_ms(&self) -> u64 {
        self.u64_of(param!(NUM, "standby-wait-ms"))
    }

    /// `ryw-wait-ms`: how long a replica's read waits for its connection's
    /// own write before the primary answers it.
    pub fn ryw_wait_ms(&self) -> u64 {
        self.u64_of(param!(NUM, "ryw-wait-ms"))
    }

    /// `copy-max-inflight-reads`: an executor's reads in flight to one
    /// copy's node before the next nearest copy gets them.
    pub fn copy_max_inflight_reads(&self) -> usize {
        usize::try_from(self.u64_of(param!(NUM, "copy-max-inflight-reads"))).unwrap_or(usize::MAX)
    }

    /// `handoff-apply-wait-ms`: how long a moved database's new primary
    /// waits for the old primary's stream before it takes over.
    pub fn handoff_apply_wait_ms(&self) -> u64 {
        self.u64_of(param!(NUM, "handoff-apply-wait-ms"))
    }

    pub fn replica_read_only(&self) -> bool {
        self.bool_of(param!(BOOL, "replica-read-only"))
    }

    /// Master (host, port) when configured as a replica.
    pub fn replicaof(&self) -> Option<(String, u16)> {
        match self.val(param!(REPLICAOF, "replicaof")) {
            Some(Val::Replicaof(Some((h, p)))) => u16::try_from(*p).ok().map(|p| (h.clone(), p)),
            _ => None,
        }
    }

    /// Bytes of replication backlog a tenant's log keeps. At least 1; CONFIG
    /// SET raises a smaller value to 16kb, as Redis's
    /// `resizeReplicationBacklog` does.
    pub fn repl_backlog_size(&self) -> usize {
        usize::try_from(self.num_of(param!(NUM, "repl-backlog-size"))).unwrap_or(usize::MAX)
    }

    pub fn lazyfree_lazy_eviction(&self) -> bool {
        self.bool_of(param!(BOOL, "lazyfree-lazy-eviction"))
    }

    pub fn lazyfree_lazy_expire(&self) -> bool {
        self.bool_of(param!(BOOL, "lazyfree-lazy-expire"))
    }

    pub fn lazyfree_lazy_server_del(&self) -> bool {
        self.bool_of(param!(BOOL, "lazyfree-lazy-server-del"))
    }

    pub fn lazyfree_lazy_user_del(&self) -> bool {
        self.bool_of(param!(BOOL, "lazyfree-lazy-user-del"))
    }

    pub fn lazyfree_lazy_user_flush(&self) -> bool {
        self.bool_of(param!(BOOL, "lazyfree-lazy-user-flush"))
    }

    pub fn hash_max_listpack_entries(&self) -> u64 {
        self.u64_of(param!(NUM, "hash-max-listpack-entries"))
    }

    pub fn hash_max_listpack_value(&self) -> u64 {
        self.u64_of(param!(NUM, "hash-max-listpack-value"))
    }

    pub fn list_max_listpack_size(&self) -> i64 {
        self.i64_of(param!(NUM, "list-max-listpack-size"))
    }

    pub fn list_compress_depth(&self) -> u64 {
        self.u64_of(param!(NUM, "list-compress-depth"))
    }

    pub fn set_max_intset_entries(&self) -> u64 {
        self.u64_of(param!(NUM, "set-max-intset-entries"))
    }

    pub fn zset_max_listpack_entries(&self) -> u64 {
        self.u64_of(param!(NUM, "zset-max-listpack-entries"))
    }

    pub fn zset_max_listpack_value(&self) -> u64 {
        self.u64_of(param!(NUM, "zset-max-listpack-value"))
    }

    pub fn hll_sparse_max_bytes(&self) -> u64 {
        self.u64_of(param!(NUM, "hll-sparse-max-bytes"))
    }

    pub fn stream_node_max_bytes(&self) -> u64 {
        self.u64_of(param!(NUM, "stream-node-max-bytes"))
    }

    pub fn stream_node_max_entries(&self) -> i64 {
        self.i64_of(param!(NUM, "stream-node-max-entries"))
    }

    pub fn lfu_log_factor(&self) -> u32 {
        self.u32_of(param!(NUM, "lfu-log-factor"))
    }

    pub fn lfu_decay_time(&self) -> u32 {
        self.u32_of(param!(NUM, "lfu-decay-time"))
    }

    pub fn tracking_table_max_keys(&self) -> u64 {
        self.u64_of(param!(NUM, "tracking-table-max-keys"))
    }

    pub fn acllog_max_len(&self) -> u64 {
        self.u64_of(param!(NUM, "acllog-max-len"))
    }

    pub fn activerehashing(&self) -> bool {
        self.bool_of(param!(BOOL, "activerehashing"))
    }

    /// "default" or some of "save nosave now force" (SHUTDOWN on SIGINT).
    pub fn shutdown_on_sigint(&self) -> String {
        self.rendered_value(param!(SHUTDOWN_FLAGS, "shutdown-on-sigint"))
            .unwrap_or("default")
            .to_string()
    }

    /// "default" or some of "save nosave now force" (SHUTDOWN on SIGTERM).
    pub fn shutdown_on_sigterm(&self) -> String {
        self.rendered_value(param!(SHUTDOWN_FLAGS, "shutdown-on-sigterm"))
            .unwrap_or("default")
            .to_string()
    }

    pub fn cluster_enabled(&self) -> bool {
        self.bool_of(param!(BOOL, "cluster-enabled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_redis_7_0_15() {
        let c = Config::default();
        // Values as `redis-cli config get` printed them on redis 7.0.15.
        for (k, v) in [
            ("port", "6379"),
            ("bind", "* -::*"),
            ("save", "3600 1 300 100 60 10000"),
            (
                "client-output-buffer-limit",
                "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
            ),
            ("maxmemory", "0"),
            ("maxmemory-policy", "noeviction"),
            ("maxmemory-samples", "5"),
            ("maxmemory-eviction-tenacity", "10"),
            ("maxmemory-clients", "0"),
            ("proto-max-bulk-len", "536870912"),
            ("client-query-buffer-limit", "1073741824"),
            ("databases", "16"),
            ("timeout", "0"),
            ("tcp-keepalive", "300"),
            ("tcp-backlog", "511"),
            ("hz", "10"),
            ("dynamic-hz", "yes"),
            ("slowlog-log-slower-than", "10000"),
            ("slowlog-max-len", "128"),
            ("latency-monitor-threshold", "0"),
            ("latency-tracking", "yes"),
            ("latency-tracking-info-percentiles", "50 99 99.9"),
            ("notify-keyspace-events", ""),
            ("hash-max-listpack-entries", "512"),
            ("hash-max-ziplist-entries", "512"),
            ("hash-max-listpack-value", "64"),
            ("list-max-listpack-size", "-2"),
            ("list-compress-depth", "0"),
            ("set-max-intset-entries", "512"),
            ("zset-max-listpack-entries", "128"),
            ("zset-max-listpack-value", "64"),
            ("hll-sparse-max-bytes", "3000"),
            ("stream-node-max-bytes", "4096"),
            ("stream-node-max-entries", "100"),
            ("activerehashing", "yes"),
            ("appendonly", "no"),
            ("appendfsync", "everysec"),
            ("appendfilename", "appendonly.aof"),
            ("appenddirname", "appendonlydir"),
            ("auto-aof-rewrite-percentage", "100"),
            ("auto-aof-rewrite-min-size", "67108864"),
            // (anykv's: its own format is named so; `*.rdb` is RDB.)
            ("dbfilename", "dump.akv"),
            ("requirepass", ""),
            ("loglevel", "notice"),
            ("logfile", ""),
            ("maxclients", "10000"),
            ("busy-reply-threshold", "5000"),
            ("lua-time-limit", "5000"),
            ("replica-read-only", "yes"),
            ("slave-read-only", "yes"),
            ("repl-backlog-size", "1048576"),
            ("lfu-log-factor", "10"),
            ("lfu-decay-time", "1"),
            ("active-expire-effort", "1"),
            ("enable-debug-command", "no"),
            ("enable-protected-configs", "no"),
            ("cluster-enabled", "no"),
            ("oom-score-adj", "no"),
            ("oom-score-adj-values", "0 200 800"),
            ("disable-thp", "yes"),
            ("unixsocketperm", "0"),
            ("io-threads", "1"),
            ("tracking-table-max-keys", "1000000"),
            ("acllog-max-len", "128"),
            ("proc-title-template", "{title} {listen-addr} {server-mode}"),
            ("replicaof", ""),
            ("executors", "0"),
            ("metrics-addr", ""),
            ("max-multibulk-len", "2147483647"),
        ] {
            assert_eq!(c.value(k), Some(v), "{k}");
        }
        assert_eq!(c.port(), 6379);
        assert_eq!(c.bind(), vec!["*".to_string(), "-::*".to_string()]);
        assert_eq!(c.requirepass(), None);
        assert_eq!(c.maxclients(), 10000);
        assert_eq!(c.databases(), 16);
        assert_eq!(c.proto_max_bulk_len(), 512 << 20);
        assert_eq!(c.max_multibulk_len(), i32::MAX as i64);
        assert_eq!(c.client_query_buffer_limit(), 1 << 30);
        let obl = c.client_output_buffer_limit();
        assert_eq!(
            obl.normal,
            OutputLimit {
                hard: 0,
                soft: 0,
                soft_secs: 0
            }
        );
        assert_eq!(
            obl.replica,
            OutputLimit {
                hard: 256 << 20,
                soft: 64 << 20,
                soft_secs: 60
            }
        );
        assert_eq!(
            obl.pubsub,
            OutputLimit {
                hard: 32 << 20,
                soft: 8 << 20,
                soft_secs: 60
            }
        );
        assert_eq!(c.maxmemory_policy(), "noeviction");
        assert_eq!(c.hz(), 10);
        assert_eq!(c.slowlog_log_slower_than(), 10000);
        assert_eq!(c.enable_debug_command(), "no");
        assert_eq!(c.appendfsync(), "everysec");
        assert_eq!(c.executors(), 0);
        assert_eq!(c.metrics_addr(), None);
        assert_eq!(c.loglevel(), "notice");
        assert_eq!(c.active_expire_effort(), 1);
        assert_eq!(c.config_file(), None);
        assert_eq!(c.save_params(), vec![(3600, 1), (300, 100), (60, 10000)]);
        let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
        assert_eq!(std::fs::canonicalize(c.dir()).unwrap(), cwd);
    }
}
