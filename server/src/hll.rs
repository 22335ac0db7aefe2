//! HyperLogLog strings exactly as Redis 7.0 lays them out, so a value
//! moves between anykv and redis-server (GET/SET, DUMP/RESTORE, RDB) and
//! both give the same estimates.
//!
//! A value is a string: a 16-byte header (`HYLL`, the encoding byte, 3
//! unused bytes, the cached cardinality as 8 little-endian bytes whose top
//! bit marks it stale), then 16384 registers of 6 bits. Dense: the
//! registers packed, 12288 bytes. Sparse: run-length opcodes, as long as
//! the value stays under `hll-sparse-max-bytes` and no register is above
//! 32: ZERO `00xxxxxx` (1–64 zero registers), XZERO `01xxxxxx yyyyyyyy`
//! (1–16384), VAL `1vvvvvxx` (1–4 registers of value 1–32). Updates keep
//! the sparse form canonical the way Redis does, byte for byte: the
//! same values come out of the same additions. The estimator is Ertl's
//! (arXiv:1702.01284), as Redis's `hllCount`.

use crate::sds::GrowBuf;

/// Register index bits.
const P: u32 = 14;
/// Hash bits left for the run of zeros.
const Q: u32 = 64 - P;
pub const REGISTERS: usize = 1 << P;
const HDR: usize = 16;
/// A dense value's length.
pub const DENSE_SIZE: usize = HDR + (REGISTERS * 6).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// A value whose sparse runs do not cover the registers exactly.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Corrupted HLL object detected")]
pub struct Corrupt;

/// Redis's words for a string that is not a HyperLogLog.
pub const WRONGTYPE: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
/// ... and for one whose registers do not add up.
pub const INVALID: &str = "INVALIDOBJ Corrupted HLL object detected";

/// Whether `v` is a HyperLogLog Redis would take (`isHLLObjectOrReply`).
pub fn is_hll(v: &[u8]) -> bool {
    v.len() >= HDR
        && &v[..4] == b"HYLL"
        && v[4] <= SPARSE
        && (v[4] != DENSE || v.len() == DENSE_SIZE)
}

/// A new, empty HyperLogLog (sparse: one XZERO of every register).
pub fn new() -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR + 2);
    v.extend_from_slice(b"HYLL");
    v.push(SPARSE);
    v.extend_from_slice(&[0; 11]);
    // (16384 registers: exactly one XZERO, its longest run.)
    xzero(&mut v, REGISTERS);
    v
}

fn xzero(v: &mut Vec<u8>, len: usize) {
    let l = len - 1;
    v.push(0x40 | (l >> 8) as u8);
    v.push((l & 0xff) as u8);
}

fn val_op(value: u8, len: usize) -> u8 {
    0x80 | ((value - 1) << 2) | (len - 1) as u8
}

