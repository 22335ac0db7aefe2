//! MEMORY: USAGE, STATS, DOCTOR, MALLOC-STATS, PURGE, HELP, as Redis 7.0
//! words them. A customer's database sees its own memory (its account in
//! `crate::alloc`), the default database the process's, as `INFO memory`.
//! The allocator is glibc's malloc, not jemalloc: MALLOC-STATS reports
//! its `mallinfo2` figures, and PURGE returns free memory to the system
//! with `malloc_trim`.

use super::{errors, Ctx};
use crate::alloc;
use crate::util::parse_i64;

/// What a database's memory looks like now (shared with `INFO memory`).
pub(crate) struct Figures {
    pub used: u64,
    pub peak: u64,
    pub rss: u64,
    /// The tables' own memory (buckets, entries), not the values.
    pub overhead: u64,
}

pub(crate) fn figures(ctx: &mut Ctx) -> Figures {
    let (_, own_account) = ctx.t.memory_limits(&ctx.set.evict);
    let (used, peak) = match own_account.then(|| ctx.t.mem.used()) {
        Some(used) => (used, used),
        None => {
            let used = alloc::allocated() as u64;
            (used, alloc::peak().max(used as usize) as u64)
        }
    };
    let overhead = ctx.t.ks.dbs.iter().map(|d| d.overhead_bytes() as u64).sum();
    Figures {
        used,
        peak,
        rss: alloc::rss_bytes(),
        overhead,
    }
}

/// `MEMORY USAGE key [SAMPLES count]`: the key's bytes (its name, its
/// value's allocations and its entry), or nil. Values are measured whole,
/// so SAMPLES is checked and needs no sampling.
pub fn usage(ctx: &mut Ctx) {
    let mut j = 3;
    while j < ctx.args.len() {
        if ctx.args[j].eq_ignore_ascii_case(b"samples") && j + 1 < ctx.args.len() {
            match parse_i64(ctx.args[j + 1]) {
                Some(n) if n >= 0 => {}
                Some(_) => return ctx.syntax_error(),
                None => return ctx.err(errors::NOT_INTEGER),
            }
            j += 2;
        } else {
            return ctx.syntax_error();
        }
    }
    let key = ctx.args[2];
    let Some(idx) = ctx.lookup_notouch(ctx.s.db, key) else {
        return ctx.out.null();
    };
    let e = ctx.db().entry(idx);
    let bytes = e.key.len() + e.value.heap_size() + std::mem::size_of_val(e);
    ctx.out.int(bytes as i64);
}

/// `MEMORY STATS`: Redis's fields, in its order.
pub fn stats(ctx: &mut Ctx) {
    let f = figures(ctx);
    let backlog = ctx.t.log.backlog_alloc() as u64;
    let lua = ctx.t.scripts.cache_bytes() as u64;
    let functions = ctx.t.functions.cache_bytes() as u64;
    let dbs: Vec<(usize, u64, u64)> = ctx
        .t
        .ks
        .dbs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.is_empty())
        .map(|(i, d)| {
            (
                i,
                d.overhead_bytes() as u64,
                (d.volatile_len() * std::mem::size_of::<u32>()) as u64,
            )
        })
        .collect();
    let keys = ctx.t.ks.total_keys() as u64;
    let overhead_total = f.overhead + backlog + lua + functions;
    let dataset = f.used.saturating_sub(overhead_total);
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let out = &mut *ctx.out;
    out.map(27 + dbs.len());
    let int = |out: &mut crate::resp::Reply, name: &str, v: u64| {
        out.bulk(name.as_bytes());
        out.int(v as i64);
    };
    let dbl = |out: &mut crate::resp::Reply, name: &str, v: f64| {
        out.bulk(name.as_bytes());
        out.double(v);
    };
    int(out, "peak.allocated", f.peak);
    int(out, "total.allocated", f.used);
    int(out, "startup.allocated", 0);
    int(out, "replication.backlog", backlog);
    int(out, "clients.slaves", 0);
    int(out, "clients.normal", 0);
    int(out, "cluster.links", 0);
    int(out, "aof.buffer", 0);
    int(out, "lua.caches", lua);
    int(out, "functions.caches", functions);
    for (i, main, expires) in dbs {
        out.bulk(format!("db.{i}").as_bytes());
        out.map(3);
        int(out, "overhead.hashtable.main", main);
        int(out, "overhead.hashtable.expires", expires);
        int(out, "overhead.hashtable.slot-to-keys", 0);
    }
    int(out, "overhead.total", overhead_total);
    int(out, "keys.count", keys);
    int(
        out,
        "keys.bytes-per-key",
        f.used.checked_div(keys).unwrap_or(0),
    );
    int(out, "dataset.bytes", dataset);
    dbl(out, "dataset.percentage", ratio(dataset, f.used) * 100.0);
    dbl(out, "peak.percentage", ratio(f.used, f.peak) * 100.0);
    int(out, "allocator.allocated", f.used);
    int(out, "allocator.active", f.used);
    int(out, "allocator.resident", f.rss);
    dbl(out, "allocator-fragmentation.ratio", 1.0);
    int(out, "allocator-fragmentation.bytes", 0);
    dbl(out, "allocator-rss.ratio", ratio(f.rss, f.used));
    int(out, "allocator-rss.bytes", f.rss.saturating_sub(f.used));
    dbl(out, "rss-overhead.ratio", 1.0);
    int(out, "rss-overhead.bytes", 0);
    dbl(out, "fragmentation", ratio(f.rss, f.used));
    int(out, "fragmentation.bytes", f.rss.saturating_sub(f.used));
}

