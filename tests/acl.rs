//! ACL against the reference redis-server 7.0: users with passwords,
//! command and category rules, first-argument rules, key patterns with
//! read/write permissions, channel patterns and selectors give the same
//! ACL LIST / GETUSER / DRYRUN answers, the same refusals (at top level,
//! in MULTI, at EXEC after the rules changed, inside scripts), the same
//! ACL LOG and the same errors, step by step and for seeded random rule
//! sets; the aclfile ACL SAVE writes loads in redis-server and back.
//!
//! ACL LIST and GETUSER rebuild rule text from permission bits; Redis
//! lists single commands in its hash table's order, which changes from run
//! to run, so rule lists are compared as sets. Commands redis-server has
//! and anykv does not (CLUSTER, MODULE, ASKING...) are left out of what
//! Redis lists. Times and client descriptions in ACL LOG differ between
//! two servers by nature and are compared as present.

mod common;

use std::collections::HashSet;

use common::{start_anykv, start_anykv_with, start_reference, RespConn, Value};

/// Commands anykv has (what Redis names beyond them is dropped).
fn known_commands(c: &mut RespConn) -> HashSet<String> {
    let mut out = HashSet::new();
    if let Ok(Value::Array(v)) = c.cmd(&["COMMAND", "LIST"]) {
        for n in v {
            if let Value::Bulk(b) = n {
                out.insert(String::from_utf8_lossy(&b).to_lowercase());
            }
        }
    }
    // Subcommands ("config|get") count by their parent.
    out
}

/// A rule naming a command anykv does not have (`-cluster`,
/// `+module|list`).
fn unknown_rule(tok: &str, known: &HashSet<String>) -> bool {
    let Some(name) = tok.strip_prefix('+').or_else(|| tok.strip_prefix('-')) else {
        return false;
    };
    if name.starts_with('@') {
        return false;
    }
    let parent = name.split('|').next().unwrap_or(name);
    !known.contains(parent)
}

/// Rule text as a sorted set of its words, each `(selector)` apart (and
/// sorted likewise).
fn norm_rules(s: &str, known: &HashSet<String>) -> String {
    let mut top: Vec<&str> = Vec::new();
    let mut selectors: Vec<String> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for w in s.split(' ').filter(|w| !w.is_empty()) {
        let opens = w.starts_with('(');
        let closes = w.ends_with(')');
        let bare = w.trim_start_matches('(').trim_end_matches(')');
        if opens {
            current = Some(Vec::new());
        }
        if !bare.is_empty() && !unknown_rule(bare, known) {
            match current.as_mut() {
                Some(sel) => sel.push(bare),
                None => top.push(bare),
            }
        }
        if closes {
            if let Some(mut sel) = current.take() {
                sel.sort_unstable();
                selectors.push(format!("({})", sel.join(" ")));
            }
        }
    }
    top.sort_unstable();
    let mut out = top.join(" ");
    for s in selectors {
        out.push(' ');
        out.push_str(&s);
    }
    out
}