/// Redis's MurmurHash64A (seed 0xadc83b19), byte order independent.
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= (*b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element falls in, and the value it offers (the
/// position of the first 1 bit after the index bits, 1–51).
fn pat_len(ele: &[u8]) -> (usize, u8) {
    let hash = murmur64a(ele, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let bit = i * 6;
    let (byte, fb) = (bit / 8, bit & 7);
    let b0 = regs[byte] as u16;
    let b1 = regs.get(byte + 1).copied().unwrap_or(0) as u16;
    (((b0 >> fb) | (b1 << (8 - fb))) & 63) as u8
}

fn dense_put(regs: &mut [u8], i: usize, val: u8) {
    let bit = i * 6;
    let (byte, fb) = (bit / 8, bit & 7);
    let v = val as u16;
    regs[byte] &= !((63u16 << fb) as u8);
    regs[byte] |= (v << fb) as u8;
    if let Some(b1) = regs.get_mut(byte + 1) {
        let fb8 = 8 - fb;
        *b1 &= !((63u16 >> fb8) as u8);
        *b1 |= (v >> fb8) as u8;
    }
}

/// Sets register `i` to `val` if that raises it (dense); true if so.
fn dense_set(regs: &mut [u8], i: usize, val: u8) -> bool {
    if val > dense_get(regs, i) {
        dense_put(regs, i, val);
        true
    } else {
        false
    }
}

/// One sparse opcode: a run of zero registers (ZERO, XZERO) or of
/// registers of one value (VAL), with its length.
#[derive(Clone, Copy)]
enum Op {
    Zero(usize),
    XZero(usize),
    Val(u8, usize),
}

impl Op {
    /// The opcode at `p`; `None` past the end. An XZERO cut by the end
    /// of the value (a SETRANGE into the registers can leave one) reads
    /// its missing byte as 0, as Redis reads the string's NUL terminator.
    fn at(s: &[u8], p: usize) -> Option<Op> {
        let op = *s.get(p)?;
        Some(if op & 0xc0 == 0 {
            Op::Zero((op & 0x3f) as usize + 1)
        } else if op & 0x80 == 0 {
            let lo = s.get(p + 1).copied().unwrap_or(0) as usize;
            Op::XZero(((((op & 0x3f) as usize) << 8) | lo) + 1)
        } else {
            Op::Val(((op >> 2) & 0x1f) + 1, (op & 3) as usize + 1)
        })
    }

    /// Registers it covers.
    fn run(self) -> usize {
        match self {
            Op::Zero(n) | Op::XZero(n) | Op::Val(_, n) => n,
        }
    }

    /// Its registers' value.
    fn value(self) -> u8 {
        match self {
            Op::Val(v, _) => v,
            _ => 0,
        }
    }

    /// Its length in bytes.
    fn bytes(self) -> usize {
        match self {
            Op::XZero(_) => 2,
            _ => 1,
        }
    }
}

/// The opcodes of a sparse body; `None` when the
/// body is cut or its runs do not cover exactly the registers.
fn sparse_ops(body: &[u8]) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    let (mut p, mut idx) = (0, 0usize);
    while p < body.len() {
        let op = Op::at(body, p)?;
        ops.push(op);
        idx += op.run();
        p += op.bytes();
    }
    (idx == REGISTERS).then_some(ops)
}

/// The registers of a sparse body, run by run: (value, run length).
fn sparse_runs(body: &[u8]) -> Option<Vec<(u8, usize)>> {
    Some(
        sparse_ops(body)?
            .into_iter()
            .map(|op| (op.value(), op.run()))
            .collect(),
    )
}

/// Converts a sparse value to dense in place (the header kept, cache
/// included); false if it is corrupt.
pub fn to_dense(v: &mut GrowBuf) -> bool {
    if v[4] == DENSE {
        return true;
    }
    let Some(runs) = sparse_runs(&v[HDR..]) else {
        return false;
    };
    let mut out = GrowBuf::with_capacity(DENSE_SIZE);
    out.resize(DENSE_SIZE, 0);
    out[..HDR].copy_from_slice(&v[..HDR]);
    out[4] = DENSE;
    let mut i = 0;
    for (val, len) in runs {
        if val > 0 {
            for r in i..i + len {
                dense_put(&mut out[HDR..], r, val);
            }
        }
        i += len;
    }
    *v = out;
    true
}

/// Sets register `index` to `count` if that raises it, keeping the
/// sparse form as Redis's `hllSparseSet` does (promoting to dense past
/// `max_bytes` or a value above 32). `Err` if the value is corrupt.
fn sparse_set(v: &mut GrowBuf, index: usize, count: u8, max_bytes: usize) -> Result<bool, Corrupt> {
    if count > SPARSE_VAL_MAX_VALUE {
        return promote(v, index, count);
    }
    // Step 1: the opcode covering `index`.
    let (mut p, mut first, mut prev) = (HDR, 0usize, None);
    let op = loop {
        let op = Op::at(v, p).ok_or(Corrupt)?;
        if index < first + op.run() {
            break op;
        }
        prev = Some(p);
        p += op.bytes();
        first += op.run();
    };
    // Step 2: the cases updated in place.
    let replaced = match op {
        Op::Val(old, _) if old >= count => return Ok(false),
        Op::Val(_, 1) | Op::Zero(1) => {
            v[p] = val_op(count, 1);
            true
        }
        _ => false,
    };
    if !replaced {
        // Step 3: the opcode split around the register.
        let mut seq: Vec<u8> = Vec::with_capacity(5);
        let last = first + op.run() - 1;
        if let Op::Val(cur, _) = op {
            if index != first {
                seq.push(val_op(cur, index - first));
            }
            seq.push(val_op(count, 1));
            if index != last {
                seq.push(val_op(cur, last - index));
            }
        } else {
            let zeros = |seq: &mut Vec<u8>, len: usize| {
                if len > SPARSE_ZERO_MAX_LEN {
                    xzero(seq, len);
                } else {
                    seq.push((len - 1) as u8);
                }
            };
            if index != first {
                zeros(&mut seq, index - first);
            }
            seq.push(val_op(count, 1));
            if index != last {
                zeros(&mut seq, last - index);
            }
        }
        let oldlen = op.bytes();
        if seq.len() > oldlen && v.len() + seq.len() - oldlen > max_bytes {
            return promote(v, index, count);
        }
        if p + oldlen > v.len() {
            // A cut XZERO at the end: Redis writes the new opcodes over it
            // and grows the length by their difference, so the last byte
            // written falls past the end.
            let new_len = v.len() + seq.len() - oldlen;
            v.truncate(p);
            v.extend_from_slice(&seq);
            v.truncate(new_len);
        } else {
            replace_range(v, p, oldlen, &seq);
        }
    }
    // Step 4: adjacent VAL opcodes of one value merged, from the opcode
    // before the one changed, over at most 5 opcodes.
    let mut q = prev.unwrap_or(HDR);
    let mut scan = 5;
    while scan > 0 {
        let Some(op) = Op::at(v, q) else { break };
        scan -= 1;
        if let (Op::Val(v1, l1), Some(Op::Val(v2, l2))) = (op, Op::at(v, q + 1)) {
            if v1 == v2 && l1 + l2 <= SPARSE_VAL_MAX_LEN {
                v[q + 1] = val_op(v1, l1 + l2);
                v.remove(q);
                continue;
            }
        }
        q += op.bytes();
    }
    mark_changed(v);
    Ok(true)
}

/// Replaces the `old` bytes at `at` with `new`, growing the buffer by
/// doubling as a vector's push does. (Not `ThinVec::splice`: it reserves
/// the whole length again as *additional* room, so a sparse value would
/// end up with twice the memory it needs.)
fn replace_range(v: &mut GrowBuf, at: usize, old: usize, new: &[u8]) {
    let len = v.len();
    if new.len() >= old {
        let extra = new.len() - old;
        v.reserve(extra);
        v.resize(len + extra, 0);
        v.copy_within(at + old..len, at + new.len());
    } else {
        v.copy_within(at + old..len, at + new.len());
        v.truncate(len - (old - new.len()));
    }
    v[at..at + new.len()].copy_from_slice(new);
}

fn promote(v: &mut GrowBuf, index: usize, count: u8) -> Result<bool, Corrupt> {
    if !to_dense(v) {
        return Err(Corrupt);
    }
    dense_set(&mut v[HDR..], index, count);
    Ok(true)
}

/// Adds an element (PFADD): whether a register changed. `Err` if the
/// value is corrupt.
pub fn add(v: &mut GrowBuf, ele: &[u8], sparse_max_bytes: usize) -> Result<bool, Corrupt> {
    let (index, count) = pat_len(ele);
    if v[4] == DENSE {
        Ok(dense_set(&mut v[HDR..], index, count))
    } else {
        sparse_set(v, index, count, sparse_max_bytes)
    }
}

/// Marks the cached cardinality stale (after changes).
pub fn mark_changed(v: &mut [u8]) {
    v[15] |= 0x80;
}

/// The cached cardinality, if it is current.
pub fn cached(v: &[u8]) -> Option<u64> {
    (v[15] & 0x80 == 0).then(|| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[8..16]);
        u64::from_le_bytes(b)
    })
}

