//! Bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD and
//! BITFIELD_RO, as Redis 7.0 answers them. A bitmap is a string; bit 0 is
//! the most significant bit of the first byte, and a string grows with
//! zero bytes when a write reaches past its end.

use super::{errors, Ctx, NOTIFY_GENERIC, NOTIFY_STRING};
use crate::db::Value;
use crate::util::parse_i64;

const BAD_OFFSET: &str = "bit offset is not an integer or out of range";

/// Redis's `getBitOffsetFromArgument`: a bit offset (`#n` means `n`
/// fields of `bits` when `hash` is allowed) that keeps the string within
/// proto-max-bulk-len.
fn bit_offset(ctx: &Ctx, arg: &[u8], hash: bool, bits: u64) -> Option<u64> {
    let (arg, mul) = match arg.split_first() {
        Some((b'#', rest)) if hash => (rest, bits),
        _ => (arg, 1),
    };
    let n = parse_i64(arg)?;
    let off = u64::try_from(n).ok()?.checked_mul(mul)?;
    // (Room for a 64-bit field after it: later arithmetic cannot wrap.)
    off.checked_add(64)?;
    ((off >> 3) < ctx.set.max_bulk_len as u64).then_some(off)
}

/// The string at `key` for a bit write reaching bit `max_bit`, created or
/// grown with zero bytes as needed, and whether it was; `None` after a
/// WRONGTYPE reply.
fn string_for_write<'c>(
    ctx: &'c mut Ctx,
    key: &[u8],
    max_bit: u64,
) -> Option<(&'c mut crate::sds::GrowBuf, bool)> {
    let need = (max_bit >> 3) as usize + 1;
    let (idx, created) = match ctx.lookup_write(key) {
        Some(idx) => {
            if ctx.db().entry(idx).value.as_str().is_none() {
                ctx.wrongtype();
                return None;
            }
            (idx, false)
        }
        None => (ctx.set_key(key, Value::from_bytes(b""), false), true),
    };
    let v = ctx.db().entry_mut(idx).value.str_mut_raw()?;
    let grew = v.len() < need;
    if grew {
        v.resize(need, 0);
    }
    Some((v, created || grew))
}

/// The string at `key`, borrowed: `Ok(None)` when missing, `Err` after a
/// WRONGTYPE reply.
fn string_ref<'c>(ctx: &'c mut Ctx, key: &[u8]) -> Result<Option<&'c [u8]>, ()> {
    let Some(idx) = ctx.lookup_read(key) else {
        return Ok(None);
    };
    if ctx.db().entry(idx).value.as_str().is_none() {
        ctx.wrongtype();
        return Err(());
    }
    Ok(ctx.db().entry(idx).value.as_str())
}

/// The string at `key` for reading, copied: `Ok(None)` when missing,
/// `Err` after a WRONGTYPE reply.
fn string_for_read(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    match ctx.lookup_read(key) {
        None => Ok(None),
        Some(idx) => match ctx.db().entry(idx).value.as_str() {
            Some(s) => Ok(Some(s.to_vec())),
            None => {
                ctx.wrongtype();
                Err(())
            }
        },
    }
}

fn get_bit(s: &[u8], bit: u64) -> u8 {
    let byte = (bit >> 3) as usize;
    s.get(byte).map_or(0, |b| (b >> (7 - (bit & 7))) & 1)
}

/// `SETBIT key offset value`: the bit's old value.
pub fn setbit(ctx: &mut Ctx) {
    let key = ctx.args[1];
    let Some(off) = bit_offset(ctx, ctx.args[2], false, 0) else {
        return ctx.err(BAD_OFFSET);
    };
    let on = match parse_i64(ctx.args[3]) {
        Some(1) => true,
        Some(0) => false,
        _ => return ctx.err("bit is not an integer or out of range"),
    };
    let Some((v, created_or_grown)) = string_for_write(ctx, key, off) else {
        return;
    };
    let byte = (off >> 3) as usize;
    let mask = 1u8 << (7 - (off & 7));
    let old = v[byte] & mask != 0;
    if on {
        v[byte] |= mask;
    } else {
        v[byte] &= !mask;
    }
    // A bit set to the value it had changes nothing (unless the string
    // was made or grown), as in Redis 7.0: no WATCH fails, nothing is
    // invalidated, logged or notified.
    if created_or_grown || old != on {
        ctx.propagate_as_is();
        ctx.notify(NOTIFY_STRING, "setbit", key);
    }
    ctx.out.int(i64::from(old));
}

