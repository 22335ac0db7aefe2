//! LZF decompression, for the compressed strings Redis writes into RDB
//! files (`rdbcompression yes`, strings over 20 bytes that shrink).
//!
//! The format is a sequence of runs: a control byte below 32 is a literal
//! run of `ctrl + 1` bytes; otherwise it is a back reference whose length
//! is `(ctrl >> 5) + 2` (with a length byte following when the 3-bit field
//! is 7) and whose distance is `((ctrl & 0x1f) << 8) + next byte + 1`.
//! References may overlap their own output (run-length style), so they are
//! copied byte by byte. Every index is checked: bad input is an error,
//! never a panic, and the output never exceeds the length the file states.

/// Why compressed data could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LzfError {
    #[error("LZF data ends inside a run")]
    Truncated,
    #[error("LZF back reference before the start of the output")]
    BadReference,
    #[error("LZF data expands to {got} bytes, the file says {want}")]
    Length { got: usize, want: usize },
}

/// Expands `input` into exactly `out_len` bytes.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, LzfError> {
    // The stated length is untrusted: reserve no more than the input could
    // expand to (a 3-byte reference yields at most 264 bytes).
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(input.len().saturating_mul(88) + 64));
    let mut i = 0;
    let too_long = |n: usize| LzfError::Length {
        got: n,
        want: out_len,
    };
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input.get(i..i + n).ok_or(LzfError::Truncated)?;
            if out.len() + n > out_len {
                return Err(too_long(out.len() + n));
            }
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i).ok_or(LzfError::Truncated)? as usize;
                i += 1;
            }
            len += 2;
            let low = *input.get(i).ok_or(LzfError::Truncated)? as usize;
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            if back > out.len() {
                return Err(LzfError::BadReference);
            }
            if out.len() + len > out_len {
                return Err(too_long(out.len() + len));
            }
            let start = out.len() - back;
            for k in 0..len {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(too_long(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_references() {
        // "abc" literal, then a reference 3 back of length 6 ("abcabc").
        let data = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&data, 9).unwrap(), b"abcabcabc");
        // A long reference: 3-bit field 7 plus a length byte.
        let data = [0, b'x', (7 << 5), 3, 0];
        assert_eq!(decompress(&data, 13).unwrap(), vec![b'x'; 13]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(decompress(&[5, b'a'], 6), Err(LzfError::Truncated));
        assert_eq!(decompress(&[(1 << 5), 0], 3), Err(LzfError::BadReference));
        assert!(matches!(
            decompress(&[0, b'a'], 5),
            Err(LzfError::Length { .. })
        ));
        assert!(matches!(
            decompress(&[2, b'a', b'b', b'c'], 2),
            Err(LzfError::Length { .. })
        ));
        for len in 0..40 {
            for seed in 0u8..=255 {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        seed.wrapping_mul(31)
                            .wrapping_add((i as u8).wrapping_mul(7))
                    })
                    .collect();
                let _ = decompress(&data, 64);
            }
        }
    }
}
