//! The parameter table: every parameter's name, alias, kind (how it parses,
//! renders and rewrites), default and flags, in Redis's `static_configs`
//! order, plus the lookups over it (case-insensitive by-name lookup for
//! CONFIG GET/SET and config files, the typed defaults) and the
//! compile-time checked parameter handles ([`Id`], [`param!`]) through
//! which the typed getters read values.
//!
//! Kept apart from parsing and rendering so the table reads as what it is:
//! data, one entry per parameter, easy to compare with Redis's `config.c`.
//!
//! # Why a typo in a getter cannot compile
//!
//! Code never reads a parameter by a runtime string. It names it with
//! `param!(SHAPE, "name")`, which expands to a `const` item initialised by
//! [`Id::resolve`]: a `const fn` that walks [`PARAMS`] at compile time and
//! panics (a compile error pointing at the `param!` call) when the name is
//! not a canonical parameter name, or when the parameter's stored value
//! does not have the [`shape`] asked for (a `Bool` read as a number, say).
//! The accessors in `getters.rs` take `Id<BOOL>`, `Id<NUM>`, ... so handing
//! a handle to an accessor of another shape is a type error as well. (A
//! `const` item rather than an inline `const { }` block because rustc
//! evaluates the former during `cargo check` and the latter only when it
//! generates code.)

use std::collections::HashMap;
use std::sync::OnceLock;

use super::parse::{
    check_aof_dirname, check_aof_filename, check_dbfilename, check_hostname, check_proc_title,
    parse_value, split_spaces, LoadState, Val,
};

const INT_MAX: i128 = i32::MAX as i128;
const INT_MIN: i128 = i32::MIN as i128;
const UINT_MAX: i128 = u32::MAX as i128;
const LONG_MAX: i128 = i64::MAX as i128;
const ULLONG_MAX: i128 = u64::MAX as i128;

/// CONFIG SET refuses it ("can't set immutable config").
pub(super) const IMMUTABLE: u8 = 1;
/// CONFIG SET needs `enable-protected-configs` ("can't set protected config").
pub(super) const PROTECTED: u8 = 2;
/// Value hidden from Debug output.
pub(super) const SENSITIVE: u8 = 4;

/// How a numeric value is parsed and rendered (Redis's numeric config
/// flags: plain integer, memory, memory-or-percent, octal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumFmt {
    Int,
    Mem,
    MemPct,
    Octal,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct NumSpec {
    pub(super) min: i128,
    pub(super) max: i128,
    pub(super) fmt: NumFmt,
    /// The C field is signed: a memory value above `LLONG_MAX` wraps
    /// negative (and then fails the bounds check), as in Redis.
    pub(super) signed: bool,
}

pub(super) type StrCheck = fn(&str) -> Result<(), &'static str>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    Dir,
    Save,
    OutputLimits,
    OomValues,
    Notify,
    Bind,
    Replicaof,
    Percentiles,
    ShutdownOnSig,
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Bool,
    Num(NumSpec),
    /// (name, value) pairs; several names may share a value (oom-score-adj's
    /// yes/relative), the first one is the rendered name.
    Enum(&'static [(&'static str, u8)]),
    /// `empty_null`: an empty value means "unset" (Redis's
    /// EMPTY_STRING_IS_NULL): CONFIG REWRITE then drops the line.
    Str {
        empty_null: bool,
        check: Option<StrCheck>,
    },
    Special(Special),
}

pub(super) struct Param {
    pub(super) name: &'static str,
    pub(super) alias: Option<&'static str>,
    pub(super) kind: Kind,
    pub(super) default: &'static str,
    pub(super) flags: u8,
}

impl Param {
    /// Multi-argument params take every word of a config line, and CONFIG
    /// SET splits their value on spaces (Redis's MULTI_ARG_CONFIG).
    pub(super) fn multi_arg(&self) -> bool {
        matches!(
            self.kind,
            Kind::Special(
                Special::Save
                    | Special::OutputLimits
                    | Special::OomValues
                    | Special::Bind
                    | Special::Replicaof
                    | Special::Percentiles
                    | Special::ShutdownOnSig
            )
        )
    }
}

const fn boolp(name: &'static str, alias: Option<&'static str>, def: bool, flags: u8) -> Param {
    Param {
        name,
        alias,
        kind: Kind::Bool,
        default: if def { "yes" } else { "no" },
        flags,
    }
}