/// `GETBIT key offset`.
pub fn getbit(ctx: &mut Ctx) {
    let Some(off) = bit_offset(ctx, ctx.args[2], false, 0) else {
        return ctx.err(BAD_OFFSET);
    };
    let key = ctx.args[1];
    let bit = match string_ref(ctx, key) {
        Err(()) => return,
        Ok(s) => get_bit(s.unwrap_or(b""), off),
    };
    ctx.out.int(i64::from(bit));
}

/// A BITCOUNT/BITPOS range as Redis reads it: `start`, `end`, `unit`
/// (BYTE or BIT), over a string of `len` bytes. The range in bits,
/// inclusive, or `None` when it is empty.
fn bit_range(start: i64, end: i64, bit_unit: bool, len: usize) -> Option<(u64, u64)> {
    let total = if bit_unit { len as i64 * 8 } else { len as i64 };
    let (mut s, mut e) = (start, end);
    if s < 0 {
        s += total;
    }
    if e < 0 {
        e += total;
    }
    s = s.max(0);
    e = e.max(0);
    if e >= total {
        e = total - 1;
    }
    if s > e {
        return None;
    }
    Some(if bit_unit {
        (s as u64, e as u64)
    } else {
        (s as u64 * 8, e as u64 * 8 + 7)
    })
}

/// BYTE or BIT (any case).
fn unit(arg: &[u8]) -> Option<bool> {
    if arg.eq_ignore_ascii_case(b"bit") {
        Some(true)
    } else if arg.eq_ignore_ascii_case(b"byte") {
        Some(false)
    } else {
        None
    }
}

/// Set bits in bit positions `from..=to` of `s`.
fn count_bits(s: &[u8], from: u64, to: u64) -> i64 {
    let (fb, tb) = ((from >> 3) as usize, (to >> 3) as usize);
    // Eight bytes at a time (one popcount each), then the rest.
    let bytes = &s[fb..=tb];
    let words = bytes.chunks_exact(8);
    let rest: i64 = words
        .remainder()
        .iter()
        .map(|b| i64::from(b.count_ones()))
        .sum();
    let all = rest
        + words
            .map(|w| {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                i64::from(u64::from_ne_bytes(a).count_ones())
            })
            .sum::<i64>();
    // Less the bits of the first and last bytes outside the range.
    let head_mask = !(0xffu8 >> (from & 7));
    let tail_mask = if to & 7 == 7 {
        0
    } else {
        0xffu8 >> ((to & 7) + 1)
    };
    all - i64::from((s[fb] & head_mask).count_ones() + (s[tb] & tail_mask).count_ones())
}

/// `BITCOUNT key [start end [BYTE|BIT]]`.
pub fn bitcount(ctx: &mut Ctx) {
    let (key, args) = (ctx.args[1], ctx.args);
    // (The key first, as Redis: a missing one counts 0 whatever follows.)
    let s = match string_ref(ctx, key) {
        Err(()) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(s)) => s,
    };
    let range = match args.len() {
        2 => Ok(bit_range(0, -1, false, s.len())),
        4 | 5 => match (parse_i64(args[2]), parse_i64(args[3])) {
            // (An empty negative range counts 0 before the unit is read,
            // as Redis 7.0.)
            (Some(start), Some(end)) if start < 0 && end < 0 && start > end => Ok(None),
            (Some(start), Some(end)) => match args.get(4).map(|u| unit(u)) {
                Some(None) => Err(errors::SYNTAX),
                unit => Ok(bit_range(start, end, unit == Some(Some(true)), s.len())),
            },
            _ => Err(errors::NOT_INTEGER),
        },
        _ => Err(errors::SYNTAX),
    };
    let counted = range.map(|r| r.map_or(0, |(from, to)| count_bits(s, from, to)));
    match counted {
        Ok(n) => ctx.out.int(n),
        Err(e) => ctx.err(e),
    }
}

