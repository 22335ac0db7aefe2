//! SORT and SORT_RO (Redis 7.0's sort.c) over lists, sets and sorted sets:
//! `BY pattern` (a pattern without `*` means "do not sort"), `LIMIT offset
//! count`, `GET pattern` (`#` is the element itself, `key*->field` reads a
//! hash field), `ASC`/`DESC`, `ALPHA` and `STORE destination` (a list).
//!
//! Redis details kept on purpose:
//! * a sorted set being sorted is converted to the skiplist encoding, even
//!   by SORT_RO and even when the command then fails (OBJECT ENCODING shows
//!   it). Like Redis, this is not logged: a replica keeps the listpack, and
//!   the one visible consequence is that a later `ZADD key -0 member` keeps
//!   the sign here (skiplist) but not there (a listpack stores 0);
//! * numeric sorting parses with `strtod` (leading spaces allowed, an empty
//!   string is 0, out-of-range values are errors) and breaks ties by the
//!   element bytes; ALPHA compares as `strcoll` does in the C.UTF-8 locale
//!   (bytes up to the first NUL), or all bytes when storing;
//! * `BY <constant>` on a set with STORE sorts alphabetically, so the stored
//!   list does not depend on the set's internal order.
//!
//! Differences: Redis sorts with an unstable quicksort when BY and LIMIT
//! are combined, so the order of elements that compare equal (same BY value
//! with ALPHA) can differ between two Redis servers; anykv sorts stably.
//!
//! `SORT ... STORE` is logged as its result: `DEL dst` (if it existed),
//! then `RPUSH dst <elements>` in chunks (nothing more for an empty result).

use super::{Ctx, NOTIFY_GENERIC, NOTIFY_LIST};
use crate::cmd::zset::c_strtod;
use crate::db::list::List;
use crate::db::Value;
use crate::sds::Sds;
use crate::util::c_str;

/// Elements per propagated RPUSH of a stored result.
const RPUSH_CHUNK: usize = 512;

/// The bytes C code sees in an argument (up to the first NUL).
fn cstr(b: &[u8]) -> &[u8] {
    c_str(b, usize::MAX)
}

fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Redis's `lookupKeyByPattern`: `#` is the element itself; otherwise the
/// first `*` is replaced by the element and the key read as a string, or
/// with `->field` as a hash field.
fn lookup_by_pattern(ctx: &mut Ctx, pattern: &[u8], subst: &[u8]) -> Option<Vec<u8>> {
    let cpat = cstr(pattern);
    if cpat == b"#" {
        return Some(subst.to_vec());
    }
    let p = cpat.iter().position(|&c| c == b'*')?;
    let arrow = find_sub(&cpat[p + 1..], b"->")
        .map(|i| p + 1 + i)
        .filter(|&f| f + 2 < cpat.len());
    let field = arrow.map(|f| &pattern[f + 2..]);
    let postfix_len = pattern.len() - (p + 1) - arrow.map_or(0, |f| pattern.len() - f);
    let mut key = Vec::with_capacity(p + subst.len() + postfix_len);
    key.extend_from_slice(&pattern[..p]);
    key.extend_from_slice(subst);
    key.extend_from_slice(&pattern[p + 1..p + 1 + postfix_len]);
    let idx = ctx.lookup_read(&key)?;
    match (&ctx.db().entry(idx).value, field) {
        (Value::Hash(h), Some(f)) => h.get(f).map(|v| v.to_vec()),
        (Value::Str(s), None) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

struct Item {
    obj: Vec<u8>,
    score: f64,
    cmp: Option<Vec<u8>>,
}

pub fn sort(ctx: &mut Ctx) {
    sort_generic(ctx, false);
}

pub fn sort_ro(ctx: &mut Ctx) {
    sort_generic(ctx, true);
}

fn sort_generic(ctx: &mut Ctx, readonly: bool) {
    let args = ctx.args;
    let mut desc = false;
    let mut alpha = false;
    let mut limit_start = 0i64;
    let mut limit_count = -1i64;
    let mut dontsort = false;
    let mut sortby: Option<&[u8]> = None;
    let mut store: Option<&[u8]> = None;
    let mut gets: Vec<&[u8]> = Vec::new();
    // BY with a pattern and GET read keys the arguments do not name: only
    // for a user who may read every key, as Redis 7.0 rules.
    let reads_every_key = crate::dispatch::reads_every_key(ctx);
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let o = args[j];
        if o.eq_ignore_ascii_case(b"asc") {
            desc = false;
        } else if o.eq_ignore_ascii_case(b"desc") {
            desc = true;
        } else if o.eq_ignore_ascii_case(b"alpha") {
            alpha = true;
        } else if o.eq_ignore_ascii_case(b"limit") && left >= 2 {
            let Some(s) = ctx.arg_i64(j + 1) else { return };
            let Some(c) = ctx.arg_i64(j + 2) else { return };
            limit_start = s;
            limit_count = c;
            j += 2;
        } else if !readonly && o.eq_ignore_ascii_case(b"store") && left >= 1 {
            store = Some(args[j + 1]);
            j += 1;
        } else if o.eq_ignore_ascii_case(b"by") && left >= 1 {
            sortby = Some(args[j + 1]);
            if !cstr(args[j + 1]).contains(&b'*') {
                dontsort = true;
            } else if !reads_every_key {
                return ctx.err("BY option of SORT denied due to insufficient ACL permissions.");
            }
            j += 1;
        } else if o.eq_ignore_ascii_case(b"get") && left >= 1 {
            if !reads_every_key {
                return ctx.err("GET option of SORT denied due to insufficient ACL permissions.");
            }
            gets.push(args[j + 1]);
            j += 1;
        } else {
            return ctx.syntax_error();
        }
        j += 1;
    }

    #[derive(PartialEq, Eq, Clone, Copy)]
    enum Kind {
        List,
        Set,
        ZSet,
    }
    let idx = ctx.lookup_read(args[1]);
    let kind = match idx.map(|i| &ctx.db().entry(i).value) {
        None | Some(Value::List(_)) => Kind::List,
        Some(Value::Set(_)) => Kind::Set,
        Some(Value::ZSet(_)) => Kind::ZSet,
        Some(_) => return ctx.wrongtype(),
    };
    if dontsort && kind == Kind::Set && store.is_some() {
        // Sort sets anyway so the stored result is deterministic.
        dontsort = false;
        alpha = true;
        sortby = None;
    }
    if let Some(i) = idx {
        if let Value::ZSet(z) = &mut ctx.db().entry_mut(i).value {
            z.convert_to_skiplist();
        }
    }
    let full_len = match idx.map(|i| &ctx.db().entry(i).value) {
        Some(Value::List(l)) => l.len(),
        Some(Value::Set(s)) => s.len(),
        Some(Value::ZSet(z)) => z.len(),
        _ => 0,
    } as i64;

    // LIMIT sanity, as Redis computes it.
    let mut vectorlen = full_len;
    let mut start = limit_start.max(0).min(vectorlen);
    let limit_count = limit_count.max(-1).min(vectorlen);
    let mut end = if limit_count < 0 {
        vectorlen - 1
    } else {
        start + limit_count - 1
    };
    if start >= vectorlen {
        start = vectorlen - 1;
        end = vectorlen - 2;
    }
    if end >= vectorlen {
        end = vectorlen - 1;
    }
    if (kind == Kind::ZSet || kind == Kind::List)
        && dontsort
        && (start != 0 || end != vectorlen - 1)
    {
        vectorlen = end - start + 1;
    }

    let item = |obj: Vec<u8>| Item {
        obj,
        score: 0.0,
        cmp: None,
    };
    let mut vector: Vec<Item> = Vec::with_capacity(vectorlen.max(0) as usize);
    let value = idx.map(|i| &ctx.t.ks.dbs[ctx.s.db].entry(i).value);
    match (kind, value) {
        (Kind::List, Some(Value::List(l))) if dontsort && end >= start => {
            let n = vectorlen.max(0) as usize;
            if desc {
                let from = (full_len - start - 1) as usize;
                vector.extend(
                    l.items
                        .range(..=from)
                        .rev()
                        .take(n)
                        .map(|e| item(e.to_vec())),
                );
            } else {
                vector.extend(
                    l.items
                        .range(start as usize..)
                        .take(n)
                        .map(|e| item(e.to_vec())),
                );
            }
            end -= start;
            start = 0;
        }
        (Kind::List, Some(Value::List(_))) if dontsort => {}
        (Kind::List, Some(Value::List(l))) => {
            vector.extend(l.items.iter().map(|e| item(e.to_vec())));
        }
        (Kind::Set, Some(Value::Set(s))) => {
            vector.extend(s.iter().map(|e| item(e.to_vec())));
        }
        (Kind::ZSet, Some(Value::ZSet(z))) if dontsort => {
            if vectorlen > 0 {
                let (s, e) = (start as usize, (start + vectorlen - 1) as usize);
                vector.extend(
                    z.range_by_rank(s, e, desc)
                        .into_iter()
                        .map(|(m, _)| item(m.to_vec())),
                );
            }
            end -= start;
            start = 0;
        }
        (Kind::ZSet, Some(Value::ZSet(z))) => {
            vector.extend(z.iter().map(|(m, _)| item(m.to_vec())));
        }
        _ => {}
    }

    // Scores (or comparison strings) to sort by.
    let mut conversion_error = false;
    if !dontsort {
        for it in vector.iter_mut() {
            let byval = match sortby {
                Some(p) => match lookup_by_pattern(ctx, p, &it.obj) {
                    Some(v) => v,
                    None => continue,
                },
                None => it.obj.clone(),
            };
            if alpha {
                if sortby.is_some() {
                    it.cmp = Some(byval);
                }
            } else {
                match c_strtod(&byval) {
                    Some((v, false)) if !v.is_nan() => it.score = v,
                    _ => conversion_error = true,
                }
            }
        }
        if !conversion_error {
            let by_pattern = sortby.is_some();
            let storing = store.is_some();
            let bytes = |x: &[u8]| -> Vec<u8> {
                if storing {
                    x.to_vec()
                } else {
                    cstr(x).to_vec()
                }
            };
            vector.sort_by(|a, b| {
                let c = if !alpha {
                    if a.score > b.score {
                        std::cmp::Ordering::Greater
                    } else if a.score < b.score {
                        std::cmp::Ordering::Less
                    } else {
                        a.obj.cmp(&b.obj)
                    }
                } else if by_pattern {
                    match (&a.cmp, &b.cmp) {
                        (None, None) => std::cmp::Ordering::Equal,
                        (None, Some(_)) => std::cmp::Ordering::Less,
                        (Some(_), None) => std::cmp::Ordering::Greater,
                        (Some(x), Some(y)) => bytes(x).cmp(&bytes(y)),
                    }
                } else {
                    bytes(&a.obj).cmp(&bytes(&b.obj))
                };
                if desc {
                    c.reverse()
                } else {
                    c
                }
            });
        }
    }

    if conversion_error {
        return ctx.err("One or more scores can't be converted into double");
    }
    let range: Vec<Vec<u8>> = if end >= start && start >= 0 {
        vector
            .drain(start as usize..=(end as usize).min(vector.len().saturating_sub(1)))
            .map(|i| i.obj)
            .collect()
    } else {
        Vec::new()
    };
    let outputlen = if gets.is_empty() {
        range.len()
    } else {
        gets.len() * range.len()
    };
    let Some(dst) = store else {
        ctx.out.array(outputlen);
        for obj in &range {
            if gets.is_empty() {
                ctx.out.bulk(obj);
            }
            for g in &gets {
                match lookup_by_pattern(ctx, g, obj) {
                    Some(v) => ctx.out.bulk(&v),
                    None => ctx.out.null(),
                }
            }
        }
        return;
    };
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(outputlen);
    for obj in range {
        if gets.is_empty() {
            out.push(obj);
        } else {
            for g in &gets {
                out.push(lookup_by_pattern(ctx, g, &obj).unwrap_or_default());
            }
        }
    }
    let existed = ctx.lookup_write(dst).is_some();
    if !out.is_empty() {
        let mut list = List::new();
        list.items.reserve_exact(out.len());
        list.items.extend(out.iter().map(|v| Sds::from_slice(v)));
        ctx.set_key(dst, Value::List(Box::new(list)), false);
        ctx.notify(NOTIFY_LIST, "sortstore", dst);
        if existed {
            ctx.propagate(&[b"DEL", dst]);
        }
        for chunk in out.chunks(RPUSH_CHUNK) {
            let mut a: Vec<&[u8]> = Vec::with_capacity(2 + chunk.len());
            a.push(b"RPUSH");
            a.push(dst);
            a.extend(chunk.iter().map(|v| &v[..]));
            ctx.propagate(&a);
        }
    } else if existed {
        ctx.delete_key(dst);
        ctx.notify(NOTIFY_GENERIC, "del", dst);
        ctx.propagate(&[b"DEL", dst]);
    }
    ctx.out.int(outputlen as i64);
}
