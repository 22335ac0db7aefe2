//! ACL categories, and the command rules ACL LIST and GETUSER show.
//!
//! A selector keeps its commands as bits, not as the rules that set them,
//! so the rules shown are rebuilt, as Redis 7.0 does: from `+@all` or
//! `-@all`, the category that best fits what is left is added (or
//! removed) again and again while one fits better than not, then single
//! commands fix the difference, then allowed first arguments.

use std::sync::OnceLock;

use super::selector::Selector;
use crate::cmd::registry;

/// Redis's categories, in its order (`all` is not one: it is every
/// command).
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

pub fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// The command table entries (subcommands included, parents first) in
/// category `idx`.
pub fn members(idx: usize) -> &'static [usize] {
    static MEMBERS: OnceLock<Vec<Vec<usize>>> = OnceLock::new();
    let all = MEMBERS.get_or_init(|| {
        CATEGORIES
            .iter()
            .map(|cat| {
                registry()
                    .all
                    .iter()
                    .filter(|r| {
                        r.spec
                            .acl
                            .split(' ')
                            .any(|c| c.strip_prefix('@') == Some(cat))
                    })
                    .map(|r| r.id)
                    .collect()
            })
            .collect()
    });
    all.get(idx).map(Vec::as_slice).unwrap_or(&[])
}

/// The command rules that rebuild `sel`'s commands (Redis's
/// `ACLDescribeSelectorCommandRules`).
pub fn command_rules(sel: &Selector) -> String {
    let additive = !sel.from_all;
    let mut rules: Vec<String> = vec![if additive { "-@all" } else { "+@all" }.into()];
    // What the rules so far give, and what is left to explain.
    let mut fake = Selector::new();
    let mut left = sel.clone();
    if !additive {
        fake.apply(b"+@all").ok();
    }
    let mut applied = [false; CATEGORIES.len()];
    loop {
        let mut best = None;
        let (mut min_diff, mut max_same) = (usize::MAX, 0);
        for (j, done) in applied.iter().enumerate() {
            if *done {
                continue;
            }
            let on = members(j).iter().filter(|&&id| left.bit(id)).count();
            let off = members(j).len() - on;
            let (diff, same) = if additive { (off, on) } else { (on, off) };
            if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                best = Some(j);
                min_diff = diff;
                max_same = same;
            }
        }
        let Some(j) = best else { break };
        fake.change_category(j, additive);
        left.change_category(j, !additive);
        rules.push(format!(
            "{}@{}",
            if additive { '+' } else { '-' },
            CATEGORIES[j]
        ));
        applied[j] = true;
    }
    let reg = registry();
    for top in reg.top_level() {
        single(sel, &mut fake, top.id, &mut rules);
        for sub in reg.subcommands(top.id) {
            single(sel, &mut fake, sub.id, &mut rules);
        }
        if !sel.bit(top.id) {
            if let Some(args) = sel.first_args.get(&top.id) {
                for a in args {
                    rules.push(format!("+{}|{}", top.fullname, a));
                }
            }
        }
    }
    rules.join(" ")
}

fn single(sel: &Selector, fake: &mut Selector, id: usize, rules: &mut Vec<String>) {
    let on = sel.bit(id);
    if on != fake.bit(id) {
        let name = &registry().all[id].fullname;
        rules.push(format!("{}{}", if on { '+' } else { '-' }, name));
        fake.change(id, on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_after(ops: &[&str]) -> String {
        let mut s = Selector::new();
        for op in ops {
            s.apply(op.as_bytes()).unwrap();
        }
        command_rules(&s)
    }

    #[test]
    fn rebuilt_rules_as_redis_shows_them() {
        assert_eq!(rules_after(&["+get", "+set", "-get"]), "-@all +set");
        assert_eq!(
            rules_after(&["+@read", "-@write", "+set|foo"]),
            "-@all +@read +set|foo"
        );
        assert_eq!(
            rules_after(&["-@all", "+@hash", "-hget", "+hget"]),
            "-@all +@hash"
        );
        assert_eq!(
            rules_after(&["allcommands", "-get", "+@write"]),
            "+@all -get"
        );
        assert_eq!(
            rules_after(&["+client|list", "+client", "-client|kill"]),
            "-@all +client -client|kill"
        );
        // A category taken away, then one of its commands given back: the
        // rest of the category is listed, not the category.
        let r = rules_after(&["+@all", "-@dangerous", "+flushdb"]);
        assert!(r.starts_with("+@all -@admin "), "{r}");
        assert!(!r.contains("@dangerous") && r.contains("-flushall"), "{r}");
    }
}