/// `BITPOS key bit [start [end [BYTE|BIT]]]`.
pub fn bitpos(ctx: &mut Ctx) {
    let (key, args) = (ctx.args[1], ctx.args);
    let bit = match parse_i64(args[2]) {
        Some(b @ (0 | 1)) => b as u8,
        Some(_) => return ctx.err("The bit argument must be 1 or 0."),
        None => return ctx.err(errors::NOT_INTEGER),
    };
    let s = match string_ref(ctx, key) {
        Err(()) => return,
        // A missing key is endless zero bits.
        Ok(None) => return ctx.out.int(if bit == 1 { -1 } else { 0 }),
        Ok(Some(s)) => s,
    };
    let found = bitpos_in(s, bit, args);
    match found {
        Ok(n) => ctx.out.int(n),
        Err(e) => ctx.err(e),
    }
}

/// BITPOS over string `s` with the request's range arguments: the
/// position, -1, or the error.
fn bitpos_in(s: &[u8], bit: u8, args: &[&[u8]]) -> Result<i64, &'static str> {
    let n = args.len();
    if !(3..=6).contains(&n) {
        return Err(errors::SYNTAX);
    }
    let mut end_given = false;
    let range = if n == 3 {
        bit_range(0, -1, false, s.len())
    } else {
        let start = parse_i64(args[3]).ok_or(errors::NOT_INTEGER)?;
        let bit_unit = if n == 6 {
            unit(args[5]).ok_or(errors::SYNTAX)?
        } else {
            false
        };
        let end = if n >= 5 {
            end_given = true;
            parse_i64(args[4]).ok_or(errors::NOT_INTEGER)?
        } else {
            -1
        };
        bit_range(start, end, bit_unit, s.len())
    };
    let Some((from, to)) = range else {
        return Ok(-1);
    };
    // Whole bytes that cannot hold the bit are skipped.
    let skip = if bit == 1 { 0x00 } else { 0xff };
    let mut i = from;
    while i <= to {
        if i & 7 == 0 && i + 7 <= to && s[(i >> 3) as usize] == skip {
            i += 8;
            continue;
        }
        if get_bit(s, i) == bit {
            return Ok(i as i64);
        }
        i += 1;
    }
    Ok(match bit {
        // Past the end of the string, bits are zero; not past an explicit
        // end.
        0 if !end_given => to as i64 + 1,
        _ => -1,
    })
}

/// `BITOP AND|OR|XOR|NOT destkey key [key ...]`: the result's length.
pub fn bitop(ctx: &mut Ctx) {
    let op = ctx.args[1].to_ascii_lowercase();
    if !matches!(op.as_slice(), b"and" | b"or" | b"xor" | b"not") {
        return ctx.syntax_error();
    }
    if op == b"not" && ctx.args.len() != 4 {
        return ctx.err("BITOP NOT must be called with a single source key.");
    }
    let dest = ctx.args[2];
    let mut sources: Vec<Vec<u8>> = Vec::with_capacity(ctx.args.len() - 3);
    for i in 3..ctx.args.len() {
        let key = ctx.args[i];
        match string_for_read(ctx, key) {
            Err(()) => return,
            Ok(s) => sources.push(s.unwrap_or_default()),
        }
    }
    let len = sources.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |s: &Vec<u8>, i: usize| s.get(i).copied().unwrap_or(0);
    let out: Vec<u8> = (0..len)
        .map(|i| match op.as_slice() {
            b"not" => !byte(&sources[0], i),
            b"and" => sources.iter().fold(0xff, |acc, s| acc & byte(s, i)),
            b"or" => sources.iter().fold(0, |acc, s| acc | byte(s, i)),
            _ => sources.iter().fold(0, |acc, s| acc ^ byte(s, i)),
        })
        .collect();
    // An empty result deletes the destination; with none there, nothing
    // changed (no WATCH fails, nothing is logged), as in Redis.
    if out.is_empty() {
        if ctx.delete_key(dest) {
            ctx.notify(NOTIFY_GENERIC, "del", dest);
            ctx.propagate_as_is();
        }
    } else {
        ctx.set_key(dest, Value::raw_vec(out), false);
        ctx.notify(NOTIFY_STRING, "set", dest);
        ctx.propagate_as_is();
    }
    ctx.out.int(len as i64);
}

