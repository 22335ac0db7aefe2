//! Redis's listpack, byte for byte (7.0's `listpack.c` format): a stream's
//! nodes are listpacks laid out as Redis lays them out (see
//! `super::node`). Keeping Redis's exact bytes makes a node's size, and
//! so where a new node starts and what approximate trimming (`MAXLEN ~`)
//! removes, the same as on redis-server; a node goes to an RDB file or a
//! DUMP payload as it is, and comes from one after a check.
//!
//! Layout: `u32 total bytes, u16 element count (65535: unknown), entries,
//! 0xFF`; an entry is an encoding byte with its data (an integer in 1 to
//! 9 bytes, or a string with its length) followed by its back-length,
//! the size of encoding and data in 1 to 5 bytes, read right to left.

use crate::rdb::packed::PackedError;

const HEADER: usize = 6;
const EOF: u8 = 0xFF;
/// The element count once it no longer fits the header.
const COUNT_UNKNOWN: u16 = u16::MAX;

/// One element as stored: integers are kept as integers (a string that
/// is a canonical integer is stored as one, as Redis does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem<'a> {
    Int(i64),
    Str(&'a [u8]),
}

impl Elem<'_> {
    /// The element as an integer (a string that is not one reads as 0,
    /// as Redis's `lpGetInteger` callers never meet).
    pub fn int(self) -> i64 {
        match self {
            Elem::Int(v) => v,
            Elem::Str(s) => crate::util::parse_i64(s).unwrap_or(0),
        }
    }

    /// Whether the element is `b` (as bytes).
    pub fn is(self, b: &[u8]) -> bool {
        match self {
            Elem::Str(s) => s == b,
            Elem::Int(v) => canonical_int(b) == Some(v),
        }
    }

    /// The element's bytes, an integer written out in `buf`.
    pub fn bytes<'b>(&'b self, buf: &'b mut [u8; 20]) -> &'b [u8] {
        match self {
            Elem::Str(s) => s,
            Elem::Int(v) => crate::util::fmt_i64(*v, buf),
        }
    }
}

/// `s` as an integer if listpack stores it as one: Redis 7.0's
/// `lpStringToInt64`, the canonical form only (no sign on zero, no
/// leading zeros or `+`, at most 20 bytes).
pub fn canonical_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// Bytes of the back-length for an entry of `l` bytes (Redis's
/// `lpEncodeBacklen` thresholds).
pub fn backlen_size(l: u64) -> usize {
    if l <= 127 {
        1
    } else if l < 16_383 {
        2
    } else if l < 2_097_151 {
        3
    } else if l < 268_435_455 {
        4
    } else {
        5
    }
}

fn put_backlen(out: &mut Vec<u8>, l: u64) {
    let n = backlen_size(l);
    for i in (0..n).rev() {
        let group = ((l >> (7 * i)) & 127) as u8;
        // The first byte written (the highest group) has no continuation
        // bit; reading right to left stops there.
        out.push(if i == n - 1 { group } else { group | 128 });
    }
}

/// The encoding and data of integer `v`, in Redis's smallest form.
fn encode_int(out: &mut Vec<u8>, v: i64) {
    if (0..=127).contains(&v) {
        out.push(v as u8);
    } else if (-4096..=4095).contains(&v) {
        let u = if v < 0 { (1i64 << 13) + v } else { v } as u64;
        out.push(((u >> 8) as u8) | 0xC0);
        out.push(u as u8);
    } else {
        let (tag, n) = if (-32_768..=32_767).contains(&v) {
            (0xF1, 2)
        } else if (-8_388_608..=8_388_607).contains(&v) {
            (0xF2, 3)
        } else if (-2_147_483_648..=2_147_483_647).contains(&v) {
            (0xF3, 4)
        } else {
            (0xF4, 8)
        };
        out.push(tag);
        out.extend_from_slice(&(v as u64).to_le_bytes()[..n]);
    }
}

/// The encoding and data of string `s`.
fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 64 {
        out.push(0x80 | n as u8);
    } else if n < 4096 {
        out.push(0xE0 | (n >> 8) as u8);
        out.push(n as u8);
    } else {
        out.push(0xF0);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(s);
}

/// Size of the encoding and data of the entry starting with `b` (None:
/// not an entry).
fn encoded_size(b: &[u8]) -> Option<usize> {
    let e = *b.first()?;
    Some(if e & 0x80 == 0 {
        1
    } else if e & 0xC0 == 0x80 {
        1 + usize::from(e & 0x3F)
    } else if e & 0xE0 == 0xC0 {
        2
    } else if e & 0xF0 == 0xE0 {
        2 + ((usize::from(e & 0x0F) << 8) | usize::from(*b.get(1)?))
    } else {
        match e {
            0xF0 => {
                let l = b.get(1..5)?;
                5 + u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize
            }
            0xF1 => 3,
            0xF2 => 4,
            0xF3 => 5,
            0xF4 => 9,
            _ => return None,
        }
    })
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// A listpack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lp {
    buf: Vec<u8>,
}