/// Stores a computed cardinality in the header (PFCOUNT's cache).
pub fn set_cached(v: &mut [u8], card: u64) {
    v[8..16].copy_from_slice(&card.to_le_bytes());
}

/// Raises `max` register by register to the value's (PFCOUNT of several
/// keys, PFMERGE); `Err` if it is corrupt.
pub fn merge_into(max: &mut [u8; REGISTERS], v: &[u8]) -> Result<(), Corrupt> {
    if v[4] == DENSE {
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(&v[HDR..], i));
        }
        return Ok(());
    }
    let runs = sparse_runs(&v[HDR..]).ok_or(Corrupt)?;
    let mut i = 0;
    for (val, len) in runs {
        for m in &mut max[i..i + len] {
            *m = (*m).max(val);
        }
        i += len;
    }
    Ok(())
}

/// Writes the registers `max` into `v` (PFMERGE's target), dense if
/// `dense`, raising only (as Redis's per-register sets).
pub fn store(
    v: &mut GrowBuf,
    max: &[u8; REGISTERS],
    dense: bool,
    max_bytes: usize,
) -> Result<(), Corrupt> {
    if dense && !to_dense(v) {
        return Err(Corrupt);
    }
    for (i, &m) in max.iter().enumerate() {
        if m == 0 {
            continue;
        }
        if v[4] == DENSE {
            dense_set(&mut v[HDR..], i, m);
        } else {
            sparse_set(v, i, m, max_bytes)?;
        }
    }
    mark_changed(v);
    Ok(())
}