/// A BITFIELD integer type: `i1`..`i64` or `u1`..`u63`.
#[derive(Clone, Copy)]
struct Field {
    signed: bool,
    bits: u32,
}

fn field_type(arg: &[u8]) -> Option<Field> {
    let (signed, digits) = match arg.split_first()? {
        (b'i' | b'I', d) => (true, d),
        (b'u' | b'U', d) => (false, d),
        _ => return None,
    };
    let bits = u32::try_from(parse_i64(digits)?).ok()?;
    let ok = if signed {
        (1..=64).contains(&bits)
    } else {
        (1..=63).contains(&bits)
    };
    ok.then_some(Field { signed, bits })
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

enum Op {
    Get,
    Set(i64),
    Incr(i64),
}

struct FieldOp {
    op: Op,
    field: Field,
    offset: u64,
    overflow: Overflow,
}

/// The `bits` bits at `offset` as an unsigned number.
fn read_field(s: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0u64, |acc, i| {
        (acc << 1) | u64::from(get_bit(s, offset + i))
    })
}

fn write_field(s: &mut [u8], offset: u64, bits: u32, value: u64) {
    for i in 0..u64::from(bits) {
        let bit = (value >> (u64::from(bits) - 1 - i)) & 1;
        let pos = offset + i;
        let byte = (pos >> 3) as usize;
        let mask = 1u8 << (7 - (pos & 7));
        if bit == 1 {
            s[byte] |= mask;
        } else {
            s[byte] &= !mask;
        }
    }
}

/// A field's stored bits as its value.
fn decode(f: Field, raw: u64) -> i64 {
    if f.signed && f.bits < 64 && raw & (1 << (f.bits - 1)) != 0 {
        (raw | (u64::MAX << f.bits)) as i64
    } else {
        raw as i64
    }
}

/// The smallest and largest values field `f` holds (an unsigned one is
/// at most 63 bits wide, so its maximum fits an `i64`).
fn bounds(f: Field) -> (i64, i64) {
    if !f.signed {
        return (0, ((1u64 << f.bits) - 1) as i64);
    }
    let max = if f.bits == 64 {
        i64::MAX
    } else {
        (1i64 << (f.bits - 1)) - 1
    };
    (-max - 1, max)
}

/// Whether `value + incr` overflows field `f` upwards (1), downwards (-1)
/// or not (0), decided as Redis 7.0 decides it: its margins `max - value`
/// and `min - value` are computed in 64 bits and may wrap, so a SET of a
/// value far below a narrow signed field's minimum (e.g. `i60` and
/// -2^63) counts as overflowing *upwards* and saturates to the maximum.
fn overflow_direction(f: Field, value: i64, incr: i64) -> i8 {
    if f.signed {
        let (min, max) = bounds(f);
        let (maxincr, minincr) = (max.wrapping_sub(value), min.wrapping_sub(value));
        let narrow = f.bits != 64;
        if value > max || (narrow && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
            1
        } else if value < min
            || (narrow && incr < minincr)
            || (value < 0 && incr < 0 && incr < minincr)
        {
            -1
        } else {
            0
        }
    } else {
        let value = value as u64;
        let max = (1u64 << f.bits) - 1;
        let maxincr = max.wrapping_sub(value) as i64;
        let minincr = value.wrapping_neg() as i64;
        if value > max || (incr > 0 && incr > maxincr) {
            1
        } else if incr < 0 && incr < minincr {
            -1
        } else {
            0
        }
    }
}

