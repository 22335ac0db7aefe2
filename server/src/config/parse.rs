//! Parameter values: the typed [`Val`] a parameter holds, how each kind of
//! parameter parses its arguments into one (with Redis 7.0's error texts)
//! and renders it back (what CONFIG GET shows), Redis's string validators,
//! and the C-semantics helpers this needs (`memtoull`, `strtoll`, the
//! keyspace-event flag strings, `sdscatrepr` quoting, `strerror`).
//!
//! Separate from the table so the table stays declarative, and from the
//! file and rewrite code, which only move already-split arguments in and
//! rendered text out.

use std::path::PathBuf;

use super::table::{param, Kind, NumFmt, NumSpec, Param, Special};
use super::{
    NOTIFY_ALL, NOTIFY_EVICTED, NOTIFY_EXPIRED, NOTIFY_GENERIC, NOTIFY_HASH, NOTIFY_KEYEVENT,
    NOTIFY_KEYSPACE, NOTIFY_KEY_MISS, NOTIFY_LIST, NOTIFY_MODULE, NOTIFY_NEW, NOTIFY_SET,
    NOTIFY_STREAM, NOTIFY_STRING, NOTIFY_ZSET,
};
use crate::util::{parse_f64, parse_i64};

/// `CONFIG_BINDADDR_MAX`.
const BINDADDR_MAX: usize = 16;
/// `CONFIG_MIN_HZ` / `CONFIG_MAX_HZ`: `hz` is a hint and is clamped, not
/// rejected, exactly like Redis does.
const MIN_HZ: i128 = 1;
const MAX_HZ: i128 = 500;

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Bool(bool),
    /// Numeric value; percentages (maxmemory-clients) are stored negative.
    Num(i128),
    /// Index into the enum table.
    Enum(usize),
    Str(String),
    Save(Vec<(i64, i32)>),
    OutputLimits([ObLimit; 3]),
    OomValues([i32; 3]),
    Notify(u32),
    Bind(Vec<String>),
    Replicaof(Option<(String, i64)>),
    Percentiles(Vec<f64>),
    /// shutdown-on-sig* flag bits, in SHUTDOWN_FLAGS order.
    ShutdownFlags(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) struct ObLimit {
    pub(super) hard: u64,
    pub(super) soft: u64,
    pub(super) secs: i32,
}

/// shutdown-on-sigint/sigterm flags (bit i = entry i); 0 is "default".
pub(super) const SHUTDOWN_FLAGS: [&str; 4] = ["save", "nosave", "now", "force"];

pub(super) const OBL_CLASSES: [&str; 3] = ["normal", "slave", "pubsub"];

/// State of one load (file + argv): the first `save` directive replaces the
/// defaults, later ones append (so several `save` lines accumulate).
#[derive(Default)]
pub(super) struct LoadState {
    pub(super) loading: bool,
    pub(super) save_loaded: bool,
    pub(super) module_config: bool,
}

pub(super) fn render(p: &Param, v: &Val) -> String {
    match v {
        Val::Bool(b) => yes_no(*b).to_string(),
        Val::Num(n) => match p.kind {
            Kind::Num(spec) => match spec.fmt {
                NumFmt::MemPct if *n < 0 => format!("{}%", -n),
                NumFmt::Octal => format!("{n:o}"),
                _ => n.to_string(),
            },
            _ => n.to_string(),
        },
        Val::Enum(i) => enum_name(p, *i).to_string(),
        Val::Str(s) => s.clone(),
        Val::Save(list) => list
            .iter()
            .map(|(s, c)| format!("{s} {c}"))
            .collect::<Vec<_>>()
            .join(" "),
        Val::OutputLimits(l) => l
            .iter()
            .zip(OBL_CLASSES)
            .map(|(l, c)| format!("{c} {} {} {}", l.hard, l.soft, l.secs))
            .collect::<Vec<_>>()
            .join(" "),
        Val::OomValues(v) => format!("{} {} {}", v[0], v[1], v[2]),
        Val::Notify(f) => notify_flags_to_string(*f),
        Val::Bind(addrs) => addrs.join(" "),
        Val::Replicaof(r) => r
            .as_ref()
            .map(|(h, p)| format!("{h} {p}"))
            .unwrap_or_default(),
        Val::Percentiles(v) => v
            .iter()
            .map(|f| trim_double(&format!("{f:.6}")))
            .collect::<Vec<_>>()
            .join(" "),
        Val::ShutdownFlags(f) => shutdown_flags_to_string(*f),
    }
}