/// The histogram of register values.
fn histogram(v: &[u8]) -> Result<[u32; 64], Corrupt> {
    let mut h = [0u32; 64];
    if v[4] == DENSE {
        for i in 0..REGISTERS {
            h[dense_get(&v[HDR..], i) as usize] += 1;
        }
    } else {
        for (val, len) in sparse_runs(&v[HDR..]).ok_or(Corrupt)? {
            h[val as usize] += len as u32;
        }
    }
    Ok(h)
}

fn histogram_raw(regs: &[u8; REGISTERS]) -> [u32; 64] {
    let mut h = [0u32; 64];
    for &r in regs {
        h[(r & 63) as usize] += 1;
    }
    h
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

fn estimate(h: &[u32; 64]) -> u64 {
    let m = REGISTERS as f64;
    let q = Q as usize;
    let mut z = m * tau((m - h[q + 1] as f64) / m);
    for j in (1..=q).rev() {
        z += h[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(h[0] as f64 / m);
    (ALPHA_INF * m * m / z).round() as u64
}

/// The estimated cardinality of one value; `Err` if it is corrupt.
pub fn count(v: &[u8]) -> Result<u64, Corrupt> {
    Ok(estimate(&histogram(v)?))
}

/// The estimated cardinality of merged registers.
pub fn count_raw(regs: &[u8; REGISTERS]) -> u64 {
    estimate(&histogram_raw(regs))
}

/// A dense value's registers (PFDEBUG GETREG).
pub fn registers(v: &[u8]) -> Vec<u8> {
    (0..REGISTERS).map(|i| dense_get(&v[HDR..], i)).collect()
}

/// A sparse value's opcodes in Redis's PFDEBUG DECODE words (`z:len`,
/// `Z:len`, `v:value,len`); `None` if it is dense.
pub fn decode(v: &[u8]) -> Option<String> {
    if v[4] == DENSE {
        return None;
    }
    // (A cut XZERO at the end reads a zero byte after it, as Redis reads
    // its string's terminator.)
    let mut body = v[HDR..].to_vec();
    let end = body.len();
    body.push(0);
    let mut out = Vec::new();
    let mut p = 0;
    while let (true, Some(op)) = (p < end, Op::at(&body, p)) {
        out.push(match op {
            Op::Zero(n) => format!("z:{n}"),
            Op::XZero(n) => format!("Z:{n}"),
            Op::Val(v, n) => format!("v:{v},{n}"),
        });
        p += op.bytes();
    }
    Some(out.join(" "))
}

/// Whether the value is dense (PFDEBUG ENCODING).
pub fn is_dense(v: &[u8]) -> bool {
    v[4] == DENSE
}

/// PFSELFTEST: Redis's checks of its HyperLogLog code, run on this one.
/// Dense registers (6 bits each, packed) read back what was written,
/// ten times over random values; then `cycles` elements (Redis: ten
/// million) go into a dense and a sparse value (`sparse_max_bytes` for
/// its promotion), and at 1, 10, 100... the sparse one is still sparse
/// while small, both estimate the same, and the estimate is within six
/// standard errors (one at 10). `seed` varies the elements.
pub fn selftest(seed: u64, cycles: u64, sparse_max_bytes: usize) -> Result<(), String> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut regs = vec![0u8; DENSE_SIZE - HDR];
    for _ in 0..10 {
        let vals: Vec<u8> = (0..REGISTERS).map(|_| (next() & 63) as u8).collect();
        for (i, &v) in vals.iter().enumerate() {
            dense_put(&mut regs, i, v);
        }
        if let Some(i) = (0..REGISTERS).find(|&i| dense_get(&regs, i) != vals[i]) {
            return Err(format!("TESTFAILED Register error at {i}"));
        }
    }
    let mut dense = GrowBuf::from(&new()[..]);
    to_dense(&mut dense);
    let mut sparse = GrowBuf::from(&new()[..]);
    let relerr = 1.04 / (REGISTERS as f64).sqrt();
    let salt = next();
    let mut checkpoint = 1u64;
    let corrupt = |_| "TESTFAILED the value was found corrupt".to_string();
    for j in 1..=cycles {
        let ele = (j ^ salt).to_le_bytes();
        add(&mut dense, &ele, sparse_max_bytes).map_err(corrupt)?;
        add(&mut sparse, &ele, sparse_max_bytes).map_err(corrupt)?;
        if j != checkpoint {
            continue;
        }
        if (j as usize) < sparse_max_bytes / 2 && is_dense(&sparse) {
            return Err("TESTFAILED sparse encoding not used".into());
        }
        let card = count(&dense).map_err(corrupt)?;
        if count(&sparse).map_err(corrupt)? != card {
            return Err("TESTFAILED dense/sparse disagree".into());
        }
        let abserr = (checkpoint as i64 - card as i64).unsigned_abs();
        let maxerr = if j == 10 {
            1
        } else {
            (relerr * 6.0 * checkpoint as f64).ceil() as u64
        };
        if abserr > maxerr {
            return Err(format!(
                "TESTFAILED Too big error. card:{checkpoint} abserr:{abserr}"
            ));
        }
        checkpoint *= 10;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_self_test_passes() {
        assert_eq!(super::selftest(42, 100_000, 3000), Ok(()));
    }

    use super::*;

    #[test]
    fn a_new_value_is_redis_s_empty_sparse_one() {
        let v = new();
        assert_eq!(&v[..5], b"HYLL\x01");
        assert_eq!(&v[16..], &[0x7f, 0xff]);
        assert_eq!(count(&v), Ok(0));
        assert_eq!(cached(&v), Some(0));
    }

    #[test]
    fn replacing_a_range_grows_and_shrinks_in_place() {
        let mut v = GrowBuf::from(&b"abcdef"[..]);
        replace_range(&mut v, 2, 1, b"XYZ");
        assert_eq!(&v[..], b"abXYZdef");
        replace_range(&mut v, 1, 4, b"-");
        assert_eq!(&v[..], b"a-def");
        replace_range(&mut v, 5, 0, b"!");
        assert_eq!(&v[..], b"a-def!");
    }

    #[test]
    fn a_cut_xzero_at_the_end_reads_its_missing_byte_as_zero() {
        // An empty sparse value whose registers a SETRANGE overwrote with
        // `lcj`: XZERO of 11364, then an XZERO cut by the end (0x6a, 0).
        let mut v = GrowBuf::from(&new()[..]);
        v.truncate(HDR);
        v.extend_from_slice(b"lcj");
        assert!(matches!(Op::at(&v, HDR + 2), Some(Op::XZero(10753))));
        // Registers below 11364 are found in the first opcode, those in
        // the cut one are too: both updates succeed, as on Redis.
        assert_eq!(sparse_set(&mut v, 5, 1, 3000), Ok(true));
        assert_eq!(sparse_set(&mut v, 12000, 1, 3000), Ok(true));
    }

    #[test]
    fn sparse_values_stay_well_formed_as_they_grow() {
        for seed in 0..200u32 {
            let mut v = GrowBuf::from(&new()[..]);
            for i in 0..400u32 {
                let e = format!("e{}", seed.wrapping_mul(7919).wrapping_add(i * 31));
                add(&mut v, e.as_bytes(), 3000).unwrap();
                if !is_dense(&v) {
                    assert!(sparse_ops(&v[HDR..]).is_some(), "seed {seed} i {i}");
                }
            }
        }
    }

    #[test]
    fn a_sparse_value_keeps_at_most_twice_its_bytes() {
        let mut v = GrowBuf::from(&new()[..]);
        for i in 0..200u32 {
            add(&mut v, format!("el:{i}").as_bytes(), 3000).unwrap();
        }
        assert!(
            v.capacity() < 2 * v.len(),
            "{} for {}",
            v.capacity(),
            v.len()
        );
    }

    #[test]
    fn counts_stay_close_and_dense_agrees_with_sparse() {
        let mut v = GrowBuf::from(&new()[..]);
        for i in 0..2000u32 {
            add(&mut v, format!("e{i}").as_bytes(), 3000).unwrap();
        }
        let sparse = count(&v).unwrap();
        assert!((1900..2100).contains(&sparse), "{sparse}");
        let mut d = v.clone();
        assert!(to_dense(&mut d));
        assert_eq!(count(&d).unwrap(), sparse);
        let mut max = [0u8; REGISTERS];
        merge_into(&mut max, &v).unwrap();
        assert_eq!(count_raw(&max), sparse);
    }

    #[test]
    fn dense_registers_round_trip() {
        let mut regs = vec![0u8; DENSE_SIZE - HDR];
        for i in 0..REGISTERS {
            dense_put(&mut regs, i, (i % 64) as u8);
        }
        for i in 0..REGISTERS {
            assert_eq!(dense_get(&regs, i), (i % 64) as u8);
        }
    }
}
