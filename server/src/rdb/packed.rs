//! Redis's packed in-memory encodings, as they appear inside RDB strings:
//! listpack (7.0: small hashes, sorted sets, list nodes), ziplist (before
//! 7.0: the same roles; RDB files from older servers), and intset (small
//! integer sets). Only reading is needed: anykv writes the generic RDB
//! types, which Redis loads into whichever encoding fits.
//!
//! Every element comes out as bytes (integers formatted as Redis would),
//! every offset is checked, and a malformed blob is an error.

use crate::util::fmt_i64;

/// A malformed packed blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub struct PackedError {
    pub what: &'static str,
    pub why: &'static str,
}

fn bad(what: &'static str, why: &'static str) -> PackedError {
    PackedError { what, why }
}

fn int_bytes(v: i64) -> Vec<u8> {
    let mut b = [0u8; 20];
    fmt_i64(v, &mut b).to_vec()
}

fn get<'a>(b: &'a [u8], at: usize, n: usize, what: &'static str) -> Result<&'a [u8], PackedError> {
    b.get(at..at.checked_add(n).ok_or(bad(what, "length overflow"))?)
        .ok_or(bad(what, "entry runs past the end"))
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// A little-endian signed integer of `d.len()` (1 to 8) bytes, as
/// listpack, ziplist and intset store them.
fn signed_le(d: &[u8]) -> i64 {
    let mut v = 0u64;
    for (i, &x) in d.iter().enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    sign_extend(v, 8 * d.len() as u32)
}

/// The elements of a listpack: `u32 total bytes, u16 count, entries, 0xFF`,
/// each entry an encoding byte (with data) followed by its back-length.
pub fn listpack(b: &[u8]) -> Result<Vec<Vec<u8>>, PackedError> {
    const W: &str = "listpack";
    if b.len() < 7 {
        return Err(bad(W, "shorter than its header"));
    }
    let total = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if total != b.len() {
        return Err(bad(W, "header length differs from the blob"));
    }
    let count = u16::from_le_bytes([b[4], b[5]]);
    let mut out = Vec::with_capacity(usize::from(count).min(b.len()));
    let mut p = 6;
    loop {
        let e = *b.get(p).ok_or(bad(W, "no end marker"))?;
        if e == 0xFF {
            if p + 1 != b.len() {
                return Err(bad(W, "bytes after the end marker"));
            }
            break;
        }
        let start = p;
        let (elem, len) = if e & 0x80 == 0 {
            (int_bytes(i64::from(e & 0x7f)), 1)
        } else if e & 0xC0 == 0x80 {
            let n = usize::from(e & 0x3f);
            (get(b, p + 1, n, W)?.to_vec(), 1 + n)
        } else if e & 0xE0 == 0xC0 {
            let lo = *b.get(p + 1).ok_or(bad(W, "truncated int"))?;
            let v = (u64::from(e & 0x1f) << 8) | u64::from(lo);
            (int_bytes(sign_extend(v, 13)), 2)
        } else if e & 0xF0 == 0xE0 {
            let lo = *b.get(p + 1).ok_or(bad(W, "truncated length"))?;
            let n = (usize::from(e & 0x0f) << 8) | usize::from(lo);
            (get(b, p + 2, n, W)?.to_vec(), 2 + n)
        } else {
            match e {
                0xF0 => {
                    let l = get(b, p + 1, 4, W)?;
                    let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                    (get(b, p + 5, n, W)?.to_vec(), 5 + n)
                }
                0xF1..=0xF4 => {
                    let n = match e {
                        0xF1 => 2,
                        0xF2 => 3,
                        0xF3 => 4,
                        _ => 8,
                    };
                    let d = get(b, p + 1, n, W)?;
                    (int_bytes(signed_le(d)), 1 + n)
                }
                _ => return Err(bad(W, "unknown entry encoding")),
            }
        };
        p = start + len;
        // The back-length: the entry's length in 7-bit groups, 1-5 bytes.
        let backlen = crate::db::stream::lp::backlen_size(len as u64);
        get(b, p, backlen, W)?;
        p += backlen;
        out.push(elem);
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return Err(bad(W, "element count differs from the header"));
    }
    Ok(out)
}

/// The elements of a ziplist: `u32 bytes, u32 tail offset, u16 count,
/// entries, 0xFF`, each entry a previous-length, an encoding and data.
pub fn ziplist(b: &[u8]) -> Result<Vec<Vec<u8>>, PackedError> {
    const W: &str = "ziplist";
    if b.len() < 11 {
        return Err(bad(W, "shorter than its header"));
    }
    let total = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if total != b.len() {
        return Err(bad(W, "header length differs from the blob"));
    }
    let count = u16::from_le_bytes([b[8], b[9]]);
    let mut out = Vec::with_capacity(usize::from(count).min(b.len()));
    let mut p = 10;
    loop {
        let first = *b.get(p).ok_or(bad(W, "no end marker"))?;
        if first == 0xFF {
            if p + 1 != b.len() {
                return Err(bad(W, "bytes after the end marker"));
            }
            break;
        }
        p += if first == 0xFE { 5 } else { 1 };
        let e = *b.get(p).ok_or(bad(W, "truncated entry"))?;
        let (elem, len) = match e >> 6 {
            0 => {
                let n = usize::from(e & 0x3f);
                (get(b, p + 1, n, W)?.to_vec(), 1 + n)
            }
            1 => {
                let lo = *b.get(p + 1).ok_or(bad(W, "truncated length"))?;
                let n = (usize::from(e & 0x3f) << 8) | usize::from(lo);
                (get(b, p + 2, n, W)?.to_vec(), 2 + n)
            }
            2 => {
                let l = get(b, p + 1, 4, W)?;
                let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                (get(b, p + 5, n, W)?.to_vec(), 5 + n)
            }
            _ => {
                let n = match e {
                    0xC0 => 2,
                    0xD0 => 4,
                    0xE0 => 8,
                    0xF0 => 3,
                    0xFE => 1,
                    0xF1..=0xFD => 0,
                    _ => return Err(bad(W, "unknown entry encoding")),
                };
                if n == 0 {
                    (int_bytes(i64::from(e & 0x0f) - 1), 1)
                } else {
                    let d = get(b, p + 1, n, W)?;
                    (int_bytes(signed_le(d)), 1 + n)
                }
            }
        };
        p += len;
        out.push(elem);
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return Err(bad(W, "element count differs from the header"));
    }
    Ok(out)
}

/// The members of an intset: `u32 width (2, 4 or 8), u32 count, values`,
/// little-endian, ascending.
pub fn intset(b: &[u8]) -> Result<Vec<i64>, PackedError> {
    const W: &str = "intset";
    let head = get(b, 0, 8, W)?;
    let width = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let n = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(bad(W, "bad integer width"));
    }
    if n.checked_mul(width).and_then(|x| x.checked_add(8)) != Some(b.len()) {
        return Err(bad(W, "count differs from the blob's size"));
    }
    let mut out = Vec::with_capacity(n);
    for c in b[8..].chunks_exact(width) {
        out.push(signed_le(c));
    }
    if !out.windows(2).all(|w| w[0] < w[1]) {
        return Err(bad(W, "members not strictly ascending"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(entries: &[&[u8]]) -> Vec<u8> {
        // Hand-built: each entry is already an encoded entry + backlen.
        let body: Vec<u8> = entries.concat();
        let total = 6 + body.len() + 1;
        let mut b = (total as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        b.extend_from_slice(&body);
        b.push(0xFF);
        b
    }

    #[test]
    fn listpack_entries_of_every_kind() {
        let b = lp(&[
            &[5, 1],                            // 7-bit uint 5
            &[0x83, b'a', b'b', b'c', 4],       // 6-bit string "abc"
            &[0xDF, 0xFF, 2],                   // 13-bit int -1
            &[0xF1, 0x00, 0x80, 3],             // int16 -32768
            &[0xF3, 0x40, 0x42, 0x0F, 0x00, 5], // int32 1000000
        ]);
        let got = listpack(&b).unwrap();
        let want: Vec<&[u8]> = vec![b"5", b"abc", b"-1", b"-32768", b"1000000"];
        assert_eq!(got, want.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
        // Truncations and garbage never panic.
        for cut in 0..b.len() {
            assert!(listpack(&b[..cut]).is_err());
        }
    }

    #[test]
    fn ziplist_and_intset() {
        // zlbytes, zltail, zllen=3, entries: "hi", int 12 (immediate), int8 -5.
        let mut body = vec![0u8, 0x02, b'h', b'i', 4, 0xFD, 2, 0xFE, 0xFB];
        body.push(0xFF);
        let mut b = ((10 + body.len()) as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&body);
        let want: Vec<Vec<u8>> = vec![b"hi".to_vec(), b"12".to_vec(), b"-5".to_vec()];
        assert_eq!(ziplist(&b).unwrap(), want);
        for cut in 0..b.len() {
            assert!(ziplist(&b[..cut]).is_err());
        }
        let mut s = 2u32.to_le_bytes().to_vec();
        s.extend_from_slice(&2u32.to_le_bytes());
        s.extend_from_slice(&(-3i16).to_le_bytes());
        s.extend_from_slice(&7i16.to_le_bytes());
        assert_eq!(intset(&s).unwrap(), vec![-3, 7]);
        assert!(intset(&s[..10]).is_err());
    }
}