fn normalize(cmd: &[&str], v: Value, known: &HashSet<String>) -> Value {
    let sub = cmd
        .get(1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let is_acl = cmd[0].eq_ignore_ascii_case("acl");
    match (is_acl, sub.as_str(), v) {
        (true, "LIST", Value::Array(lines)) => Value::Array(
            lines
                .into_iter()
                .map(|l| match l {
                    Value::Bulk(b) => {
                        Value::Bulk(norm_rules(&String::from_utf8_lossy(&b), known).into_bytes())
                    }
                    other => other,
                })
                .collect(),
        ),
        (true, "GETUSER", v) => norm_maps(v, known),
        (true, "CAT", Value::Array(mut names)) if cmd.len() == 3 => {
            names.retain(|n| match n {
                Value::Bulk(b) => !unknown_rule(&format!("+{}", String::from_utf8_lossy(b)), known),
                _ => true,
            });
            names.sort();
            Value::Array(names)
        }
        (false, _, Value::Array(mut f)) if cmd[0].eq_ignore_ascii_case("hello") => {
            // Client ids differ between two servers.
            for i in (0..f.len()).step_by(2) {
                if matches!(&f[i], Value::Bulk(k) if k == b"id") && i + 1 < f.len() {
                    f[i + 1] = Value::Int(0);
                }
            }
            Value::Array(f)
        }
        (true, "GENPASS", Value::Bulk(b)) => {
            let hex = b
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            Value::Bulk(format!("{} hex digits, lowercase: {hex}", b.len()).into_bytes())
        }
        (true, "LOG", Value::Array(entries)) => Value::Array(
            entries
                .into_iter()
                .map(|e| match e {
                    Value::Array(mut f) => {
                        for i in (0..f.len()).step_by(2) {
                            if matches!(&f[i], Value::Bulk(k) if k == b"age-seconds")
                                && i + 1 < f.len()
                            {
                                f[i + 1] = Value::Bulk(b"(masked)".to_vec());
                            }
                            // The client's line differs (ids, addresses,
                            // ages) but for the command it names: the
                            // refused one, as Redis sets it first.
                            if matches!(&f[i], Value::Bulk(k) if k == b"client-info")
                                && i + 1 < f.len()
                            {
                                let cmd = match &f[i + 1] {
                                    Value::Bulk(line) => String::from_utf8_lossy(line)
                                        .split(' ')
                                        .find(|w| w.starts_with("cmd="))
                                        .unwrap_or("(no cmd=)")
                                        .to_string(),
                                    other => format!("{other:?}"),
                                };
                                f[i + 1] = Value::Bulk(cmd.into_bytes());
                            }
                        }
                        Value::Array(f)
                    }
                    other => other,
                })
                .collect(),
        ),
        (_, _, v) => v,
    }
}

/// GETUSER's maps: `commands` values as rule sets, selectors likewise.
fn norm_maps(v: Value, known: &HashSet<String>) -> Value {
    let Value::Array(items) = v else { return v };
    let mut out = Vec::with_capacity(items.len());
    let mut commands_next = false;
    for it in items {
        let it = match it {
            Value::Bulk(b) if commands_next => {
                Value::Bulk(norm_rules(&String::from_utf8_lossy(&b), known).into_bytes())
            }
            Value::Array(_) => norm_maps(it, known),
            other => other,
        };
        commands_next = matches!(&it, Value::Bulk(k) if k == b"commands");
        out.push(it);
    }
    Value::Array(out)
}

/// Connection `n`'s reply; a closed connection is a value too.
fn call(conns: &mut [RespConn], n: usize, args: &[&str]) -> Value {
    match conns[n].cmd(args) {
        Ok(v) => v,
        // (Closed: an end of file or a reset, as the timing has it.)
        Err(_) => Value::Error(b"(connection closed)".to_vec()),
    }
}

const SCRIPT: &[(usize, &[&str])] = &[
    (0, &["ACL", "WHOAMI"]),
    (0, &["ACL", "USERS"]),
    (0, &["ACL", "LIST"]),
    (0, &["ACL", "GETUSER", "default"]),
    (0, &["ACL", "GETUSER", "nosuch"]),
    (0, &["ACL", "CAT"]),
    (0, &["ACL", "CAT", "geo"]),
    (0, &["ACL", "CAT", "STRING"]),
    (0, &["ACL", "CAT", "dangerous"]),
    (0, &["ACL", "CAT", "nosuch"]),
    (0, &["ACL", "CAT", "a", "b"]),
    (0, &["ACL", "GENPASS"]),
    (0, &["ACL", "GENPASS", "5"]),
    (0, &["ACL", "GENPASS", "0"]),
    (0, &["ACL", "GENPASS", "4097"]),
    (0, &["ACL", "GENPASS", "x"]),
    (0, &["ACL", "HELP"]),
    (0, &["ACL", "NOSUCH"]),
    (0, &["ACL"]),
    (0, &["ACL", "WHOAMI", "x"]),
    (0, &["ACL", "SAVE"]),
    (0, &["ACL", "LOAD"]),
    // Rules, and Redis's errors for bad ones.
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">pw",
            "~app:*",
            "%R~ro:*",
            "%W~wo:*",
            "&chan*",
            "+@read",
            "-get",
            "+config|get",
            "+select|0",
            "(~sel*",
            "+set)",
        ],
    ),
    (0, &["ACL", "GETUSER", "alice"]),
    (0, &["ACL", "LIST"]),
    (0, &["ACL", "USERS"]),
    (0, &["ACL", "SETUSER", "x", "-select|0"]),
    (0, &["ACL", "SETUSER", "x", "+config|get|x"]),
    (0, &["ACL", "SETUSER", "x", "+debug|"]),
    (0, &["ACL", "SETUSER", "x", "+client|nosuch"]),
    (0, &["ACL", "SETUSER", "x", "+nosuch|x"]),
    (0, &["ACL", "SETUSER", "x", "+@nosuch"]),
    (0, &["ACL", "SETUSER", "x", "bogus"]),
    (0, &["ACL", "SETUSER", "x", "%X~a"]),
    (0, &["ACL", "SETUSER", "x", "%~a"]),
    (0, &["ACL", "SETUSER", "x", "("]),
    (0, &["ACL", "SETUSER", "x", "(+get"]),
    (0, &["ACL", "SETUSER", "x", "(nopass)"]),
    (0, &["ACL", "SETUSER", "x", "(>p)"]),
    (0, &["ACL", "SETUSER", "x", ">a", "<b"]),
    (0, &["ACL", "SETUSER", "x", "#abc"]),
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "x",
            "#5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
        ],
    ),
    (0, &["ACL", "SETUSER", "x", "~*", "~a"]),
    (0, &["ACL", "SETUSER", "x", "&*", "&a"]),
    (0, &["ACL", "SETUSER", "a b"]),
    (0, &["ACL", "SETUSER", "a\tb"]),
    (0, &["ACL", "SETUSER", "x", "~a\tb"]),
    (0, &["ACL", "SETUSER", "x", "&a\nb"]),
    (0, &["ACL", "SETUSER", "e1", ""]),
    (0, &["ACL", "SETUSER", "e1", "on", ""]),
    (0, &["ACL", "SETUSER", "e2", "(~x", "(~y", "+get)"]),
    (0, &["ACL", "GETUSER", "e2"]),
    (0, &["ACL", "SETUSER", "e3", "+select|ABC", "+select|abc"]),
    (0, &["ACL", "GETUSER", "e3"]),
    (0, &["ACL", "DELUSER", "e1", "e2", "e3"]),
    // Nothing was made by the refused rules.
    (0, &["ACL", "USERS"]),
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "x",
            "%R~a",
            "%W~a",
            "~b",
            "%RW~c",
            "&c1",
            "&c1",
            "allchannels",
            "clearselectors",
            "(+get ~k)",
            "( +set   ~x )",
        ],
    ),
    (0, &["ACL", "GETUSER", "x"]),
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "x",
            "clearselectors",
            "reset",
            "skip-sanitize-payload",
            "nopass",
            "on",
        ],
    ),
    (0, &["ACL", "GETUSER", "x"]),
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "x",
            "+@all",
            "-@dangerous",
            "+flushdb",
            "-client",
            "+client|list",
        ],
    ),
    (0, &["ACL", "LIST"]),
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "x",
            "-@all",
            "+@hash",
            "+@list",
            "-@write",
            "+lpush",
            "+acl|whoami",
        ],
    ),
    (0, &["ACL", "GETUSER", "x"]),
    // DRYRUN: commands, keys by read/write permission, channels.
    (
        0,
        &[
            "ACL",
            "SETUSER",
            "z",
            "on",
            "nopass",
            "+get",
            "+set",
            "+copy",
            "+publish",
            "+subscribe",
            "+psubscribe",
            "+del",
            "+exists",
            "+lmove",
            "+eval",
            "%R~r*",
            "%W~w*",
            "&ch",
        ],
    ),
    (0, &["ACL", "DRYRUN", "z", "get", "r1"]),
    (0, &["ACL", "DRYRUN", "z", "get", "w1"]),
    (0, &["ACL", "DRYRUN", "z", "set", "w1", "v"]),
    (0, &["ACL", "DRYRUN", "z", "set", "w1", "v", "get"]),
    (0, &["ACL", "DRYRUN", "z", "set", "r1", "v"]),
    (0, &["ACL", "DRYRUN", "z", "del", "r1"]),
    (0, &["ACL", "DRYRUN", "z", "del", "w1"]),
    (0, &["ACL", "DRYRUN", "z", "exists", "q1"]),
    (0, &["ACL", "DRYRUN", "z", "copy", "r1", "w1"]),
    (0, &["ACL", "DRYRUN", "z", "copy", "w1", "r1"]),
    (
        0,
        &["ACL", "DRYRUN", "z", "lmove", "r1", "w1", "left", "left"],
    ),
    (0, &["ACL", "DRYRUN", "z", "publish", "ch", "x"]),
    (0, &["ACL", "DRYRUN", "z", "publish", "ch2", "x"]),
    (0, &["ACL", "DRYRUN", "z", "subscribe", "ch", "ch2"]),
    (0, &["ACL", "DRYRUN", "z", "psubscribe", "c*"]),
    (0, &["ACL", "DRYRUN", "z", "eval", "return 1", "1", "w1"]),
    (0, &["ACL", "DRYRUN", "z", "hset", "r1", "f", "v"]),
    (0, &["ACL", "DRYRUN", "z", "auth", "a", "b"]),
    (0, &["ACL", "DRYRUN", "nosuch", "get", "a"]),
    (0, &["ACL", "DRYRUN", "z", "nosuch"]),
    (0, &["ACL", "DRYRUN", "z", "get"]),
    (0, &["ACL", "DRYRUN", "z", "client", "nosuch"]),
    (0, &["ACL", "DRYRUN", "alice", "select", "0"]),
    (0, &["ACL", "DRYRUN", "alice", "select", "1"]),
    (0, &["ACL", "DRYRUN", "alice", "config", "get", "x"]),
    (0, &["ACL", "DRYRUN", "alice", "config", "set", "x", "y"]),
    (0, &["ACL", "DRYRUN", "alice", "set", "app:1", "v"]),
    (0, &["ACL", "DRYRUN", "alice", "set", "sel1", "v"]),
    // Logged in as users: refusals at top level, in MULTI, at EXEC after
    // the rules changed, in scripts.
    (1, &["AUTH", "alice", "wrong"]),
    (1, &["AUTH", "nosuch", "pw"]),
    (1, &["AUTH", "alice", "pw"]),
    (1, &["ACL", "WHOAMI"]),
    (1, &["GET", "app:1"]),
    (1, &["HGET", "app:1", "f"]),
    (1, &["HGET", "other", "f"]),
    (1, &["SET", "sel1", "v"]),
    (1, &["SET", "app:1", "v"]),
    (1, &["SELECT", "0"]),
    (1, &["SELECT", "1"]),
    (1, &["CONFIG", "GET", "maxmemory"]),
    (1, &["CONFIG", "SET", "maxmemory", "0"]),
    // SORT's BY and GET need every key readable.
    (
        0,
        &[
            "ACL", "SETUSER", "sorter", "on", ">pw", "+sort", "+sort_ro", "+multi", "+exec",
            "~pub:*",
        ],
    ),
    (
        0,
        &["ACL", "SETUSER", "reader", "on", ">pw", "+sort_ro", "%R~*"],
    ),
    (0, &["RPUSH", "pub:list", "3", "1", "2"]),
    (3, &["AUTH", "sorter", "pw"]),
    (3, &["SORT_RO", "pub:list"]),
    (3, &["SORT_RO", "pub:list", "BY", "nosort"]),
    (3, &["SORT_RO", "pub:list", "BY", "w_*"]),
    (
        3,
        &["SORT_RO", "pub:list", "BY", "nosort", "GET", "secret:*"],
    ),
    (3, &["SORT", "pub:list", "GET", "#"]),
    (3, &["MULTI"]),
    (3, &["EXEC", "x"]),
    (3, &["AUTH", "reader", "pw"]),
    (3, &["SORT_RO", "pub:list", "BY", "w_*", "GET", "secret:*"]),
    (1, &["MULTI"]),
    (1, &["SET", "app:2", "v"]),
    (1, &["HGET", "app:1", "f"]),
    (1, &["EXEC"]),
    (2, &["AUTH", "z", "any"]),
    (2, &["MULTI"]),
    (2, &["SET", "w1", "v"]),
    (2, &["GET", "r1"]),
    (0, &["ACL", "SETUSER", "z", "-set", "resetkeys", "~r*"]),
    (2, &["EXEC"]),
    (2, &["EVAL", "return redis.call('set','r1','v')", "0"]),
    (2, &["EVAL", "return redis.call('get','zz')", "0"]),
    (2, &["EVAL", "return redis.call('publish','zz','m')", "0"]),
    (2, &["EVAL", "return redis.pcall('get','zz')", "0"]),
    (2, &["EVAL", "return redis.acl_check_cmd('get','zz')", "0"]),
    (2, &["EVAL", "return redis.acl_check_cmd('get','r1')", "0"]),
    (2, &["PUBLISH", "ch", "m"]),
    (2, &["PUBLISH", "zz", "m"]),
    (2, &["SUBSCRIBE", "ch", "zz"]),
    // AUTH is always allowed, whatever the user may run.
    (0, &["ACL", "SETUSER", "none", "on", ">pw", "-@all"]),
    (3, &["AUTH", "none", "pw"]),
    (3, &["PING"]),
    (3, &["AUTH", "alice", "pw"]),
    (3, &["ACL", "WHOAMI"]),
    (3, &["AUTH", "none", "pw"]),
    (3, &["HELLO", "2", "AUTH", "alice", "pw"]),
    (0, &["ACL", "LOG", "x"]),
    (0, &["ACL", "LOG", "-1"]),
    (0, &["ACL", "LOG", "3"]),
    (0, &["ACL", "LOG"]),
    (0, &["ACL", "LOG", "RESET"]),
    (0, &["ACL", "LOG"]),
    // Rules changed for a logged-in user take effect at once.
    (0, &["ACL", "SETUSER", "alice", "-@read"]),
    (1, &["GET", "app:1"]),
    (0, &["ACL", "SETUSER", "alice", "+get"]),
    (1, &["GET", "app:1"]),
    // DELUSER closes its connections.
    (0, &["ACL", "DELUSER", "default"]),
    (0, &["ACL", "DELUSER", "alice", "nosuch", "x"]),
    (1, &["PING"]),
    (0, &["ACL", "USERS"]),
    (0, &["ACL", "LOG"]),
];

