//! LATENCY (LATEST, HISTORY, RESET, GRAPH, DOCTOR, HISTOGRAM, HELP) and the
//! per-command latency histograms behind LATENCY HISTOGRAM and `INFO
//! latencystats`.
//!
//! Two kinds of data, as in Redis: latency *events* (a command, an expire
//! cycle... that took at least `latency-monitor-threshold` ms), kept per
//! second in `Tenant::latency`; and, with `latency-tracking yes`, an HDR
//! histogram of every command's run times, kept in its INFO commandstats
//! entry.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::Ctx;
use crate::tenant::CmdStat;

/// The histograms' range, in ns: 1 µs (the clock's resolution here) to
/// 1 s, anything slower counted as 1 s, with two significant digits, as
/// Redis keeps them.
const LOW_NS: u64 = 1_000;
const HIGH_NS: u64 = 1_000_000_000;

/// Records a run of `us` microseconds in the command's histogram.
pub fn record(stat: &mut CmdStat, us: u64) {
    let h = stat.latency.get_or_insert_with(|| {
        crate::alloc::Unaccounted::new(|| {
            // (Valid bounds: 1000 >= 1, 1e9 >= 2 * 1000, 2 digits.)
            Histogram::new_with_bounds(LOW_NS, HIGH_NS, 2).expect("valid histogram bounds")
        })
    });
    let ns = us.saturating_mul(1000).clamp(LOW_NS, HIGH_NS);
    // (In range by the clamp: recording cannot fail.)
    if let Some(h) = h.get_mut() {
        let _ = h.record(ns);
    }
}

/// `INFO latencystats`: a line per command that has a histogram, its
/// percentiles in µs (`latency-tracking-info-percentiles`).
pub fn info_section(ctx: &Ctx, percentiles: &[f64], o: &mut String) {
    o.push_str("# Latencystats\r\n");
    let reg = crate::cmd::registry();
    for (id, stat) in ctx.t.stats.commands.iter().enumerate() {
        let Some(h) = stat
            .latency
            .as_ref()
            .and_then(|h| h.get())
            .filter(|h| !h.is_empty())
        else {
            continue;
        };
        let Some(r) = reg.all.get(id) else {
            continue;
        };
        let _ = write!(o, "latency_percentiles_usec_{}:", r.fullname);
        for (i, p) in percentiles.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let us = h.value_at_quantile(p / 100.0) as f64 / 1000.0;
            let _ = write!(o, "p{}={us:.3}", trim_float(*p));
        }
        o.push_str("\r\n");
    }
}