impl Default for Lp {
    fn default() -> Self {
        Lp::new()
    }
}

impl Lp {
    /// An empty listpack.
    pub fn new() -> Lp {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&7u32.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes());
        buf.push(EOF);
        Lp { buf }
    }

    /// A listpack from its bytes (an RDB file's, a DUMP payload's), every
    /// entry checked: it must be one Redis would read.
    pub fn from_bytes(buf: Vec<u8>) -> Result<Lp, PackedError> {
        let bad = |why| PackedError {
            what: "listpack",
            why,
        };
        if buf.len() < HEADER + 1 {
            return Err(bad("shorter than its header"));
        }
        let total = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if total != buf.len() {
            return Err(bad("header length differs from the blob"));
        }
        let mut p = HEADER;
        let mut n: usize = 0;
        loop {
            match buf.get(p) {
                None => return Err(bad("no end marker")),
                Some(&EOF) => break,
                Some(_) => {}
            }
            let size = encoded_size(&buf[p..]).ok_or(bad("unknown entry encoding"))?;
            let end = p
                .checked_add(size)
                .and_then(|e| e.checked_add(backlen_size(size as u64)))
                .ok_or(bad("length overflow"))?;
            if end >= buf.len() {
                return Err(bad("entry runs past the end"));
            }
            if read_backlen(&buf, end - 1) != Some(size as u64) {
                return Err(bad("back-length differs from the entry"));
            }
            p = end;
            n += 1;
        }
        if p + 1 != buf.len() {
            return Err(bad("bytes after the end marker"));
        }
        let count = u16::from_le_bytes([buf[4], buf[5]]);
        if count != COUNT_UNKNOWN && usize::from(count) != n {
            return Err(bad("element count differs from the header"));
        }
        Ok(Lp { buf })
    }

    /// The listpack's bytes, as Redis stores them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Its size in bytes (Redis's `lpBytes`).
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated (memory accounting).
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back what it allocated past its size.
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// The first element's position.
    pub fn first(&self) -> Option<usize> {
        (self.buf[HEADER] != EOF).then_some(HEADER)
    }

    /// The last element's position.
    pub fn last(&self) -> Option<usize> {
        let end = self.buf.len() - 1;
        (end > HEADER).then(|| self.start_before(end))
    }

    /// The position of the element after the one at `p`.
    pub fn next(&self, p: usize) -> Option<usize> {
        let size = encoded_size(&self.buf[p..]).unwrap_or(1);
        let q = p + size + backlen_size(size as u64);
        (self.buf[q] != EOF).then_some(q)
    }

    /// The position of the element before the one at `p`.
    pub fn prev(&self, p: usize) -> Option<usize> {
        (p > HEADER).then(|| self.start_before(p))
    }

    /// The start of the entry that ends just before `end`.
    fn start_before(&self, end: usize) -> usize {
        let l = read_backlen(&self.buf, end - 1).unwrap_or(0);
        end - backlen_size(l) - l as usize
    }

    /// The element at `p`.
    pub fn get(&self, p: usize) -> Elem<'_> {
        let b = &self.buf[p..];
        let e = b[0];
        if e & 0x80 == 0 {
            Elem::Int(i64::from(e))
        } else if e & 0xC0 == 0x80 {
            Elem::Str(&b[1..1 + usize::from(e & 0x3F)])
        } else if e & 0xE0 == 0xC0 {
            let v = (u64::from(e & 0x1F) << 8) | u64::from(b[1]);
            Elem::Int(sign_extend(v, 13))
        } else if e & 0xF0 == 0xE0 {
            let n = (usize::from(e & 0x0F) << 8) | usize::from(b[1]);
            Elem::Str(&b[2..2 + n])
        } else {
            let int = |n: usize| {
                let mut v = 0u64;
                for (i, &x) in b[1..1 + n].iter().enumerate() {
                    v |= u64::from(x) << (8 * i);
                }
                Elem::Int(sign_extend(v, 8 * n as u32))
            };
            match e {
                0xF0 => {
                    let n = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as usize;
                    Elem::Str(&b[5..5 + n])
                }
                0xF1 => int(2),
                0xF2 => int(3),
                0xF3 => int(4),
                _ => int(8),
            }
        }
    }

    /// Appends integer `v`.
    pub fn append_int(&mut self, v: i64) {
        self.push(|out| encode_int(out, v));
    }

    /// Appends `s` (as an integer when it is a canonical one).
    pub fn append(&mut self, s: &[u8]) {
        match canonical_int(s) {
            Some(v) => self.append_int(v),
            None => self.push(|out| encode_str(out, s)),
        }
    }

    /// Appends the element `encode` writes (encoding and data), then its
    /// back-length, before the end marker.
    fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let end = self.buf.len() - 1;
        self.buf.truncate(end);
        encode(&mut self.buf);
        let size = (self.buf.len() - end) as u64;
        put_backlen(&mut self.buf, size);
        self.buf.push(EOF);
        self.grew(1);
    }

    /// Replaces the element at `p` with integer `v` (its size may change:
    /// what follows moves; `p` stays the element's position).
    pub fn replace_int(&mut self, p: usize, v: i64) {
        let size = encoded_size(&self.buf[p..]).unwrap_or(1);
        let old_end = p + size + backlen_size(size as u64);
        let mut new = Vec::with_capacity(14);
        encode_int(&mut new, v);
        let n = new.len() as u64;
        put_backlen(&mut new, n);
        self.buf.splice(p..old_end, new);
        self.grew(0);
    }

    /// Updates the header after a change (`added` elements more).
    fn grew(&mut self, added: u16) {
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        let count = u16::from_le_bytes([self.buf[4], self.buf[5]]);
        if count != COUNT_UNKNOWN {
            let c = count.saturating_add(added);
            self.buf[4..6].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// The back-length whose last byte is at `at`.
fn read_backlen(b: &[u8], mut at: usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let x = *b.get(at)?;
        v |= u64::from(x & 127) << shift;
        if x & 128 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
        at = at.checked_sub(1)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elems(lp: &Lp) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut p = lp.first();
        while let Some(q) = p {
            let mut buf = [0u8; 20];
            out.push(lp.get(q).bytes(&mut buf).to_vec());
            p = lp.next(q);
        }
        out
    }

    #[test]
    fn canonical_ints_are_redis_s() {
        for (s, v) in [
            (&b"0"[..], Some(0)),
            (b"-1", Some(-1)),
            (b"127", Some(127)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-0", None),
            (b"01", None),
            (b"+1", None),
            (b" 1", None),
            (b"1.0", None),
            (b"", None),
        ] {
            assert_eq!(canonical_int(s), v, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn every_encoding_reads_back_forward_and_backward() {
        let ints = [
            0,
            127,
            128,
            -1,
            -4096,
            4095,
            4096,
            -4097,
            32_767,
            -32_768,
            8_388_607,
            -8_388_608,
            2_147_483_647,
            -2_147_483_648,
            i64::MAX,
            i64::MIN,
        ];
        let strs: Vec<Vec<u8>> = [0usize, 1, 63, 64, 4095, 4096, 16_378, 16_379, 70_000]
            .iter()
            .map(|&n| vec![b'x'; n])
            .collect();
        let mut lp = Lp::new();
        let mut want: Vec<Vec<u8>> = Vec::new();
        for v in ints {
            lp.append_int(v);
            want.push(v.to_string().into_bytes());
        }
        for s in &strs {
            lp.append(s);
            want.push(s.clone());
        }
        lp.append(b"12345");
        want.push(b"12345".to_vec());
        assert_eq!(elems(&lp), want);
        // Backward.
        let mut back = Vec::new();
        let mut p = lp.last();
        while let Some(q) = p {
            let mut buf = [0u8; 20];
            back.push(lp.get(q).bytes(&mut buf).to_vec());
            p = lp.prev(q);
        }
        back.reverse();
        assert_eq!(back, want);
        // The RDB reader (written from Redis's description) agrees, and
        // the checked constructor takes it.
        let read = crate::rdb::packed::listpack(lp.as_bytes()).unwrap();
        assert_eq!(read, want);
        assert_eq!(Lp::from_bytes(lp.as_bytes().to_vec()).unwrap(), lp);
    }

    #[test]
    fn replacing_an_integer_moves_what_follows() {
        let mut lp = Lp::new();
        lp.append_int(127);
        lp.append(b"after");
        let p = lp.first().unwrap();
        lp.replace_int(p, 128); // one byte to two
        assert_eq!(elems(&lp), vec![b"128".to_vec(), b"after".to_vec()]);
        lp.replace_int(p, 5);
        assert_eq!(elems(&lp), vec![b"5".to_vec(), b"after".to_vec()]);
        assert_eq!(lp.len_bytes(), lp.as_bytes().len());
        Lp::from_bytes(lp.as_bytes().to_vec()).unwrap();
    }

    #[test]
    fn malformed_blobs_are_refused() {
        let mut lp = Lp::new();
        lp.append(b"abc");
        let good = lp.as_bytes().to_vec();
        let mut cut = good.clone();
        cut.truncate(good.len() - 2);
        assert!(Lp::from_bytes(cut).is_err());
        let mut bad_count = good.clone();
        bad_count[4] = 2;
        assert!(Lp::from_bytes(bad_count).is_err());
        let mut bad_back = good.clone();
        let n = bad_back.len();
        bad_back[n - 2] = 9;
        assert!(Lp::from_bytes(bad_back).is_err());
        let mut bad_enc = good;
        bad_enc[6] = 0xF5;
        assert!(Lp::from_bytes(bad_enc).is_err());
    }
}
