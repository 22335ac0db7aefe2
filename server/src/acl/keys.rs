//! Which arguments of a command are keys, and what the command does to
//! each: what ACL key permissions (`%R~`, `%W~`) are checked against.
//!
//! Redis 7.0 answers both with "key specs" (where to start looking, how to
//! find the keys, and flags such as `RO access` or `OW update`); they are
//! generated from redis-server into [`super::keyspecs`] and evaluated here
//! the way Redis's `getKeysUsingKeySpecs` does. Commands whose specs cannot
//! say it alone (flags that depend on the arguments, as SET's `GET`, or
//! incomplete specs, as SORT's `STORE`) are answered as Redis's own
//! `getkeys` procedures answer them.

use crate::cmd::table::Registered;

/// One key spec, as COMMAND INFO shows it.
#[derive(Debug)]
pub struct KeySpec {
    /// Space-separated flags (`RW access update`).
    pub flags: &'static str,
    pub begin: Begin,
    pub find: Find,
}

/// Where the search for keys starts.
#[derive(Debug)]
pub enum Begin {
    /// At this argument.
    Index(i32),
    /// After this keyword, searched from `startfrom` (from the end when
    /// negative).
    Keyword(&'static str, i32),
    Unknown,
}

/// How keys are found from where the search begins.
#[derive(Debug)]
pub enum Find {
    /// Up to `last` (relative to the start; from the end when negative),
    /// every `step`; `limit` splits what remains (XREAD's STREAMS).
    Range {
        last: i32,
        step: i32,
        limit: i32,
    },
    /// A count at `idx`, keys from `first`, every `step`.
    Keynum {
        idx: i32,
        first: i32,
        step: i32,
    },
    Unknown,
}

/// What a command does to one key, for ACL checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The command reads the key's value (Redis's `access` flag).
    pub read: bool,
    /// It inserts, updates or deletes (`insert`/`update`/`delete`).
    pub write: bool,
}

impl Access {
    fn of_flags(flags: &str) -> Access {
        let has = |f: &str| flags.split(' ').any(|x| x == f);
        Access {
            read: has("access"),
            write: has("insert") || has("update") || has("delete"),
        }
    }
    #[cfg(test)]
    const RO_ACCESS: Access = Access {
        read: true,
        write: false,
    };
    #[cfg(test)]
    const OW_UPDATE: Access = Access {
        read: false,
        write: true,
    };
    #[cfg(test)]
    const RW: Access = Access {
        read: true,
        write: true,
    };
}

/// The command's key specs (none for commands without keys).
pub fn specs_of(fullname: &str) -> &'static [KeySpec] {
    let table = super::keyspecs::KEY_SPECS;
    match table.binary_search_by(|(n, _)| (*n).cmp(fullname)) {
        Ok(i) => table[i].1,
        Err(_) => &[],
    }
}

/// The keys among `args` (the command's name first) and what the command
/// does to each, as Redis's `getKeysFromCommandWithSpecs`.
pub fn keys_with_access(r: &Registered, args: &[&[u8]]) -> Vec<(usize, Access)> {
    keys_with_flags(r, args)
        .into_iter()
        .map(|(i, flags)| (i, Access::of_flags(flags)))
        .collect()
}

/// The keys among `args` and each one's key-spec flags as Redis reports
/// them (`COMMAND GETKEYSANDFLAGS`): the spec's, or those Redis's getkeys
/// procedure gives when the specs cannot tell.
pub fn keys_with_flags(r: &Registered, args: &[&[u8]]) -> Vec<(usize, &'static str)> {
    let specs = specs_of(&r.fullname);
    let has = |s: &KeySpec, f: &str| s.flags.split(' ').any(|x| x == f);
    let variable = specs.iter().any(|s| has(s, "variable_flags"));
    let real = specs.iter().any(|s| !has(s, "not_key"));
    if real && !variable {
        if let Some(keys) = by_specs(specs, args) {
            return keys;
        }
    }
    by_procedure(r, args)
}