/// The rendered name of an enum value: the first name sharing its value.
pub(super) fn enum_name(p: &Param, i: usize) -> &'static str {
    if let Kind::Enum(vals) = p.kind {
        if let Some(&(_, v)) = vals.get(i) {
            if let Some(&(n, _)) = vals.iter().find(|(_, x)| *x == v) {
                return n;
            }
        }
    }
    "unknown"
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Parses one param's arguments (already split) into a value. `cur` is the
/// current value (client-output-buffer-limit updates only the classes given,
/// dir resolves relative paths against it). Errors are Redis's texts.
pub(super) fn parse_value(
    p: &Param,
    cur: &Val,
    args: &[String],
    st: &mut LoadState,
) -> Result<Val, String> {
    let first = args.first().map(String::as_str).unwrap_or("");
    match p.kind {
        Kind::Bool => {
            if first.eq_ignore_ascii_case("yes") {
                Ok(Val::Bool(true))
            } else if first.eq_ignore_ascii_case("no") {
                Ok(Val::Bool(false))
            } else {
                Err("argument must be 'yes' or 'no'".into())
            }
        }
        Kind::Num(spec) => parse_num(p, spec, first).map(Val::Num),
        Kind::Enum(vals) => match vals.iter().position(|(n, _)| n.eq_ignore_ascii_case(first)) {
            Some(i) => Ok(Val::Enum(i)),
            None => {
                let names: Vec<&str> = vals.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "argument(s) must be one of the following: {}",
                    names.join(", ")
                ))
            }
        },
        Kind::Str { check, .. } => {
            if let Some(check) = check {
                check(first).map_err(String::from)?;
            }
            Ok(Val::Str(first.to_string()))
        }
        Kind::Special(sp) => parse_special(sp, cur, args, st),
    }
}

fn parse_num(p: &Param, spec: NumSpec, s: &str) -> Result<i128, String> {
    let v: i128 = match spec.fmt {
        NumFmt::Int => parse_i64(s.as_bytes())
            .map(i128::from)
            .ok_or("argument couldn't be parsed into an integer")?,
        NumFmt::Mem | NumFmt::MemPct => match memtoull(s) {
            Some(u) if spec.signed => i128::from(u as i64),
            Some(u) => i128::from(u),
            None => {
                let pct = if spec.fmt == NumFmt::MemPct && s.len() > 1 && s.ends_with('%') {
                    parse_i64(&s.as_bytes()[..s.len() - 1]).filter(|n| *n >= 0)
                } else {
                    None
                };
                match pct {
                    Some(n) => -i128::from(n),
                    None if spec.fmt == NumFmt::MemPct => {
                        return Err("argument must be a memory or percent value".into())
                    }
                    None => return Err("argument must be a memory value".into()),
                }
            }
        },
        NumFmt::Octal => match c_strtoll(s, 8) {
            (v, true, false) => i128::from(v),
            _ => return Err("argument couldn't be parsed as an octal number".into()),
        },
    };
    if spec.fmt == NumFmt::MemPct && v < 0 {
        if v < spec.min {
            return Err(format!(
                "percentage argument must be less or equal to {}",
                -spec.min
            ));
        }
    } else if v < spec.min || v > spec.max {
        return Err(if spec.fmt == NumFmt::Octal {
            format!(
                "argument must be between {:o} and {:o} inclusive",
                spec.min, spec.max
            )
        } else {
            format!(
                "argument must be between {} and {} inclusive",
                spec.min, spec.max
            )
        });
    }
    // Redis's updateHZ: out-of-range hz is a hint, clamped, not an error.
    if p.name == param!(NUM, "hz").name() {
        return Ok(v.clamp(MIN_HZ, MAX_HZ));
    }
    Ok(v)
}