/// 50 as "50", 99.9 as "99.9".
fn trim_float(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Writes one command's `{calls, histogram_usec: {µs: cumulative count}}`
/// with Redis's buckets: powers of two from 1024 ns, those where the count
/// grew.
fn reply_histogram(out: &mut crate::resp::Reply, h: &Histogram<u64>) {
    out.map(2);
    out.bulk(b"calls");
    out.int(h.len() as i64);
    out.bulk(b"histogram_usec");
    let mut rows: Vec<(i64, i64)> = Vec::new();
    let mut total = 0u64;
    for v in h.iter_log(1024, 2.0) {
        let before = total;
        total += v.count_since_last_iteration();
        if total > before {
            // Redis labels a bucket with the highest value equivalent to
            // its power of two (the iterator stops one below it).
            let top = h.highest_equivalent(v.value_iterated_to() + 1);
            rows.push(((top / 1000) as i64, total as i64));
        }
    }
    out.map(rows.len());
    for (us, n) in rows {
        out.int(us);
        out.int(n);
    }
}

/// `LATENCY HISTOGRAM [command ...]`: every command with a histogram, or
/// those named (a container names its subcommands); unknown names and
/// commands never run are left out.
pub fn histogram(ctx: &mut Ctx) {
    let reg = crate::cmd::registry();
    let mut ids: Vec<usize> = Vec::new();
    if ctx.args.len() == 2 {
        ids.extend(0..ctx.t.stats.commands.len());
    } else {
        for name in &ctx.args[2..] {
            let Some(r) = reg.by_fullname(name) else {
                continue;
            };
            if r.spec.subs.is_empty() {
                ids.push(r.id);
            } else {
                ids.extend(reg.subcommands(r.id).map(|s| s.id));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let with: Vec<usize> = ids
        .into_iter()
        .filter(|&id| {
            ctx.t
                .stats
                .commands
                .get(id)
                .and_then(|s| s.latency.as_ref())
                .and_then(|h| h.get())
                .is_some_and(|h| !h.is_empty())
        })
        .collect();
    let stats = &ctx.t.stats.commands;
    let out = &mut *ctx.out;
    out.map(with.len());
    for id in with {
        out.bulk(reg.all[id].fullname.as_bytes());
        if let Some(h) = stats[id].latency.as_ref().and_then(|h| h.get()) {
            reply_histogram(out, h);
        }
    }
}

pub fn latest(ctx: &mut Ctx) {
    let mut events: Vec<(&'static str, i64, u64, u64)> = ctx
        .t
        .latency
        .iter()
        .filter_map(|(k, v)| v.samples.back().map(|s| (*k, s.0, s.1, v.max)))
        .collect();
    events.sort();
    ctx.out.array(events.len());
    for (name, ts, last, max) in events {
        ctx.out.array(4);
        ctx.out.bulk(name.as_bytes());
        ctx.out.int(ts);
        ctx.out.int(last as i64);
        ctx.out.int(max as i64);
    }
}

/// Event `name`'s record, if it has one.
fn event<'c>(ctx: &'c Ctx, name: &[u8]) -> Option<&'c crate::tenant::LatencyEvent> {
    ctx.t
        .latency
        .iter()
        .find(|(k, _)| k.as_bytes() == name)
        .map(|(_, v)| v)
}

/// The samples (unix seconds, ms) of event `name`, oldest first.
fn samples_of(ctx: &Ctx, name: &[u8]) -> Vec<(i64, u64)> {
    event(ctx, name)
        .map(|v| v.samples.iter().copied().collect())
        .unwrap_or_default()
}

pub fn history(ctx: &mut Ctx) {
    let samples = samples_of(ctx, ctx.args[2]);
    ctx.out.array(samples.len());
    for (ts, ms) in samples {
        ctx.out.array(2);
        ctx.out.int(ts);
        ctx.out.int(ms as i64);
    }
}

pub fn reset(ctx: &mut Ctx) {
    let n = if ctx.args.len() == 2 {
        let n = ctx.t.latency.len();
        ctx.t.latency.clear();
        n
    } else {
        let names: Vec<String> = ctx.args[2..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let before = ctx.t.latency.len();
        ctx.t.latency.retain(|k, _| !names.iter().any(|n| n == k));
        before - ctx.t.latency.len()
    };
    ctx.out.int(n as i64);
}

/// `LATENCY GRAPH event`: the event's samples as a text chart, a column
/// per sample (oldest left), its height the latency against the event's
/// range, the time since each sample below.
pub fn graph(ctx: &mut Ctx) {
    let name = ctx.args[2];
    let (samples, all_time) = event(ctx, name).map_or((Vec::new(), 0), |v| {
        (v.samples.iter().copied().collect::<Vec<_>>(), v.max)
    });
    if samples.is_empty() {
        let mut m = b"No samples available for event '".to_vec();
        m.extend_from_slice(name);
        m.push(b'\'');
        return ctx.err_bytes(&m);
    }
    let now = ctx.now_ms / 1000;
    let ev = String::from_utf8_lossy(name);
    let (min, max) = samples
        .iter()
        .fold((u64::MAX, 0u64), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    const ROWS: u64 = 8;
    let mut text = format!("{ev} - high {max} ms, low {min} ms (all time high {all_time} ms)\n");
    text.push_str(&"-".repeat(80));
    text.push('\n');
    let height = |ms: u64| -> u64 {
        if max == min {
            ROWS
        } else {
            1 + (ms - min) * (ROWS - 1) / (max - min)
        }
    };
    for row in (1..=ROWS).rev() {
        for s in &samples {
            text.push(if height(s.1) >= row { '#' } else { ' ' });
        }
        text.push('\n');
    }
    // Ages, written downwards: "12s" under its column.
    let ages: Vec<String> = samples
        .iter()
        .map(|s| {
            let age = (now - s.0).max(0);
            if age < 60 {
                format!("{age}s")
            } else if age < 3600 {
                format!("{}m", age / 60)
            } else {
                format!("{}h", age / 3600)
            }
        })
        .collect();
    let depth = ages.iter().map(|a| a.len()).max().unwrap_or(0);
    for i in 0..depth {
        for a in &ages {
            text.push(a.as_bytes().get(i).map_or(' ', |&b| b as char));
        }
        text.push('\n');
    }
    ctx.out.verbatim(text.as_bytes());
}

/// `LATENCY DOCTOR`: a report in plain words on the events recorded and
/// what could cause them.
pub fn doctor(ctx: &mut Ctx) {
    let threshold = ctx.set.latency_threshold_ms;
    let now = ctx.now_ms / 1000;
    let mut text = String::new();
    if ctx.t.latency.is_empty() {
        if threshold == 0 {
            text.push_str("Latency monitoring is off: no events are recorded. Turn it on with CONFIG SET latency-monitor-threshold <milliseconds> (events at least that long are kept, a sample per second, the last 160 of each kind).\n");
        } else {
            let _ = writeln!(
                text,
                "No event of {threshold} ms or more has been recorded: nothing to report."
            );
        }
        return ctx.out.verbatim(text.as_bytes());
    }
    let mut events: Vec<_> = ctx.t.latency.iter().collect();
    events.sort_by_key(|(k, _)| *k);
    text.push_str("Latency events recorded (the last 160 of each kind):\n\n");
    let mut advice: Vec<&str> = Vec::new();
    for (i, (name, ev)) in events.iter().enumerate() {
        let n = ev.samples.len() as u64;
        let sum: u64 = ev.samples.iter().map(|s| s.1).sum();
        let avg = sum / n.max(1);
        let mad = ev.samples.iter().map(|s| s.1.abs_diff(avg)).sum::<u64>() / n.max(1);
        let oldest = ev.samples.front().map_or(now, |s| s.0);
        let period = (now - oldest).max(1) as f64 / n.max(1) as f64;
        let _ = writeln!(
            text,
            "{}. {name}: {n} samples, average {avg} ms, mean deviation {mad} ms, one every {period:.2} s; worst ever {} ms.",
            i + 1,
            ev.max
        );
        let hint = match **name {
            "command" => "Slow commands: SLOWLOG GET names them; large keys deleted or read whole (DEL, SMEMBERS, KEYS) are the usual cause.",
            "fast-command" => "A command that should take microseconds took milliseconds: the machine was busy elsewhere (other processes, a throttled shared CPU).",
            "expire-cycle" => "Active expiry ran long: many keys expiring at once, or large ones; spreading TTLs, or a higher `hz`, makes it more incremental.",
            "eviction-cycle" | "eviction-del" => "Eviction ran long: memory pressure all at once (a lowered maxmemory, a large write); evicting large keys blocks too.",
            _ => "Disk or background work: a slower disk, or other processes using it.",
        };
        if !advice.contains(&hint) {
            advice.push(hint);
        }
    }
    text.push_str("\nWhat may help:\n");
    for a in advice {
        let _ = writeln!(text, "- {a}");
    }
    ctx.out.verbatim(text.as_bytes());
}

pub fn help(ctx: &mut Ctx) {
    super::command::reply_help_ending(
        ctx,
        "LATENCY",
        &[
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HISTOGRAM [COMMAND ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
        ],
        "    Prints this help.",
    );
}
