//! COMMAND and its subcommands, generated from the one command table, plus
//! the HELP reply shared by container commands.

use super::table::{registry, Registered};
use super::{client::subcommand_syntax_error, Ctx};
use crate::util::glob_match;

/// Redis's `addReplyHelp`: a header, the lines, and the HELP entry
/// ("Prints this help." in 7.0.15, for every container command).
pub fn reply_help(ctx: &mut Ctx, name: &str, lines: &[&str]) {
    reply_help_ending(ctx, name, lines, "    Prints this help.")
}

/// The same with the HELP entry's own words.
pub fn reply_help_ending(ctx: &mut Ctx, name: &str, lines: &[&str], last: &str) {
    ctx.out.array(lines.len() + 3);
    ctx.out.simple(&format!(
        "{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    ));
    for l in lines {
        ctx.out.simple(l);
    }
    ctx.out.simple("HELP");
    ctx.out.simple(last);
}

/// Containers reached without a known subcommand (cannot normally happen:
/// the dispatcher answers arity and unknown-subcommand errors first).
pub fn container_help(ctx: &mut Ctx) {
    subcommand_syntax_error(ctx)
}

fn reply_info(ctx: &mut Ctx, r: &Registered) {
    let spec = r.spec;
    let reg = registry();
    ctx.out.array(10);
    ctx.out.bulk(r.fullname.as_bytes());
    ctx.out.int(spec.arity as i64);
    // "protected" and "may_replicate" are internal: redis-server 7.0.15
    // reports neither (its CMD_PROTECTED and CMD_MAY_REPLICATE).
    let flags: Vec<&str> = spec
        .flags
        .split(' ')
        .filter(|f| !f.is_empty() && *f != "protected" && *f != "may_replicate")
        .collect();
    ctx.out.set(flags.len());
    for f in flags {
        ctx.out.simple(f);
    }
    ctx.out.int(spec.first_key as i64);
    ctx.out.int(spec.last_key as i64);
    ctx.out.int(spec.step as i64);
    let cats: Vec<&str> = spec.acl.split(' ').filter(|f| !f.is_empty()).collect();
    ctx.out.set(cats.len());
    for c in cats {
        ctx.out.simple(c);
    }
    ctx.out.set(0); // tips
    ctx.out.array(0); // key specs: see docs/COMPATIBILITY.md
    let subs: Vec<&Registered> = reg.subcommands(r.id).collect();
    ctx.out.array(subs.len());
    for s in subs {
        reply_info(ctx, s);
    }
}

/// COMMAND with no arguments: every command's info.
pub fn all(ctx: &mut Ctx) {
    let reg = registry();
    let top: Vec<&Registered> = reg.top_level().collect();
    ctx.out.array(top.len());
    for r in top {
        reply_info(ctx, r);
    }
}

pub fn count(ctx: &mut Ctx) {
    ctx.out.int(registry().top_level().count() as i64);
}

pub fn info(ctx: &mut Ctx) {
    if ctx.args.len() == 2 {
        return all(ctx);
    }
    let reg = registry();
    ctx.out.array(ctx.args.len() - 2);
    for i in 2..ctx.args.len() {
        match reg.by_fullname(ctx.args[i]) {
            Some(r) => reply_info(ctx, r),
            None => ctx.out.null_array(),
        }
    }
}

fn reply_docs(ctx: &mut Ctx, r: &Registered) {
    let reg = registry();
    let subs: Vec<&Registered> = reg.subcommands(r.id).collect();
    ctx.out.map(3 + usize::from(!subs.is_empty()));
    ctx.out.bulk(b"summary");
    ctx.out.bulk(r.spec.summary.as_bytes());
    ctx.out.bulk(b"since");
    ctx.out.bulk(r.spec.since.as_bytes());
    ctx.out.bulk(b"group");
    ctx.out.bulk(r.spec.group.as_bytes());
    if !subs.is_empty() {
        ctx.out.bulk(b"subcommands");
        ctx.out.map(subs.len());
        for s in subs {
            ctx.out.bulk(s.fullname.as_bytes());
            reply_docs(ctx, s);
        }
    }
}

pub fn docs(ctx: &mut Ctx) {
    let reg = registry();
    let wanted: Vec<&Registered> = if ctx.args.len() == 2 {
        reg.top_level().collect()
    } else {
        (2..ctx.args.len())
            .filter_map(|i| reg.by_fullname(ctx.args[i]))
            .collect()
    };
    ctx.out.map(wanted.len());
    for r in wanted {
        ctx.out.bulk(r.fullname.as_bytes());
        reply_docs(ctx, r);
    }
}

pub fn list(ctx: &mut Ctx) {
    let reg = registry();
    let filter: Option<(Vec<u8>, Vec<u8>)> = match ctx.args.len() {
        2 => None,
        5 if ctx.args[2].eq_ignore_ascii_case(b"filterby") => {
            Some((ctx.args[3].to_ascii_lowercase(), ctx.args[4].to_vec()))
        }
        _ => return ctx.syntax_error(),
    };
    let names: Vec<&str> = reg
        .all
        .iter()
        .filter(|r| match &filter {
            None => true,
            Some((k, v)) if k == b"aclcat" => {
                let want = String::from_utf8_lossy(v).to_ascii_lowercase();
                r.spec
                    .acl
                    .split(' ')
                    .any(|c| c.strip_prefix('@') == Some(want.as_str()))
            }
            Some((k, v)) if k == b"pattern" => glob_match(v, r.fullname.as_bytes(), true),
            Some((k, _)) if k == b"module" => false,
            Some(_) => false,
        })
        .map(|r| r.fullname.as_str())
        .collect();
    if let Some((k, _)) = &filter {
        if !matches!(&k[..], b"aclcat" | b"pattern" | b"module") {
            return ctx.syntax_error();
        }
    }
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

/// Key positions of a full command line: the table's first/last/step, plus
/// the keys of "movablekeys" commands found from their arguments (numkeys,
/// STORE destinations), as Redis's getkeys procedures do. Used by COMMAND
/// GETKEYS, ACL key checks, and WATCH/blocking wake-ups from logged effects.
pub fn key_positions(spec: &super::CommandSpec, args: &[&[u8]]) -> Vec<usize> {
    let argc = args.len();
    let numkeys_at = |i: usize, first: usize| -> Vec<usize> {
        let n = args
            .get(i)
            .and_then(|a| crate::util::parse_i64(a))
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(0);
        // More keys than arguments: none (Redis's getkeys procs refuse
        // it), and no loop to 2^63.
        if first.saturating_add(n) > argc {
            return Vec::new();
        }
        (first..first + n).collect()
    };
    if spec.has_flag("movablekeys") {
        return match spec.name {
            "lmpop" | "zmpop" | "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" => {
                numkeys_at(1, 2)
            }
            "blmpop" | "bzmpop" => numkeys_at(2, 3),
            // Scripts' declared keys.
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
                numkeys_at(2, 3)
            }
            "zunionstore" | "zinterstore" | "zdiffstore" => {
                // No keys at all when the count is wrong (the command
                // will refuse it), as Redis's getkeys procedure.
                let sources = numkeys_at(2, 3);
                if sources.is_empty() {
                    return Vec::new();
                }
                let mut v = vec![1];
                v.extend(sources);
                v
            }
            "georadius" | "georadiusbymember" => {
                // Redis 7.0's key specs: the last STORE's key, then the
                // last STOREDIST's (each searched from the end).
                let mut v = vec![1];
                for kw in [&b"store"[..], b"storedist"] {
                    let found = (2..argc.saturating_sub(1))
                        .rev()
                        .find(|&i| args[i].eq_ignore_ascii_case(kw));
                    v.extend(found.map(|i| i + 1));
                }
                v.retain(|&k| k < argc);
                v
            }
            "sort" | "sort_ro" => {
                // Redis's sortGetKeys: options' arguments skipped, and the
                // last STORE is the one SORT stores into.
                let mut v = vec![1];
                let mut store = None;
                let mut i = 2;
                while i < argc {
                    let a = args[i];
                    if a.eq_ignore_ascii_case(b"limit") {
                        i += 2;
                    } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
                        i += 1;
                    } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argc {
                        store = Some(i + 1);
                    }
                    i += 1;
                }
                v.extend(store);
                v.retain(|&k| k < argc);
                v
            }
            "migrate" => {
                // Redis's migrateGetKeys: the key at 3, or (with an empty
                // one) every argument after KEYS; options' values skipped.
                let mut i = 6;
                while i < argc {
                    let a = args[i];
                    if a.eq_ignore_ascii_case(b"keys") {
                        if !args[3].is_empty() {
                            return Vec::new();
                        }
                        return (i + 1..argc).collect();
                    }
                    if a.eq_ignore_ascii_case(b"auth") {
                        i += 1;
                    } else if a.eq_ignore_ascii_case(b"auth2") {
                        i += 2;
                    }
                    i += 1;
                }
                vec![3]
            }
            "xread" | "xreadgroup" => {
                // Redis 7.0's key spec: after the first STREAMS, half of
                // what follows (the other half are ids).
                match (1..argc).find(|&i| args[i].eq_ignore_ascii_case(b"streams")) {
                    Some(s) => {
                        let n = (argc - s - 1) / 2;
                        (s + 1..s + 1 + n).collect()
                    }
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
    }
    if spec.first_key <= 0 {
        return Vec::new();
    }
    let first = spec.first_key as usize;
    let last = if spec.last_key < 0 {
        (argc as i64 + spec.last_key as i64).max(0) as usize
    } else {
        (spec.last_key as usize).min(argc.saturating_sub(1))
    };
    let step = spec.step.max(1) as usize;
    (first..=last).step_by(step).filter(|&i| i < argc).collect()
}

pub fn getkeys(ctx: &mut Ctx) {
    let Some((_, keys)) = keys_of_command(ctx) else {
        return;
    };
    ctx.out.array(keys.len());
    for k in keys {
        ctx.out.bulk(ctx.args[2 + k]);
    }
}

/// `COMMAND GETKEYSANDFLAGS`: each key with its key-spec flags (a set in
/// RESP3, as Redis writes command flags).
pub fn getkeysandflags(ctx: &mut Ctx) {
    let Some((r, keys)) = keys_of_command(ctx) else {
        return;
    };
    let cmdargs = &ctx.args[2..];
    let flagged = crate::acl::keys::keys_with_flags(r, cmdargs);
    ctx.out.array(keys.len());
    for k in keys {
        let flags = flagged
            .iter()
            .find(|(i, _)| *i == k)
            .map_or("", |(_, f)| *f);
        let words: Vec<&str> = flags.split(' ').filter(|w| !w.is_empty()).collect();
        ctx.out.array(2);
        ctx.out.bulk(cmdargs[k]);
        ctx.out.set(words.len());
        for w in words {
            ctx.out.simple(w);
        }
    }
}

/// The command named after `COMMAND GETKEYS[ANDFLAGS]` and the positions
/// of its keys in `ctx.args[2..]`, or None after Redis's error reply.
fn keys_of_command(ctx: &mut Ctx) -> Option<(&'static Registered, Vec<usize>)> {
    let cmdargs = &ctx.args[2..];
    let r = match super::lookup(cmdargs) {
        super::Lookup::Found(r) => r,
        _ => {
            ctx.err("Invalid command specified");
            return None;
        }
    };
    // (Redis's order: whether the command takes keys at all, its arity,
    // then the keys these arguments name: possibly none, EVAL with 0.)
    if r.spec.first_key <= 0 && !r.spec.has_flag("movablekeys") {
        ctx.err("The command has no key arguments");
        return None;
    }
    let a = r.spec.arity;
    if (a > 0 && a as usize != cmdargs.len()) || (cmdargs.len() as i64) < -(a as i64) {
        ctx.err("Invalid number of arguments specified for command");
        return None;
    }
    let keys = key_positions(r.spec, cmdargs);
    // None found: fine for commands whose keys are optional (EVAL with
    // 0), an error for the others (a numkeys past the arguments).
    if keys.is_empty() && !r.spec.has_flag("no_mandatory_keys") {
        ctx.err("Invalid arguments specified for command");
        return None;
    }
    Some((r, keys))
}

pub fn help(ctx: &mut Ctx) {
    reply_help(
        ctx,
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "GETKEYSANDFLAGS <full-command>",
            "    Return the keys and the access flags from a full Redis command.",
        ],
    );
}
