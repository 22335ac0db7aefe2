//! LEB128 varints and zigzag integers: the one encoding the compact
//! collections (list and hash listpacks, zset listpacks) and the snapshot
//! codec use for lengths and small integers.
//!
//! `read_varint` is for buffers this process wrote (it indexes, and a
//! truncated varint panics); the snapshot reader, which reads files, has
//! its own bounds-checked decoder in `persist::codec`.

/// Bytes `put_varint` writes for `n`.
#[inline]
pub fn varint_len(mut n: u64) -> usize {
    let mut l = 1;
    while n >= 0x80 {
        n >>= 7;
        l += 1;
    }
    l
}

/// Appends `n`, 7 bits a byte, low bits first.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Writes `n` at the start of `dst` (room for `varint_len(n)` bytes);
/// returns the bytes written.
#[inline]
pub fn write_varint(dst: &mut [u8], mut n: u64) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        dst[i] = n as u8 | 0x80;
        n >>= 7;
        i += 1;
    }
    dst[i] = n as u8;
    i + 1
}

/// Decodes the varint at `p`: (value, position after it).
#[inline]
pub fn read_varint(buf: &[u8], mut p: usize) -> (u64, usize) {
    let b = buf[p];
    if b < 0x80 {
        return (u64::from(b), p + 1);
    }
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[p];
        p += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (n, p);
        }
        shift += 7;
    }
}

/// Maps signed to unsigned so small magnitudes of either sign stay short.
#[inline]
pub fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            put_varint(&mut v, n);
            assert_eq!(v.len(), varint_len(n), "{n}");
            let mut w = vec![0u8; 10];
            assert_eq!(write_varint(&mut w, n), v.len());
            assert_eq!(&w[..v.len()], &v[..]);
            v.push(0xAA);
            assert_eq!(read_varint(&v, 0), (n, v.len() - 1));
        }
        for i in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(i)), i);
        }
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1)), (0, 1, 2));
    }
}