#[allow(clippy::too_many_arguments)]
const fn nump(
    name: &'static str,
    alias: Option<&'static str>,
    min: i128,
    max: i128,
    fmt: NumFmt,
    signed: bool,
    default: &'static str,
    flags: u8,
) -> Param {
    Param {
        name,
        alias,
        kind: Kind::Num(NumSpec {
            min,
            max,
            fmt,
            signed,
        }),
        default,
        flags,
    }
}

/// Plain integer param (signed C type; the signedness only matters for
/// memory values).
const fn intp(
    name: &'static str,
    alias: Option<&'static str>,
    min: i128,
    max: i128,
    default: &'static str,
    flags: u8,
) -> Param {
    nump(name, alias, min, max, NumFmt::Int, true, default, flags)
}

const fn memp(
    name: &'static str,
    alias: Option<&'static str>,
    min: i128,
    max: i128,
    signed: bool,
    default: &'static str,
    flags: u8,
) -> Param {
    nump(name, alias, min, max, NumFmt::Mem, signed, default, flags)
}

const fn enump(
    name: &'static str,
    values: &'static [(&'static str, u8)],
    default: &'static str,
    flags: u8,
) -> Param {
    Param {
        name,
        alias: None,
        kind: Kind::Enum(values),
        default,
        flags,
    }
}

const fn strp(
    name: &'static str,
    alias: Option<&'static str>,
    empty_null: bool,
    check: Option<StrCheck>,
    default: &'static str,
    flags: u8,
) -> Param {
    Param {
        name,
        alias,
        kind: Kind::Str { empty_null, check },
        default,
        flags,
    }
}

const fn specialp(
    name: &'static str,
    alias: Option<&'static str>,
    sp: Special,
    default: &'static str,
    flags: u8,
) -> Param {
    Param {
        name,
        alias,
        kind: Kind::Special(sp),
        default,
        flags,
    }
}

const MAXMEMORY_POLICY: &[(&str, u8)] = &[
    ("volatile-lru", 0),
    ("volatile-lfu", 1),
    ("volatile-random", 2),
    ("volatile-ttl", 3),
    ("allkeys-lru", 4),
    ("allkeys-lfu", 5),
    ("allkeys-random", 6),
    ("noeviction", 7),
];
const SYSLOG_FACILITY: &[(&str, u8)] = &[
    ("user", 0),
    ("local0", 1),
    ("local1", 2),
    ("local2", 3),
    ("local3", 4),
    ("local4", 5),
    ("local5", 6),
    ("local6", 7),
    ("local7", 8),
];
const LOGLEVEL: &[(&str, u8)] = &[("debug", 0), ("verbose", 1), ("notice", 2), ("warning", 3)];
const SUPERVISED: &[(&str, u8)] = &[("upstart", 0), ("systemd", 1), ("auto", 2), ("no", 3)];
const APPENDFSYNC: &[(&str, u8)] = &[("everysec", 0), ("always", 1), ("no", 2)];
const REPL_DISKLESS_LOAD: &[(&str, u8)] = &[("disabled", 0), ("on-empty-db", 1), ("swapdb", 2)];
const OOM_SCORE_ADJ: &[(&str, u8)] = &[("no", 0), ("yes", 1), ("relative", 1), ("absolute", 2)];
const ACL_PUBSUB_DEFAULT: &[(&str, u8)] = &[("allchannels", 0), ("resetchannels", 1)];
const SANITIZE_DUMP: &[(&str, u8)] = &[("no", 0), ("yes", 1), ("clients", 2)];
const PROTECTED_ACTION: &[(&str, u8)] = &[("no", 0), ("yes", 1), ("local", 2)];
const ENDPOINT_TYPE: &[(&str, u8)] = &[("ip", 0), ("hostname", 1), ("unknown-endpoint", 2)];
const PROPAGATION_ERROR: &[(&str, u8)] = &[("ignore", 0), ("panic", 1), ("panic-on-replicas", 2)];