/// `MEMORY DOCTOR`: a report for people, in anykv's own words (as
/// LATENCY DOCTOR), from the checks of Redis's that apply to this
/// allocator: a past peak well above what is used now, and resident
/// memory well above the allocations.
pub fn doctor(ctx: &mut Ctx) {
    let f = figures(ctx);
    let report = if f.used < 5 << 20 {
        "Memory report: under 5 MB in use, too little for these checks to mean anything. Ask again once the database holds more data.\n".to_string()
    } else {
        let mut issues = Vec::new();
        if f.peak as f64 / f.used as f64 > 1.5 {
            issues.push(format!(
                " * Past peak: {} bytes were in use at the most, over 1.5 times the {} in use now. The allocator keeps much of what a peak freed, so resident memory stays high until data fills it again; MEMORY PURGE hands the free part back to the system now, a restart all of it.",
                f.peak, f.used
            ));
        }
        if f.rss as f64 / f.used as f64 > 1.4 && f.rss - f.used > 10 << 20 {
            issues.push(format!(
                " * Resident memory: {} bytes, {:.2} times the {} allocated. A past peak explains it (see above, if listed); otherwise the workload leaves the heap fragmented. The allocator is glibc's malloc: MEMORY PURGE returns its free pages.",
                f.rss,
                f.rss as f64 / f.used as f64,
                f.used
            ));
        }
        if issues.is_empty() {
            "Memory report: nothing to look at (no past peak above 1.5 times the memory in use, resident memory within 1.4 times the allocations).\n".to_string()
        } else {
            format!(
                "Memory report: {} thing(s) to look at.\n\n{}\n",
                issues.len(),
                issues.join("\n\n")
            )
        }
    };
    ctx.out.verbatim(report.as_bytes());
}

/// `MEMORY MALLOC-STATS`: the allocator's own statistics, as a verbatim
/// text (Redis's reply type with jemalloc). The allocator is glibc's
/// malloc, so the figures are its `mallinfo2` (the heap it took from the
/// system, what is in use and free in it, what is mapped separately),
/// beside what anykv counts as requested; elsewhere Redis's answer for
/// an allocator with no statistics.
pub fn malloc_stats(ctx: &mut Ctx) {
    match glibc_stats() {
        Some(text) => ctx.out.verbatim(text.as_bytes()),
        None => ctx
            .out
            .bulk(b"Stats not supported for the current allocator"),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_stats() -> Option<String> {
    // SAFETY: mallinfo2 takes no arguments and returns a struct by value;
    // it only reads the allocator's own counters (under its locks).
    let m = unsafe { libc::mallinfo2() };
    let line = |name: &str, value: usize, what: &str| format!("{name:<10} {value:>14}  {what}\n");
    let mut s = String::from("___ Begin glibc malloc statistics (mallinfo2) ___\n");
    s += &line(
        "arena",
        m.arena,
        "bytes of heap taken from the system (brk and arenas)",
    );
    s += &line("ordblks", m.ordblks, "free chunks");
    s += &line("smblks", m.smblks, "free fastbin chunks");
    s += &line("hblks", m.hblks, "chunks mapped on their own (mmap)");
    s += &line("hblkhd", m.hblkhd, "bytes in chunks mapped on their own");
    s += &line("fsmblkd", m.fsmblks, "bytes in free fastbin chunks");
    s += &line("uordblks", m.uordblks, "bytes in use in the heap");
    s += &line("fordblks", m.fordblks, "bytes free in the heap");
    s += &line(
        "keepcost",
        m.keepcost,
        "bytes at the top a trim could release",
    );
    s += &line(
        "requested",
        alloc::allocated(),
        "bytes anykv asked for and holds (used_memory)",
    );
    s += &line("peak", alloc::peak(), "most bytes anykv held at once");
    s += "___ End glibc malloc statistics ___\n";
    Some(s)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_stats() -> Option<String> {
    None
}

/// `MEMORY PURGE`: returns the allocator's free memory to the system.
pub fn purge(ctx: &mut Ctx) {
    // SAFETY: malloc_trim only releases free pages held by glibc's
    // allocator; it takes no pointers and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    ctx.out.ok();
}

/// `MEMORY HELP`.
pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "MEMORY",
        &[
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ],
        "    Prints this help.",
    )
}