fn parse_special(
    sp: Special,
    cur: &Val,
    args: &[String],
    st: &mut LoadState,
) -> Result<Val, String> {
    match sp {
        Special::Dir => {
            if args.len() != 1 {
                return Err("wrong number of arguments".into());
            }
            // Redis chdir()s; anykv keeps the process cwd and stores the
            // resolved absolute path instead (what CONFIG GET dir shows).
            let base = match cur {
                Val::Str(s) if !s.is_empty() => PathBuf::from(s),
                _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            };
            let target = base.join(&args[0]);
            if args[0].is_empty() {
                return Err(strerror(&std::io::Error::from(
                    std::io::ErrorKind::NotFound,
                )));
            }
            match std::fs::canonicalize(&target) {
                Ok(path) if path.is_dir() => Ok(Val::Str(path.to_string_lossy().into_owned())),
                Ok(_) => Err("Not a directory".into()),
                Err(e) => Err(strerror(&e)),
            }
        }
        Special::Save => {
            let args: &[String] = if args.len() == 1 && args[0].is_empty() {
                &[]
            } else {
                args
            };
            if args.len() % 2 == 1 {
                return Err("Invalid save parameters".into());
            }
            let mut pairs = Vec::new();
            for pair in args.chunks(2) {
                let (secs, all1, _) = c_strtoll(&pair[0], 10);
                let (changes, all2, _) =
                    c_strtoll(pair.get(1).map(String::as_str).unwrap_or(""), 10);
                if !all1 || !all2 || secs < 1 || changes < 0 {
                    return Err("Invalid save parameters".into());
                }
                // `changes` is a C int in Redis.
                pairs.push((secs, changes as i32));
            }
            let mut list = match cur {
                Val::Save(l) if st.loading && st.save_loaded => l.clone(),
                _ => Vec::new(),
            };
            if st.loading {
                st.save_loaded = true;
            }
            list.extend(pairs);
            Ok(Val::Save(list))
        }
        Special::OutputLimits => {
            if !args.len().is_multiple_of(4) {
                return Err("Wrong number of arguments in buffer limit configuration.".into());
            }
            let mut limits = match cur {
                Val::OutputLimits(l) => *l,
                _ => [ObLimit::default(); 3],
            };
            let mut updates = Vec::new();
            for quad in args.chunks(4) {
                let class = match quad[0].to_ascii_lowercase().as_str() {
                    "normal" => 0,
                    "slave" | "replica" => 1,
                    "pubsub" => 2,
                    _ => {
                        return Err(
                            "Invalid client class specified in buffer limit configuration.".into(),
                        )
                    }
                };
                let hard = memtoull(&quad[1]);
                let soft = memtoull(&quad[2]);
                let (secs, all, _) = c_strtoll(&quad[3], 10);
                // soft_seconds is a C int in Redis.
                let secs = secs as i32;
                match (hard, soft) {
                    (Some(hard), Some(soft)) if all && secs >= 0 => updates.push((class, ObLimit { hard, soft, secs })),
                    _ => {
                        return Err("Error in hard, soft or soft_seconds setting in buffer limit configuration.".into())
                    }
                }
            }
            for (class, l) in updates {
                limits[class] = l;
            }
            Ok(Val::OutputLimits(limits))
        }
        Special::OomValues => {
            if args.len() != 3 {
                return Err("wrong number of arguments".into());
            }
            let mut out = [0i32; 3];
            for (slot, a) in out.iter_mut().zip(args) {
                match c_strtoll(a, 10) {
                    (v, true, _) if (-2000..=2000).contains(&v) => *slot = v as i32,
                    _ => return Err(
                        "Invalid oom-score-adj-values, elements must be between -2000 and 2000."
                            .into(),
                    ),
                }
            }
            Ok(Val::OomValues(out))
        }
        Special::Notify => {
            if args.len() != 1 {
                return Err("wrong number of arguments".into());
            }
            notify_string_to_flags(&args[0])
                .map(Val::Notify)
                .ok_or_else(|| "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".to_string())
        }
        Special::Bind => {
            if args.len() > BINDADDR_MAX {
                return Err("Too many bind addresses specified.".into());
            }
            if args.len() == 1 && args[0].is_empty() {
                return Ok(Val::Bind(Vec::new()));
            }
            Ok(Val::Bind(args.to_vec()))
        }
        Special::Replicaof => {
            if args.len() == 1 && args[0].is_empty() {
                // The table default: not a replica.
                return Ok(Val::Replicaof(None));
            }
            if args.len() != 2 {
                return Err("wrong number of arguments".into());
            }
            if args[0].eq_ignore_ascii_case("no") && args[1].eq_ignore_ascii_case("one") {
                return Ok(Val::Replicaof(None));
            }
            match c_strtoll(&args[1], 10) {
                (port, true, false) if (0..=65535).contains(&port) => {
                    Ok(Val::Replicaof(Some((args[0].clone(), port))))
                }
                _ => Err("Invalid master port".into()),
            }
        }
        Special::Percentiles => {
            if args.len() == 1 && args[0].is_empty() {
                return Ok(Val::Percentiles(Vec::new()));
            }
            let mut out = Vec::with_capacity(args.len());
            for a in args {
                let f = parse_f64(a.as_bytes())
                    .ok_or("Invalid latency-tracking-info-percentiles parameters")?;
                if !(0.0..=100.0).contains(&f) {
                    return Err("latency-tracking-info-percentiles parameters should sit between [0.0,100.0]".into());
                }
                out.push(f);
            }
            Ok(Val::Percentiles(out))
        }
        Special::ShutdownOnSig => {
            const ERR: &str =
                "argument(s) must be one of the following: default, save, nosave, now, force";
            let mut flags = 0u8;
            if args.is_empty() {
                return Err(ERR.into());
            }
            for a in args {
                if a.eq_ignore_ascii_case("default") {
                    continue;
                }
                match SHUTDOWN_FLAGS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(a))
                {
                    Some(i) => flags |= 1 << i,
                    None => return Err(ERR.into()),
                }
            }
            if flags & 3 == 3 {
                return Err("shutdown options SAVE and NOSAVE can't be used simultaneously".into());
            }
            Ok(Val::ShutdownFlags(flags))
        }
    }
}

