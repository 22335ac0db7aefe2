//! The CRC-64 that closes an RDB file: Redis's "Jones" variant
//! (polynomial 0xad93d23594c935a9, reflected input and output, initial
//! value 0, no final xor). Check value: `"123456789"` → `0xe9c6d914c4b8d9ca`.

/// The reflected polynomial (bit-reversed 0xad93d23594c935a9).
const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = table();

/// Continues a CRC over `data` (start from 0).
pub fn update(mut crc: u64, data: &[u8]) -> u64 {
    for &b in data {
        crc = TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_check_value() {
        assert_eq!(super::update(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        // Incremental updates give the same result.
        let a = super::update(0, b"1234");
        assert_eq!(super::update(a, b"56789"), 0xe9c6_d914_c4b8_d9ca);
    }
}