/// Redis's `getKeysUsingKeySpecs`: None when a spec cannot be followed
/// (unknown, incomplete, out of range).
fn by_specs(specs: &[KeySpec], args: &[&[u8]]) -> Option<Vec<(usize, &'static str)>> {
    let argc = args.len() as i64;
    let mut keys = Vec::new();
    for spec in specs {
        if spec.flags.split(' ').any(|f| f == "not_key") {
            continue;
        }
        let first = match spec.begin {
            Begin::Index(i) => i as i64,
            Begin::Keyword(word, from) => {
                let from = from as i64;
                let (start, end) = if from > 0 {
                    (from, argc - 1)
                } else {
                    (argc + from, 1)
                };
                // (`end` itself is not searched: a key must follow.)
                let mut found = 0;
                let mut i = start;
                while i != end && i < argc && i >= 1 {
                    if args[i as usize].eq_ignore_ascii_case(word.as_bytes()) {
                        found = i + 1;
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            Begin::Unknown => return None,
        };
        let (first, last, step) = match spec.find {
            Find::Range { last, step, limit } => {
                let last = last as i64;
                let l = if last >= 0 {
                    first + last
                } else if limit == 0 {
                    argc + last
                } else {
                    first + ((argc - first) / limit as i64 + last)
                };
                (first, l, step as i64)
            }
            Find::Keynum {
                idx,
                first: f,
                step,
            } => {
                let at = first + idx as i64;
                if at >= argc {
                    return None;
                }
                let n = crate::util::parse_i64(args[at as usize]).filter(|n| *n >= 0)?;
                let first = first + f as i64;
                (first, first.saturating_add(n) - 1, step as i64)
            }
            Find::Unknown => return None,
        };
        if last >= argc || last < first || first >= argc {
            return None;
        }
        let mut i = first;
        while i <= last {
            keys.push((i as usize, spec.flags));
            i += step.max(1);
        }
        if spec.flags.split(' ').any(|f| f == "incomplete") {
            return None;
        }
    }
    Some(keys)
}

/// The flags Redis's getkeys procedures give (`CMD_KEY_*`).
const RO_ACCESS: &str = "RO access";
const OW_UPDATE: &str = "OW update";
const RW_ACCESS_UPDATE: &str = "RW access update";

/// Redis's `getkeys` procedures, for what the specs cannot tell: the
/// positions are the ones COMMAND GETKEYS reports, the access the one each
/// procedure gives.
fn by_procedure(r: &Registered, args: &[&[u8]]) -> Vec<(usize, &'static str)> {
    let positions = crate::cmd::command::key_positions(r.spec, args);
    let has_arg = |from: usize, words: &[&[u8]]| {
        args.iter()
            .skip(from)
            .any(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w)))
    };
    let access: Box<dyn Fn(usize) -> &'static str> = match r.fullname.as_str() {
        // SET with GET reads the old value; without it, overwrites.
        "set" => {
            let a = if has_arg(3, &[b"get"]) {
                RW_ACCESS_UPDATE
            } else {
                OW_UPDATE
            };
            Box::new(move |_| a)
        }
        // BITFIELD only GETs, or also changes (or cannot be read: then
        // it may change, as Redis's bitfieldGetKeys assumes).
        "bitfield" => {
            let a = if bitfield_reads_only(args) {
                RO_ACCESS
            } else {
                RW_ACCESS_UPDATE
            };
            Box::new(move |_| a)
        }
        // The source is read; STORE (and GEORADIUS's STOREDIST) overwrite.
        "sort" | "georadius" | "georadiusbymember" => {
            Box::new(|i| if i == 1 { RO_ACCESS } else { OW_UPDATE })
        }
        "sort_ro" => Box::new(|_| RO_ACCESS),
        // Moved away: read and deleted.
        "migrate" => Box::new(|_| "RW access delete"),
        // Anything else the specs could not follow: the strictest reading.
        _ => Box::new(|_| RW_ACCESS_UPDATE),
    };
    positions.into_iter().map(|i| (i, access(i))).collect()
}

/// Redis's `bitfieldGetKeys` walk: GETs (and OVERFLOWs) only.
fn bitfield_reads_only(args: &[&[u8]]) -> bool {
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - i - 1;
        let a = args[i];
        if a.eq_ignore_ascii_case(b"get") && more >= 2 {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"overflow") && more >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(line: &str) -> Vec<(usize, Access)> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let r = match crate::cmd::lookup(&args) {
            crate::cmd::Lookup::Found(r) => r,
            _ => panic!("no command {line}"),
        };
        keys_with_access(r, &args)
    }

    const R: Access = Access::RO_ACCESS;
    const W: Access = Access::OW_UPDATE;

    #[test]
    fn specs_give_positions_and_access() {
        assert_eq!(keys("get a"), vec![(1, R)]);
        assert_eq!(keys("mset a 1 b 2"), vec![(1, W), (3, W)]);
        assert_eq!(keys("copy a b"), vec![(1, R), (2, W)]);
        // DEL deletes without reading; EXISTS neither reads nor writes.
        let del = Access {
            read: false,
            write: true,
        };
        assert_eq!(keys("del a b"), vec![(1, del), (2, del)]);
        let none = Access {
            read: false,
            write: false,
        };
        assert_eq!(keys("exists a"), vec![(1, none)]);
        assert_eq!(keys("zunionstore d 2 a b"), vec![(1, W), (3, R), (4, R)]);
        assert_eq!(keys("xread count 2 streams s t 0 0"), vec![(4, R), (5, R)]);
        assert_eq!(keys("eval x 2 a b c").len(), 2);
        // A count past the arguments: no keys.
        assert!(keys("lmpop 5 a left").is_empty());
    }

    #[test]
    fn procedures_answer_what_specs_cannot() {
        assert_eq!(keys("set a 1"), vec![(1, W)]);
        assert_eq!(keys("set a 1 get"), vec![(1, Access::RW)]);
        assert_eq!(keys("bitfield a get u8 0"), vec![(1, R)]);
        assert_eq!(keys("bitfield a set u8 0 1"), vec![(1, Access::RW)]);
        assert_eq!(keys("bitfield a overflow sat get u8 0"), vec![(1, R)]);
        assert_eq!(keys("bitfield a get u8"), vec![(1, Access::RW)]);
        assert_eq!(keys("sort a store b"), vec![(1, R), (3, W)]);
        assert_eq!(keys("sort_ro a"), vec![(1, R)]);
    }
}