pub(super) fn shutdown_flags_to_string(f: u8) -> String {
    if f == 0 {
        return "default".into();
    }
    let names: Vec<&str> = SHUTDOWN_FLAGS
        .iter()
        .enumerate()
        .filter(|(i, _)| f & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(" ")
}

// ---------------------------------------------------------------------------
// String validators (Redis's is_valid_fn callbacks)
// ---------------------------------------------------------------------------

/// Redis's `pathIsBaseName`: no '/' (and no '\' on Windows builds).
fn is_base_name(s: &str) -> bool {
    !s.contains('/')
}

pub(super) fn check_dbfilename(s: &str) -> Result<(), &'static str> {
    if is_base_name(s) {
        Ok(())
    } else {
        Err("dbfilename can't be a path, just a filename")
    }
}

pub(super) fn check_aof_filename(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("appendfilename can't be empty")
    } else if !is_base_name(s) {
        Err("appendfilename can't be a path, just a filename")
    } else {
        Ok(())
    }
}

pub(super) fn check_aof_dirname(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("appenddirname can't be empty")
    } else if !is_base_name(s) {
        Err("appenddirname can't be a path, just a dirname")
    } else {
        Ok(())
    }
}

pub(super) fn check_hostname(s: &str) -> Result<(), &'static str> {
    // NET_HOST_STR_LEN is 256.
    if s.len() >= 256 {
        return Err("Hostnames must be less than 256 characters");
    }
    if s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
    {
        Ok(())
    } else {
        Err("Hostnames may only contain alphanumeric characters, hyphens or dots")
    }
}