/// `value + incr` into field `f` under `overflow`: the value stored, or
/// `None` when FAIL refuses it. (A SET is `value` with `incr` 0; an
/// unsigned field's `value` is the bits of a `u64`.)
fn fit(f: Field, value: i64, incr: i64, overflow: Overflow) -> Option<i64> {
    let dir = overflow_direction(f, value, incr);
    if dir == 0 {
        return Some(value.wrapping_add(incr));
    }
    let (min, max) = bounds(f);
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if dir > 0 { max } else { min }),
        Overflow::Wrap => {
            // The sum's low `bits` bits, sign-extended for a signed field.
            let sum = (value as u64).wrapping_add(incr as u64);
            if f.bits == 64 {
                return Some(sum as i64);
            }
            let low = sum & ((1u64 << f.bits) - 1);
            let negative = f.signed && low >> (f.bits - 1) & 1 == 1;
            Some(if negative {
                (low | !((1u64 << f.bits) - 1)) as i64
            } else {
                low as i64
            })
        }
    }
}

/// The bits of `v` as field `f` stores them.
fn encode(f: Field, v: i64) -> u64 {
    if f.bits == 64 {
        v as u64
    } else {
        (v as u64) & ((1u64 << f.bits) - 1)
    }
}

/// The replies of BITFIELD's operations when they are all GETs.
fn read_only_ops(s: &[u8], ops: &[FieldOp]) -> Vec<Option<i64>> {
    ops.iter()
        .map(|o| Some(decode(o.field, read_field(s, o.offset, o.field.bits))))
        .collect()
}

/// Runs BITFIELD's operations on `s` (long enough for every write): the
/// replies (`None` where OVERFLOW FAIL refused a write) and the writes
/// that changed a field (one that stores the value it had changes nothing,
/// as in Redis 7.0: no WATCH fails, nothing is invalidated or logged).
fn apply(s: &mut [u8], ops: &[FieldOp]) -> (Vec<Option<i64>>, usize) {
    let mut replies = Vec::with_capacity(ops.len());
    let mut changes = 0;
    for o in ops {
        let f = o.field;
        let raw = read_field(s, o.offset, f.bits);
        let old = decode(f, raw);
        let (target, reply_new) = match o.op {
            Op::Get => {
                replies.push(Some(old));
                continue;
            }
            Op::Set(v) => ((v, 0), false),
            Op::Incr(by) => ((old, by), true),
        };
        match fit(f, target.0, target.1, o.overflow) {
            Some(new) => {
                let bits = encode(f, new);
                if bits != raw {
                    write_field(s, o.offset, f.bits, bits);
                    changes += 1;
                }
                replies.push(Some(if reply_new { new } else { old }));
            }
            None => replies.push(None),
        }
    }
    (replies, changes)
}

/// `BITFIELD key [GET type offset] [SET type offset value] [INCRBY type
/// offset increment] [OVERFLOW WRAP|SAT|FAIL] ...`.
pub fn bitfield(ctx: &mut Ctx) {
    bitfield_generic(ctx, false)
}

/// `BITFIELD_RO key [GET type offset] ...`.
pub fn bitfield_ro(ctx: &mut Ctx) {
    bitfield_generic(ctx, true)
}