#[test]
fn acl_matches_redis_step_by_step() {
    let redis = start_reference();
    let anykv = start_anykv(&common::anykv_bin());
    let mut r: Vec<RespConn> = (0..4).map(|_| redis.connect()).collect();
    let mut a: Vec<RespConn> = (0..4).map(|_| anykv.connect()).collect();
    let known = known_commands(&mut a[0]);
    assert!(known.contains("get") && !known.is_empty());
    let mut diffs = Vec::new();
    for (n, cmd) in SCRIPT {
        let rv = normalize(cmd, call(&mut r, *n, cmd), &known);
        let av = normalize(cmd, call(&mut a, *n, cmd), &known);
        if rv != av {
            diffs.push(format!(
                "conn {n} {cmd:?}\n  redis: {rv:?}\n  anykv: {av:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// A small seeded generator (no dependency for a test's randomness).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const RULES: &[&str] = &[
    "+@all",
    "-@all",
    "allcommands",
    "nocommands",
    "+@read",
    "-@read",
    "+@write",
    "-@write",
    "+@keyspace",
    "-@keyspace",
    "+@string",
    "-@string",
    "+@hash",
    "-@hash",
    "+@list",
    "-@list",
    "+@set",
    "-@set",
    "+@sortedset",
    "+@stream",
    "-@stream",
    "+@fast",
    "-@fast",
    "+@slow",
    "-@slow",
    "+@dangerous",
    "-@dangerous",
    "+@admin",
    "-@admin",
    "+@pubsub",
    "-@pubsub",
    "+@scripting",
    "+@connection",
    "-@connection",
    "+@transaction",
    "+@blocking",
    "-@blocking",
    "+@geo",
    "+@bitmap",
    "+@hyperloglog",
    "+get",
    "-get",
    "+set",
    "-set",
    "+hset",
    "-hset",
    "+client",
    "-client",
    "+client|list",
    "-client|list",
    "+config|get",
    "-config",
    "+config",
    "+select|0",
    "+select|1",
    "+select",
    "-select",
    "+debug|object",
    "+flushdb",
    "-flushall",
    "+xgroup|create",
    "-xinfo|stream",
    "+object|encoding",
    "+eval",
    "+publish",
    "+subscribe",
    "~*",
    "allkeys",
    "resetkeys",
    "~k*",
    "%R~r*",
    "%W~w*",
    "%RW~b*",
    "&*",
    "allchannels",
    "resetchannels",
    "&ch*",
    "&news",
    "(+get ~k*)",
    "(+@write %W~w*)",
    "clearselectors",
    "reset",
    "on",
    "off",
    "nopass",
    "resetpass",
    ">secret",
    "sanitize-payload",
    "skip-sanitize-payload",
];

const PROBES: &[&[&str]] = &[
    &["get", "k1"],
    &["get", "r1"],
    &["set", "w1", "v"],
    &["set", "k1", "v", "get"],
    &["hset", "b1", "f", "v"],
    &["client", "list"],
    &["client", "kill", "id", "1"],
    &["config", "get", "x"],
    &["config", "set", "x", "y"],
    &["select", "0"],
    &["select", "1"],
    &["debug", "object", "k"],
    &["flushall"],
    &["flushdb"],
    &["xgroup", "create", "k1", "g", "$"],
    &["xinfo", "stream", "k1"],
    &["object", "encoding", "k1"],
    &["publish", "news", "m"],
    &["publish", "ch1", "m"],
    &["subscribe", "ch1", "other"],
    &["eval", "return 1", "1", "w1"],
    &["copy", "r1", "w1"],
    &["lpush", "k1", "a"],
    &["blpop", "k1", "0"],
    &["multi"],
    &["ping"],
];

#[test]
fn random_rule_sets_describe_and_decide_as_redis() {
    let redis = start_reference();
    let anykv = start_anykv(&common::anykv_bin());
    let mut r = redis.connect();
    let mut a = anykv.connect();
    let known = known_commands(&mut a);
    let seed = std::env::var("ANYKV_ACL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_dac1_u64);
    let mut rng = Rng(seed | 1);
    let mut diffs = Vec::new();
    for round in 0..120 {
        let user = format!("u{}", round % 7);
        let mut cmd: Vec<String> = vec!["ACL".into(), "SETUSER".into(), user.clone()];
        for _ in 0..(1 + rng.next() % 6) {
            for w in rng.pick(RULES).split(' ') {
                cmd.push(w.to_string());
            }
        }
        let mut steps: Vec<Vec<String>> = vec![cmd];
        steps.push(vec!["ACL".into(), "LIST".into()]);
        steps.push(vec!["ACL".into(), "GETUSER".into(), user.clone()]);
        for _ in 0..4 {
            let p = PROBES[(rng.next() % PROBES.len() as u64) as usize];
            let mut d = vec!["ACL".to_string(), "DRYRUN".into(), user.clone()];
            d.extend(p.iter().map(|s| s.to_string()));
            steps.push(d);
        }
        for s in &steps {
            let args: Vec<&str> = s.iter().map(String::as_str).collect();
            let rv = normalize(&args, r.cmd(&args).expect("redis"), &known);
            let av = normalize(&args, a.cmd(&args).expect("anykv"), &known);
            if rv != av {
                diffs.push(format!(
                    "round {round} {args:?}\n  redis: {rv:?}\n  anykv: {av:?}"
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "seed {seed}: {} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// ACL SAVE writes an aclfile redis-server loads as it is, and one
/// redis-server saved loads in anykv: the same users either way; a
/// restart keeps them; a bad file changes nothing.
#[test]
fn aclfile_moves_between_redis_and_anykv() {
    let dir = std::env::temp_dir().join(format!("anykv-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ours = dir.join("anykv.acl");
    let theirs = dir.join("redis.acl");
    std::fs::write(&ours, "").expect("empty aclfile");
    std::fs::write(&theirs, "").expect("empty aclfile");
    let rules: &[&str] = &[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        "~app:*",
        "%R~shared:*",
        "&events:*",
        "+@read",
        "+@write",
        "-flushall",
        "-@dangerous",
        "+select|0",
        "(~cache:*",
        "+get",
        "+set)",
    ];
    let listed = |c: &mut RespConn, known: &HashSet<String>| {
        normalize(
            &["ACL", "LIST"],
            c.cmd(&["ACL", "LIST"]).expect("list"),
            known,
        )
    };
    // anykv saves; redis-server loads it.
    let ours_s = ours.display().to_string();
    let mut anykv = start_anykv_with(
        &common::anykv_bin(),
        &["--aclfile", &ours_s, "--appendonly", "no"],
    );
    let mut a = anykv.connect();
    let known = known_commands(&mut a);
    assert_eq!(
        a.cmd(rules).expect("setuser"),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        a.cmd(&["ACL", "SAVE"]).expect("save"),
        Value::Simple(b"OK".to_vec())
    );
    let saved = std::fs::read_to_string(&ours).expect("aclfile written");
    assert!(saved.contains("user app on #"), "{saved}");
    let anykv_list = listed(&mut a, &known);
    let theirs_s = theirs.display().to_string();
    std::fs::copy(&ours, &theirs).expect("copy");
    let redis = common::start_redis(&["--aclfile".to_string(), theirs_s.clone()]);
    let mut r = redis.connect();
    assert_eq!(
        listed(&mut r, &known),
        anykv_list,
        "redis-server loaded anykv's file"
    );
    // redis-server changes and saves; anykv loads it with ACL LOAD.
    r.cmd(&[
        "ACL", "SETUSER", "ops", "on", ">ops-pw", "+@admin", "~*", "&*",
    ])
    .expect("setuser");
    r.cmd(&["ACL", "DELUSER", "app"]).expect("deluser");
    assert_eq!(
        r.cmd(&["ACL", "SAVE"]).expect("save"),
        Value::Simple(b"OK".to_vec())
    );
    std::fs::copy(&theirs, &ours).expect("copy back");
    let mut app = anykv.connect();
    assert_eq!(
        app.cmd(&["AUTH", "app", "pw"]).expect("auth"),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        a.cmd(&["ACL", "LOAD"]).expect("load"),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(listed(&mut a, &known), listed(&mut r, &known));
    // Its users replaced, app's connection was closed.
    assert!(
        app.cmd(&["PING"]).is_err(),
        "app's connection outlived its user"
    );
    // A bad file changes nothing, and says where it is wrong in Redis's
    // words (the same file on both, paths aside).
    let bad = "user ok on nopass\nuser bad on +nosuch +get -nosuch2 <nope >x <nope2\n\
               not a user line\nuser ok off\nuser sel (~a +get\n  user q on \"\" ~x\n\n";
    let good = std::fs::read(&theirs).expect("redis's saved file");
    std::fs::write(&ours, bad).expect("write");
    std::fs::write(&theirs, bad).expect("write");
    let before = listed(&mut a, &known);
    let load_error = |c: &mut RespConn, path: &str| match c.cmd(&["ACL", "LOAD"]).expect("load") {
        Value::Error(e) => String::from_utf8_lossy(&e).replace(path, "FILE"),
        other => panic!("ACL LOAD of a bad file: {other:?}"),
    };
    let ours_e = load_error(&mut a, &ours_s);
    assert!(
        ours_e.contains("FILE:2: Error in applying operation '+nosuch'"),
        "{ours_e}"
    );
    assert_eq!(ours_e, load_error(&mut r, &theirs_s));
    std::fs::write(&theirs, &good).expect("restore redis's file");
    assert_eq!(listed(&mut a, &known), before);
    // A restart loads the file; a bad one stops the start.
    std::fs::copy(&theirs, &ours).expect("copy");
    drop(a);
    drop(anykv);
    anykv = start_anykv_with(
        &common::anykv_bin(),
        &["--aclfile", &ours_s, "--appendonly", "no"],
    );
    let mut a = anykv.connect();
    assert_eq!(
        a.cmd(&["AUTH", "ops", "ops-pw"]).expect("auth"),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(listed(&mut a, &known), listed(&mut r, &known));
    drop(a);
    let _ = anykv.exited();
    let _ = std::fs::remove_dir_all(&dir);
}

/// In RESP3, GETUSER is a map with a set of flags, ACL LOG entries are
/// maps with a double `age-seconds`: the same types as redis-server's.
#[test]
fn acl_replies_have_redis_resp3_types() {
    use common::Conn;
    let redis = start_reference();
    let anykv = start_anykv(&common::anykv_bin());
    let steps: &[&[&str]] = &[
        &[
            "ACL",
            "SETUSER",
            "t3",
            "on",
            ">pw",
            "~k*",
            "+get",
            "(~s* +set)",
        ],
        &["ACL", "GETUSER", "t3"],
        &["ACL", "GETUSER", "nosuch"],
        &["AUTH", "t3", "pw"],
        &["GET", "other"],
        &["AUTH", "t3", "wrong"],
        &["AUTH", "default", "x"],
        &["ACL", "LOG", "2"],
        &["ACL", "CAT"],
        &["ACL", "DRYRUN", "t3", "get", "k1"],
        &["ACL", "DRYRUN", "t3", "get", "x"],
        &["ACL", "USERS"],
        &["ACL", "WHOAMI"],
    ];
    let mut r = RespConn::connect_resp3(redis.port).expect("resp3");
    let mut a = RespConn::connect_resp3(anykv.port).expect("resp3");
    for s in steps {
        let args: Vec<Vec<u8>> = s.iter().map(|x| x.as_bytes().to_vec()).collect();
        r.call(&args).expect("redis");
        a.call(&args).expect("anykv");
        assert_eq!(a.shape(), r.shape(), "{s:?}");
        // (The shapes say something: a set of flags, a double age.)
        let shape = r.shape().unwrap_or_default();
        if s[1] == "GETUSER" && s[2] == "t3" {
            assert!(shape.contains('%') && shape.contains('~'), "{shape}");
        }
        if s[1] == "LOG" {
            assert!(shape.contains(','), "{shape}");
        }
    }
}

/// A database's users travel with it: made on the primary (n1, iad), they
/// reach its replica's node (n2, cdg) through the replication stream, with
/// their restrictions; a change sent to the replica's node is made on the
/// primary and comes back; a deletion reaches the replica and closes its
/// connections there. Through the node holding no copy (n3, syd), the
/// users log in (checked on the primary, a refusal in its ACL LOG) and
/// their requests are checked against the primary's rules as they are
/// now; the default user narrowed or switched off holds there too.
#[test]
fn a_databases_users_follow_it_to_its_replicas() {
    const ADMIN: &str = "acl-admin-token";
    const TOKEN: &str = "acl-database-token-0123456789";
    let w = common::three_regions("acl-nodes", 66, 23700, ADMIN, TOKEN);
    let placed = common::placed_tenant(&w, 1);
    assert_eq!(placed["primary"], "n1", "{placed}");
    let n1 = w.node("n1").expect("n1").clone();
    let n2 = w.node("n2").expect("n2").clone();
    let mut p = common::shop_login(n1.resp, TOKEN, "the primary serves", |c| {
        matches!(c.cmd(&["SET", "pub:1", "hello"]), Ok(Value::Simple(_)))
    });
    let ok = Value::Simple(b"OK".to_vec());
    assert_eq!(
        p.cmd(&[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~pub:*",
            "+@read"
        ])
        .expect("setuser"),
        ok
    );
    assert_eq!(
        p.cmd(&["ACL", "SETUSER", "default", "-flushall"])
            .expect("setuser"),
        ok
    );
    // On the replica's node, once the stream has brought them.
    let mut r = common::poll_every(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(30),
        "the user on the replica's node",
        || {
            let mut c = RespConn::connect_addr(n2.resp).ok()?;
            (c.cmd(&["AUTH", "shop.reader", "reader-pw"]).ok()? == Value::Simple(b"OK".to_vec()))
                .then_some(c)
        },
    );
    assert_eq!(
        r.cmd(&["GET", "pub:1"]).expect("get"),
        Value::Bulk(b"hello".to_vec())
    );
    let denied = |v: Value| matches!(&v, Value::Error(e) if e.starts_with(b"NOPERM"));
    assert!(denied(r.cmd(&["GET", "secret"]).expect("get")));
    assert!(denied(r.cmd(&["SET", "pub:2", "x"]).expect("set")));
    let mut d2 = common::shop_login(n2.resp, TOKEN, "the replica serves", |_| true);
    assert!(
        denied(d2.cmd(&["FLUSHALL"]).expect("flushall")),
        "the narrowed default user on the replica's node"
    );
    // A change made through the replica's node is the primary's.
    assert_eq!(
        d2.cmd(&["ACL", "SETUSER", "writer", "on", ">w-pw", "~w:*", "+@write"])
            .expect("setuser"),
        ok
    );
    let getuser = |c: &mut RespConn, name: &str| c.cmd(&["ACL", "GETUSER", name]).expect("getuser");
    assert_ne!(getuser(&mut p, "writer"), Value::Nil, "made on the primary");
    common::wait_for(
        "the change back on the replica's node",
        std::time::Duration::from_secs(30),
        || getuser(&mut d2, "writer") != Value::Nil,
    );
    assert_eq!(getuser(&mut d2, "writer"), getuser(&mut p, "writer"));
    assert_eq!(
        d2.cmd(&["ACL", "LIST"]).expect("list"),
        p.cmd(&["ACL", "LIST"]).expect("list")
    );
    // Through n3 (syd), which holds no copy of the database: logins are
    // checked on the primary, and requests against its rules as they are.
    let n3 = w.node("n3").expect("n3").clone();
    let mut d3 = common::shop_login(n3.resp, TOKEN, "n3 routes the database", |c| {
        c.cmd(&["GET", "pub:1"]).ok() == Some(Value::Bulk(b"hello".to_vec()))
    });
    assert!(
        denied(d3.cmd(&["FLUSHALL"]).expect("flushall")),
        "the narrowed default user on a node without a copy"
    );
    // A blocking XREADGROUP, BLOCK before GROUP, waits on a stream of its
    // own past the shared stream's 5 s bound, and is served.
    assert_eq!(
        d3.cmd(&["XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM"])
            .expect("xgroup"),
        ok
    );
    let adder = {
        let addr = n1.resp;
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5_500));
            let mut c = common::shop_login(addr, TOKEN, "the primary", |_| true);
            c.cmd(&["XADD", "jobs", "*", "job", "1"]).expect("xadd")
        })
    };
    let served = d3
        .cmd(&[
            "XREADGROUP",
            "BLOCK",
            "8000",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "jobs",
            ">",
        ])
        .expect("xreadgroup");
    let _ = adder.join();
    assert!(
        format!("{served:?}").contains("job"),
        "served after 5.5 s: {served:?}"
    );
    // A login checked on the primary under CLIENT REPLY SKIP: its reply
    // is skipped, the next command's is not.
    let mut sk = common::shop_login(n3.resp, TOKEN, "n3", |_| true);
    sk.send_all(&[
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["AUTH", "shop.reader", "reader-pw"],
        vec!["GET", "pub:1"],
    ])
    .expect("send");
    assert_eq!(
        sk.read_reply().expect("reply"),
        Value::Bulk(b"hello".to_vec()),
        "GET's reply, the AUTH's skipped"
    );
    let wrongpass =
        Value::Error(b"WRONGPASS invalid username-password pair or user is disabled.".to_vec());
    let mut far = RespConn::connect_addr(n3.resp).expect("n3");
    assert_eq!(
        far.cmd(&["AUTH", "shop.reader", "not-the-password"])
            .expect("auth"),
        wrongpass
    );
    let logged = p.cmd(&["ACL", "LOG", "1"]).expect("acl log");
    let field = |entry: &Value, name: &str| -> Option<Value> {
        let Value::Array(kv) = entry else { return None };
        kv.chunks(2)
            .find(|p| p[0] == Value::Bulk(name.as_bytes().to_vec()))
            .map(|p| p[1].clone())
    };
    let Value::Array(entries) = &logged else {
        panic!("ACL LOG: {logged:?}")
    };
    assert_eq!(
        (field(&entries[0], "reason"), field(&entries[0], "username")),
        (
            Some(Value::Bulk(b"auth".to_vec())),
            Some(Value::Bulk(b"reader".to_vec()))
        ),
        "the refused login is in the primary's ACL LOG: {logged:?}"
    );
    // It names the client's own address (its connection to n3), not the
    // link's.
    let Some(Value::Bulk(info)) = field(&entries[0], "client-info") else {
        panic!("client-info: {logged:?}")
    };
    let addr = |line: &[u8]| {
        String::from_utf8_lossy(line)
            .split(' ')
            .find(|f| f.starts_with("addr="))
            .map(str::to_string)
    };
    assert_eq!(
        far.cmd(&["AUTH", "shop.reader", "reader-pw"])
            .expect("auth"),
        ok
    );
    assert_eq!(
        addr(&info),
        Some(format!("addr={}", far.local_addr())),
        "the client's address"
    );
    assert_eq!(
        far.cmd(&["GET", "pub:1"]).expect("get"),
        Value::Bulk(b"hello".to_vec())
    );
    assert!(denied(far.cmd(&["GET", "secret"]).expect("get")));
    assert!(denied(far.cmd(&["SET", "pub:2", "x"]).expect("set")));
    // A refusal n3 makes itself (PING runs there, and `+@read` does not
    // allow it) is in the database's ACL LOG, the primary's, with the
    // client's address.
    assert!(denied(far.cmd(&["PING"]).expect("ping")));
    common::wait_for(
        "n3's refusal of PING in the primary's ACL LOG",
        std::time::Duration::from_secs(30),
        || {
            let logged = p.cmd(&["ACL", "LOG", "1"]).expect("acl log");
            let Value::Array(entries) = &logged else {
                return false;
            };
            entries.first().is_some_and(|e| {
                field(e, "reason") == Some(Value::Bulk(b"command".to_vec()))
                    && field(e, "object") == Some(Value::Bulk(b"ping".to_vec()))
                    && field(e, "username") == Some(Value::Bulk(b"reader".to_vec()))
                    && matches!(field(e, "client-info"), Some(Value::Bulk(i))
                        if addr(&i) == Some(format!("addr={}", far.local_addr())))
            })
        },
    );
    // A right given on the primary holds on n3 at once, and so does one
    // taken away.
    assert_eq!(
        p.cmd(&["ACL", "SETUSER", "reader", "+set"])
            .expect("setuser"),
        ok
    );
    assert_eq!(far.cmd(&["SET", "pub:2", "x"]).expect("set"), ok);
    assert_eq!(
        p.cmd(&["ACL", "SETUSER", "reader", "-set"])
            .expect("setuser"),
        ok
    );
    assert!(denied(far.cmd(&["SET", "pub:3", "x"]).expect("set")));
    // The default user switched off: its tokens no longer log in on n3.
    assert_eq!(
        p.cmd(&["ACL", "SETUSER", "default", "off"])
            .expect("setuser"),
        ok
    );
    let mut off = RespConn::connect_addr(n3.resp).expect("n3");
    assert_eq!(off.cmd(&["AUTH", TOKEN]).expect("auth"), wrongpass);
    assert_eq!(
        p.cmd(&["ACL", "SETUSER", "default", "on"])
            .expect("setuser"),
        ok
    );
    assert_eq!(off.cmd(&["AUTH", TOKEN]).expect("auth"), ok);
    // A script's own NOUSER error, run for n3 by a copy, is a reply like
    // any other: only the copy's refusal of a deleted user closes a
    // connection.
    assert_eq!(
        off.cmd(&["EVAL", "return redis.error_reply('NOUSER made up')", "0"])
            .expect("eval"),
        Value::Error(b"NOUSER made up".to_vec())
    );
    assert_eq!(
        off.cmd(&["PING"]).expect("the connection is still open"),
        Value::Simple(b"PONG".to_vec())
    );
    // A deletion on the primary closes the user's connections there too,
    // and on n3 at its next request there.
    assert_eq!(
        p.cmd(&["ACL", "DELUSER", "reader"]).expect("deluser"),
        Value::Int(1)
    );
    common::wait_for(
        "the deleted user's connection closed",
        std::time::Duration::from_secs(30),
        || r.cmd(&["PING"]).is_err(),
    );
    // (A read goes to the nearest copy, which has the deletion once the
    // stream brought it.)
    common::wait_for(
        "the deleted user's connection on n3 closed",
        std::time::Duration::from_secs(30),
        || far.cmd(&["GET", "pub:1"]).is_err(),
    );
    assert_eq!(
        RespConn::connect_addr(n3.resp)
            .expect("n3")
            .cmd(&["AUTH", "shop.reader", "reader-pw"])
            .expect("auth"),
        wrongpass
    );
}