/// Redis's `validateProcTitleTemplate`: the template must expand (known
/// `{variables}`, `{{`/`}}` escapes) to something non-blank when the title
/// and the variables that can be empty are empty.
pub(super) fn check_proc_title(s: &str) -> Result<(), &'static str> {
    const ERR: &str = "template format is invalid or contains unknown variables";
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => {
                out.push('{');
                i += 2;
            }
            b'}' if b.get(i + 1) == Some(&b'}') => {
                out.push('}');
                i += 2;
            }
            b'}' => return Err(ERR),
            b'{' => {
                let close = b[i + 1..].iter().position(|&c| c == b'}').ok_or(ERR)? + i + 1;
                match &s[i + 1..close] {
                    "title" | "server-mode" | "unixsocket" | "config-file" => {}
                    "listen-addr" => out.push_str("*:6379"),
                    "port" => out.push_str("6379"),
                    "tls-port" => out.push('0'),
                    _ => return Err(ERR),
                }
                i = close + 1;
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    if out.trim_matches(' ').is_empty() {
        Err(ERR)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Number and flag helpers with C semantics
// ---------------------------------------------------------------------------

/// Redis's `memtoull`: digits followed by an optional unit among b, k, kb,
/// m, mb, g, gb (case-insensitive; k = 1000, kb = 1024). No sign, no
/// spaces; an empty digit string counts as 0. Too many digits saturate (as
/// strtoull does); a unit multiplication overflow is rejected (7.0.15
/// wrapped around instead).
pub(crate) fn memtoull(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let ndig = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let unit = s.get(ndig..)?.to_ascii_lowercase();
    let mul: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if ndig >= 128 {
        return None;
    }
    let mut val: u64 = 0;
    for &c in &b[..ndig] {
        val = val.saturating_mul(10).saturating_add(u64::from(c - b'0'));
    }
    val.checked_mul(mul)
}

/// C's `strtoll`: leading whitespace, optional sign, digits in `base`,
/// saturating on overflow. Returns (value, whole string consumed, overflow).
/// With no digits nothing is consumed, so "" counts as fully consumed 0,
/// just as `*endptr == '\0'` checks in Redis accept it.
pub(super) fn c_strtoll(s: &str, base: u32) -> (i64, bool, bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut acc: i128 = 0;
    let mut overflow = false;
    while i < b.len() {
        let Some(d) = (b[i] as char).to_digit(base) else {
            break;
        };
        acc = acc * i128::from(base) + i128::from(d);
        if acc > i128::from(i64::MAX) + 1 {
            overflow = true;
            acc = i128::from(i64::MAX) + 1;
        }
        i += 1;
    }
    if i == start {
        return (0, b.is_empty(), false);
    }
    let v = if neg { -acc } else { acc };
    let (v, of) = if v > i128::from(i64::MAX) {
        (i64::MAX, true)
    } else if v < i128::from(i64::MIN) {
        (i64::MIN, true)
    } else {
        (v as i64, false)
    };
    (v, i == b.len(), overflow || of)
}

/// Redis's `keyspaceEventsStringToFlags`.
pub(super) fn notify_string_to_flags(s: &str) -> Option<u32> {
    let mut flags = 0;
    for c in s.bytes() {
        flags |= match c {
            b'A' => NOTIFY_ALL,
            b'g' => NOTIFY_GENERIC,
            b'$' => NOTIFY_STRING,
            b'l' => NOTIFY_LIST,
            b's' => NOTIFY_SET,
            b'h' => NOTIFY_HASH,
            b'z' => NOTIFY_ZSET,
            b'x' => NOTIFY_EXPIRED,
            b'e' => NOTIFY_EVICTED,
            b'K' => NOTIFY_KEYSPACE,
            b'E' => NOTIFY_KEYEVENT,
            b't' => NOTIFY_STREAM,
            b'm' => NOTIFY_KEY_MISS,
            b'd' => NOTIFY_MODULE,
            b'n' => NOTIFY_NEW,
            _ => return None,
        };
    }
    Some(flags)
}

/// Redis's `keyspaceEventsFlagsToString` (note: with 'A' set, 'n' is not
/// shown even though it stays enabled, exactly as in Redis 7.0).
pub(super) fn notify_flags_to_string(flags: u32) -> String {
    let mut s = String::new();
    if flags & NOTIFY_ALL == NOTIFY_ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (NOTIFY_GENERIC, 'g'),
            (NOTIFY_STRING, '$'),
            (NOTIFY_LIST, 'l'),
            (NOTIFY_SET, 's'),
            (NOTIFY_HASH, 'h'),
            (NOTIFY_ZSET, 'z'),
            (NOTIFY_EXPIRED, 'x'),
            (NOTIFY_EVICTED, 'e'),
            (NOTIFY_STREAM, 't'),
            (NOTIFY_MODULE, 'd'),
            (NOTIFY_NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [
        (NOTIFY_KEYSPACE, 'K'),
        (NOTIFY_KEYEVENT, 'E'),
        (NOTIFY_KEY_MISS, 'm'),
    ] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Redis's `trimDoubleString` over a "%f" rendering.
pub(super) fn trim_double(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Redis's `sdscatrepr`: a double-quoted, escaped rendering that
/// `sdssplitargs` reads back verbatim.
pub(super) fn repr(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &c in s {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    out
}

/// `strerror(errno)` text of an I/O error (without Rust's " (os error N)").
pub(super) fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// sdssplitlen(value, " "): CONFIG SET splits multi-argument values on
/// every single space (so doubled spaces give empty arguments, as in
/// Redis); an empty value gives no arguments.
pub(super) fn split_spaces(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(' ').map(String::from).collect()
    }
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn trim_bytes<'a>(s: &'a [u8], set: &[u8]) -> &'a [u8] {
    let start = s.iter().position(|c| !set.contains(c)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !set.contains(c))
        .map(|i| i + 1)
        .unwrap_or(start);
    s.get(start..end.max(start)).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::*;
    use crate::config::Config;

    #[test]
    fn notify_flags_canonical() {
        let mut c = Config::default();
        // Pairs observed on redis 7.0.15.
        for (input, shown) in [
            ("", ""),
            ("A", "A"),
            ("Ag", "A"),
            ("KEA", "AKE"),
            ("Kx", "xK"),
            ("Elg", "glE"),
            ("gE$lshzxetdn", "AE"),
            ("AKEm", "AKEm"),
            ("An", "A"),
            ("mn", "nm"),
            ("xz", "zx"),
            ("g$lshzxetd", "A"),
            ("g$lshzxet", "g$lshzxet"),
            ("KE", "KE"),
        ] {
            set1(&mut c, "notify-keyspace-events", input).unwrap();
            assert_eq!(c.notify_keyspace_events(), shown, "{input}");
        }
        set1(&mut c, "notify-keyspace-events", "An").unwrap();
        assert_eq!(c.notify_keyspace_flags(), NOTIFY_ALL | NOTIFY_NEW);
    }

    #[test]
    fn helpers_follow_c_semantics() {
        assert_eq!(c_strtoll("", 10), (0, true, false));
        assert_eq!(c_strtoll(" ", 10), (0, false, false));
        assert_eq!(c_strtoll(" +12", 10), (12, true, false));
        assert_eq!(c_strtoll("-7x", 10), (-7, false, false));
        assert_eq!(c_strtoll("777", 8), (511, true, false));
        assert_eq!(
            c_strtoll("99999999999999999999", 10),
            (i64::MAX, true, true)
        );
        assert_eq!(memtoull("20000000000gb"), None);
        assert_eq!(memtoull("+1"), None);
        assert_eq!(repr(b"a\"b\\\n\x01\xc3"), "\"a\\\"b\\\\\\n\\x01\\xc3\"");
        assert_eq!(trim_double("99.900000"), "99.9");
        assert_eq!(trim_double("50.000000"), "50");
        assert_eq!(notify_string_to_flags("A?"), None);
    }

    #[test]
    fn octal_unixsocketperm() {
        let c = Config::load(&args(&["--unixsocketperm", "700"])).unwrap();
        assert_eq!(
            (c.value("unixsocketperm"), c.unixsocketperm()),
            (Some("700"), 0o700)
        );
        let e = Config::load(&args(&["--unixsocketperm", "1000"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("argument must be between 0 and 777 inclusive"),
            "{e}"
        );
        let e = Config::load(&args(&["--unixsocketperm", "9"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("argument couldn't be parsed as an octal number"),
            "{e}"
        );
    }
}