/// Every parameter, in Redis's `static_configs` order (which is also the
/// order CONFIG GET and CONFIG REWRITE use here, instead of Redis's hash
/// order). TLS parameters are left out: anykv does not speak TLS.
pub(super) static PARAMS: &[Param] = &[
    // Bool configs
    boolp("rdbchecksum", None, true, IMMUTABLE),
    boolp("daemonize", None, false, IMMUTABLE),
    boolp("io-threads-do-reads", None, false, IMMUTABLE),
    boolp("always-show-logo", None, false, IMMUTABLE),
    boolp("protected-mode", None, true, 0),
    boolp("rdbcompression", None, true, 0),
    boolp("rdb-del-sync-files", None, false, 0),
    boolp("activerehashing", None, true, 0),
    boolp("stop-writes-on-bgsave-error", None, true, 0),
    boolp("set-proc-title", None, true, IMMUTABLE),
    boolp("dynamic-hz", None, true, 0),
    boolp("lazyfree-lazy-eviction", None, false, 0),
    boolp("lazyfree-lazy-expire", None, false, 0),
    boolp("lazyfree-lazy-server-del", None, false, 0),
    boolp("lazyfree-lazy-user-del", None, false, 0),
    boolp("lazyfree-lazy-user-flush", None, false, 0),
    boolp("repl-disable-tcp-nodelay", None, false, 0),
    boolp("repl-diskless-sync", None, true, 0),
    boolp("aof-rewrite-incremental-fsync", None, true, 0),
    boolp("no-appendfsync-on-rewrite", None, false, 0),
    boolp("cluster-require-full-coverage", None, true, 0),
    boolp("rdb-save-incremental-fsync", None, true, 0),
    boolp("aof-load-truncated", None, true, 0),
    boolp("aof-use-rdb-preamble", None, true, 0),
    boolp("aof-timestamp-enabled", None, false, 0),
    boolp(
        "cluster-replica-no-failover",
        Some("cluster-slave-no-failover"),
        false,
        0,
    ),
    boolp("replica-lazy-flush", Some("slave-lazy-flush"), false, 0),
    boolp(
        "replica-serve-stale-data",
        Some("slave-serve-stale-data"),
        true,
        0,
    ),
    boolp("replica-read-only", Some("slave-read-only"), true, 0),
    boolp(
        "replica-ignore-maxmemory",
        Some("slave-ignore-maxmemory"),
        true,
        0,
    ),
    boolp("jemalloc-bg-thread", None, true, 0),
    boolp("activedefrag", None, false, 0),
    boolp("syslog-enabled", None, false, IMMUTABLE),
    boolp("cluster-enabled", None, false, IMMUTABLE),
    boolp("appendonly", None, false, 0),
    boolp("cluster-allow-reads-when-down", None, false, 0),
    boolp("cluster-allow-pubsubshard-when-down", None, true, 0),
    boolp("crash-log-enabled", None, true, 0),
    boolp("crash-memcheck-enabled", None, true, 0),
    boolp("disable-thp", None, true, IMMUTABLE),
    boolp("cluster-allow-replica-migration", None, true, 0),
    boolp("replica-announced", None, true, 0),
    boolp("latency-tracking", None, true, 0),
    boolp("aof-disable-auto-gc", None, false, 0),
    boolp("replica-ignore-disk-write-errors", None, false, 0),
    // String configs
    strp("aclfile", None, false, None, "", IMMUTABLE),
    strp("unixsocket", None, true, None, "", IMMUTABLE),
    strp("pidfile", None, true, None, "", IMMUTABLE),
    strp(
        "replica-announce-ip",
        Some("slave-announce-ip"),
        true,
        None,
        "",
        0,
    ),
    strp("masteruser", None, true, None, "", SENSITIVE),
    strp("cluster-announce-ip", None, true, None, "", 0),
    strp(
        "cluster-config-file",
        None,
        false,
        None,
        "nodes.conf",
        IMMUTABLE,
    ),
    strp(
        "cluster-announce-hostname",
        None,
        true,
        Some(check_hostname),
        "",
        0,
    ),
    strp("syslog-ident", None, false, None, "redis", IMMUTABLE),
    strp(
        "dbfilename",
        None,
        false,
        Some(check_dbfilename),
        "dump.akv",
        PROTECTED,
    ),
    strp(
        "appendfilename",
        None,
        false,
        Some(check_aof_filename),
        "appendonly.aof",
        IMMUTABLE,
    ),
    strp(
        "appenddirname",
        None,
        false,
        Some(check_aof_dirname),
        "appendonlydir",
        IMMUTABLE,
    ),
    strp("server_cpulist", None, true, None, "", IMMUTABLE),
    strp("bio_cpulist", None, true, None, "", IMMUTABLE),
    strp("aof_rewrite_cpulist", None, true, None, "", IMMUTABLE),
    strp("bgsave_cpulist", None, true, None, "", IMMUTABLE),
    strp("ignore-warnings", None, false, None, "", 0),
    strp(
        "proc-title-template",
        None,
        false,
        Some(check_proc_title),
        "{title} {listen-addr} {server-mode}",
        0,
    ),
    strp("bind-source-addr", None, true, None, "", 0),
    strp("logfile", None, false, None, "", IMMUTABLE),
    strp("masterauth", None, true, None, "", SENSITIVE),
    strp("requirepass", None, true, None, "", SENSITIVE),
    // Enum configs
    enump("supervised", SUPERVISED, "no", IMMUTABLE),
    enump("syslog-facility", SYSLOG_FACILITY, "local0", IMMUTABLE),
    enump("repl-diskless-load", REPL_DISKLESS_LOAD, "disabled", 0),
    enump("loglevel", LOGLEVEL, "notice", 0),
    enump("maxmemory-policy", MAXMEMORY_POLICY, "noeviction", 0),
    enump("appendfsync", APPENDFSYNC, "everysec", 0),
    enump("oom-score-adj", OOM_SCORE_ADJ, "no", 0),
    enump("acl-pubsub-default", ACL_PUBSUB_DEFAULT, "resetchannels", 0),
    enump("sanitize-dump-payload", SANITIZE_DUMP, "no", 0),
    enump(
        "enable-protected-configs",
        PROTECTED_ACTION,
        "no",
        IMMUTABLE,
    ),
    enump("enable-debug-command", PROTECTED_ACTION, "no", IMMUTABLE),
    enump("enable-module-command", PROTECTED_ACTION, "no", IMMUTABLE),
    enump("cluster-preferred-endpoint-type", ENDPOINT_TYPE, "ip", 0),
    enump("propagation-error-behavior", PROPAGATION_ERROR, "ignore", 0),
    // Integer configs
    intp("databases", None, 1, INT_MAX, "16", IMMUTABLE),
    intp("port", None, 0, 65535, "6379", 0),
    intp("io-threads", None, 1, 128, "1", IMMUTABLE),
    intp("auto-aof-rewrite-percentage", None, 0, INT_MAX, "100", 0),
    intp(
        "cluster-replica-validity-factor",
        Some("cluster-slave-validity-factor"),
        0,
        INT_MAX,
        "10",
        0,
    ),
    intp(
        "list-max-listpack-size",
        Some("list-max-ziplist-size"),
        INT_MIN,
        INT_MAX,
        "-2",
        0,
    ),
    intp("tcp-keepalive", None, 0, INT_MAX, "300", 0),
    intp("cluster-migration-barrier", None, 0, INT_MAX, "1", 0),
    intp("active-defrag-cycle-min", None, 1, 99, "1", 0),
    intp("active-defrag-cycle-max", None, 1, 99, "25", 0),
    intp("active-defrag-threshold-lower", None, 0, 1000, "10", 0),
    intp("active-defrag-threshold-upper", None, 0, 1000, "100", 0),
    intp("lfu-log-factor", None, 0, INT_MAX, "10", 0),
    intp("lfu-decay-time", None, 0, INT_MAX, "1", 0),
    intp(
        "replica-priority",
        Some("slave-priority"),
        0,
        INT_MAX,
        "100",
        0,
    ),
    intp("repl-diskless-sync-delay", None, 0, INT_MAX, "5", 0),
    intp("maxmemory-samples", None, 1, INT_MAX, "5", 0),
    intp("maxmemory-eviction-tenacity", None, 0, 100, "10", 0),
    intp("timeout", None, 0, INT_MAX, "0", 0),
    intp(
        "replica-announce-port",
        Some("slave-announce-port"),
        0,
        65535,
        "0",
        0,
    ),
    intp("tcp-backlog", None, 0, INT_MAX, "511", IMMUTABLE),
    intp("cluster-port", None, 0, 65535, "0", IMMUTABLE),
    intp("cluster-announce-bus-port", None, 0, 65535, "0", 0),
    intp("cluster-announce-port", None, 0, 65535, "0", 0),
    intp("cluster-announce-tls-port", None, 0, 65535, "0", 0),
    intp("repl-timeout", None, 1, INT_MAX, "60", 0),
    intp(
        "repl-ping-replica-period",
        Some("repl-ping-slave-period"),
        1,
        INT_MAX,
        "10",
        0,
    ),
    intp("list-compress-depth", None, 0, INT_MAX, "0", 0),
    intp("active-expire-effort", None, 1, 10, "1", 0),
    intp("hz", None, 0, INT_MAX, "10", 0),
    intp(
        "min-replicas-to-write",
        Some("min-slaves-to-write"),
        0,
        INT_MAX,
        "0",
        0,
    ),
    intp(
        "min-replicas-max-lag",
        Some("min-slaves-max-lag"),
        0,
        INT_MAX,
        "10",
        0,
    ),
    intp("shutdown-timeout", None, 0, INT_MAX, "10", 0),
    intp("repl-diskless-sync-max-replicas", None, 0, INT_MAX, "0", 0),
    intp("maxclients", None, 1, UINT_MAX, "10000", 0),
    nump(
        "unixsocketperm",
        None,
        0,
        0o777,
        NumFmt::Octal,
        false,
        "0",
        IMMUTABLE,
    ),
    intp("socket-mark-id", None, 0, UINT_MAX, "0", IMMUTABLE),
    intp(
        "active-defrag-max-scan-fields",
        None,
        1,
        LONG_MAX,
        "1000",
        0,
    ),
    intp("slowlog-max-len", None, 0, LONG_MAX, "128", 0),
    intp("acllog-max-len", None, 0, LONG_MAX, "128", 0),
    intp(
        "busy-reply-threshold",
        Some("lua-time-limit"),
        0,
        LONG_MAX,
        "5000",
        0,
    ),
    intp("cluster-node-timeout", None, 0, LONG_MAX, "15000", 0),
    intp("slowlog-log-slower-than", None, -1, LONG_MAX, "10000", 0),
    intp("latency-monitor-threshold", None, 0, LONG_MAX, "0", 0),
    memp(
        "proto-max-bulk-len",
        None,
        1024 * 1024,
        LONG_MAX,
        true,
        "536870912",
        0,
    ),
    intp("stream-node-max-entries", None, 0, LONG_MAX, "100", 0),
    memp("repl-backlog-size", None, 1, LONG_MAX, true, "1048576", 0),
    memp("maxmemory", None, 0, ULLONG_MAX, false, "0", 0),
    memp(
        "cluster-link-sendbuf-limit",
        None,
        0,
        ULLONG_MAX,
        false,
        "0",
        0,
    ),
    intp(
        "hash-max-listpack-entries",
        Some("hash-max-ziplist-entries"),
        0,
        LONG_MAX,
        "512",
        0,
    ),
    intp("set-max-intset-entries", None, 0, LONG_MAX, "512", 0),
    intp(
        "zset-max-listpack-entries",
        Some("zset-max-ziplist-entries"),
        0,
        LONG_MAX,
        "128",
        0,
    ),
    memp(
        "active-defrag-ignore-bytes",
        None,
        1,
        LONG_MAX,
        false,
        "104857600",
        0,
    ),
    memp(
        "hash-max-listpack-value",
        Some("hash-max-ziplist-value"),
        0,
        LONG_MAX,
        false,
        "64",
        0,
    ),
    memp("stream-node-max-bytes", None, 0, LONG_MAX, false, "4096", 0),
    memp(
        "zset-max-listpack-value",
        Some("zset-max-ziplist-value"),
        0,
        LONG_MAX,
        false,
        "64",
        0,
    ),
    memp("hll-sparse-max-bytes", None, 0, LONG_MAX, false, "3000", 0),
    intp("tracking-table-max-keys", None, 0, LONG_MAX, "1000000", 0),
    memp(
        "client-query-buffer-limit",
        None,
        1024 * 1024,
        LONG_MAX,
        false,
        "1073741824",
        0,
    ),
    nump(
        "maxmemory-clients",
        None,
        -100,
        LONG_MAX,
        NumFmt::MemPct,
        true,
        "0",
        0,
    ),
    intp("repl-backlog-ttl", None, 0, LONG_MAX, "3600", 0),
    memp(
        "auto-aof-rewrite-min-size",
        None,
        0,
        LONG_MAX,
        true,
        "67108864",
        0,
    ),
    // Special configs
    specialp("dir", None, Special::Dir, "", PROTECTED),
    specialp("save", None, Special::Save, "3600 1 300 100 60 10000", 0),
    specialp(
        "client-output-buffer-limit",
        None,
        Special::OutputLimits,
        "normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432 8388608 60",
        0,
    ),
    specialp(
        "oom-score-adj-values",
        None,
        Special::OomValues,
        "0 200 800",
        0,
    ),
    specialp("notify-keyspace-events", None, Special::Notify, "", 0),
    specialp("bind", None, Special::Bind, "* -::*", 0),
    specialp(
        "replicaof",
        Some("slaveof"),
        Special::Replicaof,
        "",
        IMMUTABLE,
    ),
    specialp(
        "latency-tracking-info-percentiles",
        None,
        Special::Percentiles,
        "50 99 99.9",
        0,
    ),
    specialp(
        "shutdown-on-sigint",
        None,
        Special::ShutdownOnSig,
        "default",
        0,
    ),
    specialp(
        "shutdown-on-sigterm",
        None,
        Special::ShutdownOnSig,
        "default",
        0,
    ),
    // anykv's own
    intp("executors", None, 0, 1024, "0", IMMUTABLE),
    // Microseconds an executor keeps polling after its last request before
    // it sleeps (busypoll.rs): starts at executor-poll-us, adapts up to
    // executor-poll-max-us; 0 = never spin.
    intp("executor-poll-us", None, 0, 1_000_000, "50", 0),
    intp("executor-poll-max-us", None, 0, 1_000_000, "200", 0),
    // What one wake-up of a sleeping executor costs, in CPU nanoseconds:
    // polling goes on only while the time spun per gap stays below this
    // per wake-up it saves (busypoll.rs, Budget).
    intp("executor-poll-wake-ns", None, 0, 1_000_000, "5000", 0),
    // How many executors may spin at once (0 = half the cores, at least
    // one): spinners never take every core from the clients that share
    // the machine.
    intp("executor-poll-spinners", None, 0, 1024, "0", 0),
    // A replica link to another anykv node (which acknowledges every
    // second) that stays silent this long is dropped by its primary, so a
    // crashed standby stops holding writes within it (Redis's own replicas
    // get `repl-timeout`).
    intp("repl-link-timeout-ms", None, 100, 3_600_000, "3000", 0),
    // A write of a durability `region` database that finds no standby
    // attached (a new standby after a failover still syncing) waits this
    // long for one before it is refused with NOREPLICAS.
    intp("standby-wait-ms", None, 0, 600_000, "3000", 0),
    // A read on a replica's node that lacks its connection's own last
    // write (`consistency: ryw`) waits this long for the write to arrive
    // through replication before the primary answers it instead.
    intp("ryw-wait-ms", None, 0, 60_000, "100", 0),
    // A script runs this many microseconds at a time: then the other
    // databases on its executor are served before it goes on (a script
    // of one database holds up the others at most this long).
    intp("script-time-slice-us", None, 100, 1_000_000, "1000", 0),
    // A node without a copy of a database sends its reads to the nearest
    // copies; one with this many of an executor's reads in flight is busy
    // and the next nearest (at last the primary) gets them.
    intp("copy-max-inflight-reads", None, 1, 1_000_000, "256", 0),
    // The node a move of a database's primary names the new primary waits
    // this long for the old primary's stream up to where it stopped; then
    // it takes over with what it has (the rest is lost, and counted).
    intp("handoff-apply-wait-ms", None, 100, 600_000, "5000", 0),
    // Start even if the append-only log is corrupt in the middle, dropping
    // everything from the corruption on (reported in the log).
    boolp("repair", None, false, IMMUTABLE),
    // The tenant catalog for a standalone server (see catalog.rs); empty =
    // one default tenant.
    strp("tenants-file", None, false, None, "", IMMUTABLE),
    // The default tenant is for operator users with a password only; no
    // connection starts authenticated (`anykv node` sets it: a node must
    // not be open before its catalog arrives).
    boolp("tenants-only", None, false, IMMUTABLE),
    strp("metrics-addr", None, false, None, "", IMMUTABLE),
    intp("max-multibulk-len", None, 1, LONG_MAX, "2147483647", 0),
];