fn bitfield_generic(ctx: &mut Ctx, read_only: bool) {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < ctx.args.len() {
        let sub = ctx.args[i].to_ascii_lowercase();
        let remaining = ctx.args.len() - i - 1;
        let takes = match sub.as_slice() {
            b"get" => 2,
            b"set" | b"incrby" => 3,
            b"overflow" => 1,
            _ => return ctx.syntax_error(),
        };
        if remaining < takes {
            return ctx.syntax_error();
        }
        if sub == b"overflow" {
            let o = ctx.args[i + 1].to_ascii_lowercase();
            overflow = match o.as_slice() {
                b"wrap" => Overflow::Wrap,
                b"sat" => Overflow::Sat,
                b"fail" => Overflow::Fail,
                _ => return ctx.err("Invalid OVERFLOW type specified"),
            };
            i += 2;
            continue;
        }
        let Some(field) = field_type(ctx.args[i + 1]) else {
            return ctx.err(
                "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
            );
        };
        let Some(offset) = bit_offset(ctx, ctx.args[i + 2], true, u64::from(field.bits)) else {
            return ctx.err(BAD_OFFSET);
        };
        let op = match sub.as_slice() {
            b"get" => Op::Get,
            _ => {
                let Some(n) = parse_i64(ctx.args[i + 3]) else {
                    return ctx.err(errors::NOT_INTEGER);
                };
                if sub == b"set" {
                    Op::Set(n)
                } else {
                    Op::Incr(n)
                }
            }
        };
        ops.push(FieldOp {
            op,
            field,
            offset,
            overflow,
        });
        i += 1 + takes;
    }
    let key = ctx.args[1];
    let max_bit = ops
        .iter()
        .filter(|o| !matches!(o.op, Op::Get))
        .map(|o| o.offset + u64::from(o.field.bits) - 1)
        .max();
    if read_only && max_bit.is_some() {
        return ctx.err("BITFIELD_RO only supports the GET subcommand");
    }
    // Reads alone never create the key.
    let (replies, changes) = match max_bit {
        Some(max) => match string_for_write(ctx, key, max) {
            Some((v, grew)) => {
                let (replies, changes) = apply(v, &ops);
                // (A key made or grown changed the data even when every
                // write failed: replicas must have it too.)
                (replies, changes + usize::from(grew))
            }
            None => return,
        },
        // (GETs only: read in place, without copying the string.)
        None => match string_ref(ctx, key) {
            Err(()) => return,
            Ok(s) => (read_only_ops(s.unwrap_or(b""), &ops), 0),
        },
    };
    if changes > 0 {
        ctx.propagate_as_is();
        // (Redis counts every changed field as a change, as
        // `rdb_changes_since_last_save` shows.)
        ctx.t.dirty += changes as u64 - 1;
        ctx.notify(NOTIFY_STRING, "setbit", key);
    }
    ctx.out.array(replies.len());
    for r in replies {
        match r {
            Some(n) => ctx.out.int(n),
            None => ctx.out.null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_counts() {
        let s = b"foobar";
        assert_eq!(count_bits(s, 0, 47), 26);
        assert_eq!(bit_range(1, 1, false, 6), Some((8, 15)));
        assert_eq!(count_bits(s, 8, 15), 6);
        assert_eq!(bit_range(5, 30, true, 6), Some((5, 30)));
        assert_eq!(count_bits(s, 5, 30), 17);
        assert_eq!(bit_range(2, 1, false, 6), None);
        assert_eq!(bit_range(-100, -1, false, 6), Some((0, 47)));
    }

    #[test]
    fn fields_fit_as_redis_wraps_and_saturates() {
        let i8 = Field {
            signed: true,
            bits: 8,
        };
        let u2 = Field {
            signed: false,
            bits: 2,
        };
        assert_eq!(fit(i8, 127, 1, Overflow::Wrap), Some(-128));
        assert_eq!(fit(i8, 127, 1, Overflow::Sat), Some(127));
        assert_eq!(fit(i8, -128, -1, Overflow::Sat), Some(-128));
        assert_eq!(fit(i8, 127, 1, Overflow::Fail), None);
        assert_eq!(fit(i8, -129, 0, Overflow::Sat), Some(-128));
        assert_eq!(fit(u2, 3, 2, Overflow::Wrap), Some(1));
        assert_eq!(fit(u2, 0, -1, Overflow::Wrap), Some(3));
        assert_eq!(fit(u2, -1, 0, Overflow::Sat), Some(3));
        let i64f = Field {
            signed: true,
            bits: 64,
        };
        assert_eq!(fit(i64f, i64::MAX, 1, Overflow::Sat), Some(i64::MAX));
        assert_eq!(fit(i64f, i64::MAX, 1, Overflow::Wrap), Some(i64::MIN));
        assert_eq!(fit(i64f, i64::MIN, -1, Overflow::Sat), Some(i64::MIN));
        // Redis 7.0's wrapped margin: SET of -2^63 into an i60 under SAT
        // stores the field's maximum, not its minimum.
        let i60 = Field {
            signed: true,
            bits: 60,
        };
        assert_eq!(fit(i60, i64::MIN, 0, Overflow::Sat), Some((1 << 59) - 1));
        assert_eq!(fit(i60, -(1 << 60), 0, Overflow::Sat), Some(-(1 << 59)));
        assert_eq!(decode(i8, 0xff), -1);
        assert_eq!(encode(i8, -1), 0xff);
    }
}