/// Config-file directives Redis 7.0 still accepts (with exactly these
/// argument counts) and ignores.
pub(super) const DEPRECATED: &[&str] = &[
    "list-max-ziplist-entries",
    "list-max-ziplist-value",
    "lua-replicate-commands",
];

/// Lower-case name or alias -> (table index, is_alias).
fn index() -> &'static HashMap<&'static str, (usize, bool)> {
    static IDX: OnceLock<HashMap<&'static str, (usize, bool)>> = OnceLock::new();
    IDX.get_or_init(|| {
        let mut m = HashMap::new();
        for (i, p) in PARAMS.iter().enumerate() {
            m.insert(p.name, (i, false));
            if let Some(a) = p.alias {
                m.insert(a, (i, true));
            }
        }
        m
    })
}

/// Case-insensitive lookup by name or alias (Redis's config dict is
/// case-insensitive).
pub(super) fn lookup(name: &str) -> Option<(usize, bool)> {
    if name.bytes().any(|c| c.is_ascii_uppercase()) {
        index().get(name.to_ascii_lowercase().as_str()).copied()
    } else {
        index().get(name).copied()
    }
}

/// Typed default of every param (dir's default is the process's working
/// directory, filled in by `Config::default`).
pub(super) fn defaults() -> &'static [Val] {
    static DEFS: OnceLock<Vec<Val>> = OnceLock::new();
    DEFS.get_or_init(|| {
        PARAMS
            .iter()
            .map(|p| {
                if let Kind::Special(Special::Dir) = p.kind {
                    return Val::Str(String::new());
                }
                let args = if p.multi_arg() && !p.default.is_empty() {
                    split_spaces(p.default)
                } else {
                    vec![p.default.to_string()]
                };
                parse_value(
                    p,
                    &Val::Str(String::new()),
                    &args,
                    &mut LoadState::default(),
                )
                .unwrap_or(Val::Str(String::new()))
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Compile-time checked parameter handles
// ---------------------------------------------------------------------------

/// The shape of a parameter's stored value: which [`Val`] variant its
/// [`Kind`] parses into. `Id<SHAPE>` carries one of these.
pub(super) mod shape {
    pub(in crate::config) const BOOL: u8 = 0;
    pub(in crate::config) const NUM: u8 = 1;
    pub(in crate::config) const ENUM: u8 = 2;
    /// Plain strings and `dir` (a special kind stored as a string).
    pub(in crate::config) const STR: u8 = 3;
    pub(in crate::config) const SAVE: u8 = 4;
    pub(in crate::config) const OUTPUT_LIMITS: u8 = 5;
    pub(in crate::config) const OOM_VALUES: u8 = 6;
    pub(in crate::config) const NOTIFY: u8 = 7;
    pub(in crate::config) const BIND: u8 = 8;
    pub(in crate::config) const REPLICAOF: u8 = 9;
    pub(in crate::config) const PERCENTILES: u8 = 10;
    pub(in crate::config) const SHUTDOWN_FLAGS: u8 = 11;
}

impl Kind {
    /// The [`shape`] of the value this kind parses into.
    pub(super) const fn shape(&self) -> u8 {
        match *self {
            Kind::Bool => shape::BOOL,
            Kind::Num(_) => shape::NUM,
            Kind::Enum(_) => shape::ENUM,
            Kind::Str { .. } | Kind::Special(Special::Dir) => shape::STR,
            Kind::Special(Special::Save) => shape::SAVE,
            Kind::Special(Special::OutputLimits) => shape::OUTPUT_LIMITS,
            Kind::Special(Special::OomValues) => shape::OOM_VALUES,
            Kind::Special(Special::Notify) => shape::NOTIFY,
            Kind::Special(Special::Bind) => shape::BIND,
            Kind::Special(Special::Replicaof) => shape::REPLICAOF,
            Kind::Special(Special::Percentiles) => shape::PERCENTILES,
            Kind::Special(Special::ShutdownOnSig) => shape::SHUTDOWN_FLAGS,
        }
    }
}

/// A parameter known to exist, whose value has shape `SHAPE`: its index
/// in [`PARAMS`]. Only [`Id::resolve`] makes one, and code outside this
/// file gets it through [`param!`], which runs `resolve` at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Id<const SHAPE: u8>(usize);

/// `str == str` for const contexts.
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The index of the parameter whose canonical name is `name` (aliases are
/// not accepted: code spells parameters one way). Panics when there is no
/// such parameter or its value is not of shape `shape`.
const fn find(name: &str, shape: u8) -> usize {
    let mut i = 0;
    while i < PARAMS.len() {
        let p = &PARAMS[i];
        if same_name(p.name, name) {
            if p.kind.shape() != shape {
                panic!("config parameter read through an accessor of the wrong type");
            }
            return i;
        }
        i += 1;
    }
    panic!("no such config parameter (a typo in a param! name?)");
}

impl<const SHAPE: u8> Id<SHAPE> {
    /// The parameter named `name`, of shape `SHAPE` (see [`find`]).
    /// Evaluated in a `const` block by [`param!`], so a bad name or shape
    /// is a compile error rather than a panic.
    pub(super) const fn resolve(name: &str) -> Self {
        Id(find(name, SHAPE))
    }

    /// The parameter's index in [`PARAMS`] (and in `Config::vals`).
    pub(super) const fn index(self) -> usize {
        self.0
    }

    /// The canonical name.
    pub(super) fn name(self) -> &'static str {
        PARAMS.get(self.0).map_or("", |p| p.name)
    }
}

/// A checked handle on a parameter: `param!(NUM, "maxmemory")` is the
/// `Id<{ shape::NUM }>` of `maxmemory`. It expands to a block holding a
/// `const` item, which the compiler evaluates while type-checking (so
/// `cargo check`, clippy and editors report a bad name too, not only
/// `cargo build`): a name that is not a canonical name in [`PARAMS`], or
/// a parameter whose value has another shape, fails the build. The
/// accessors take `Id<SHAPE>` of their own shape, so passing the handle
/// to the wrong accessor is a type error.
macro_rules! param {
    ($shape:ident, $name:literal) => {{
        const ID: $crate::config::table::Id<{ $crate::config::table::shape::$shape }> =
            $crate::config::table::Id::resolve($name);
        ID
    }};
}
pub(super) use param;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_defaults_parse() {
        // A default that fails to parse would silently become a Str("").
        for (p, v) in PARAMS.iter().zip(defaults()) {
            let ok = match (&p.kind, v) {
                (Kind::Bool, Val::Bool(_))
                | (Kind::Num(_), Val::Num(_))
                | (Kind::Enum(_), Val::Enum(_)) => true,
                (Kind::Str { .. }, Val::Str(_)) | (Kind::Special(Special::Dir), Val::Str(_)) => {
                    true
                }
                (Kind::Special(_), Val::Str(_)) => false,
                (Kind::Special(_), _) => true,
                _ => false,
            };
            assert!(ok, "default of {} did not parse: {:?}", p.name, v);
        }
        // Names and aliases are unique and lower-case.
        let mut seen = HashSet::new();
        for p in PARAMS {
            for n in std::iter::once(p.name).chain(p.alias) {
                assert_eq!(n, n.to_ascii_lowercase());
                assert!(seen.insert(n), "duplicate name {n}");
            }
        }
    }

    #[test]
    fn every_parameter_resolves_to_itself() {
        // The const lookup `param!` runs at compile time agrees with the
        // run-time one, for every parameter and its own shape.
        for (i, p) in PARAMS.iter().enumerate() {
            assert_eq!(find(p.name, p.kind.shape()), i, "{}", p.name);
            assert_eq!(lookup(p.name), Some((i, false)), "{}", p.name);
        }
        let id = param!(NUM, "maxmemory");
        assert_eq!(
            (id.name(), lookup("maxmemory").map(|x| x.0)),
            ("maxmemory", Some(id.index()))
        );
    }

    #[test]
    #[should_panic(expected = "no such config parameter")]
    fn misspelled_name_is_rejected() {
        // At run time here; through `param!` the same panic fails the build.
        find("maxmemroy", shape::NUM);
    }

    #[test]
    #[should_panic(expected = "no such config parameter")]
    fn alias_is_rejected() {
        find("slave-read-only", shape::BOOL);
    }

    #[test]
    #[should_panic(expected = "wrong type")]
    fn wrong_shape_is_rejected() {
        find("port", shape::BOOL);
    }
}
