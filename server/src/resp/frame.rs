//! Where a reply ends: the router (and a node forwarding a request to
//! another) passes replies on untouched, so all it needs from a reply is
//! its length.
//!
//! Why not `redis-protocol`'s decoder: it builds a frame tree (allocating
//! for every array) where a proxy needs one number, it restarts from the
//! first byte on every read (quadratic on a large reply that arrives in
//! many reads), and its RESP3 decoder reads RESP2's `$-1` as a streamed
//! string. [`Scanner`] is iterative (no recursion however deep the nesting),
//! allocates nothing and resumes where the previous read stopped.

/// A reply that is not RESP: the upstream connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream sent a malformed reply at byte {0}")]
pub struct FrameError(pub usize);

/// Longest header line accepted (Redis's own inline limit).
const MAX_LINE: usize = 64 * 1024;

/// Finds the end of one reply at a time in a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Offset of the next unscanned byte (relative to the buffer start).
    pos: usize,
    /// Elements still to scan for the reply in progress (0: between replies).
    pending: u64,
}

impl Scanner {
    /// Scans on from where the last call stopped. `Ok(Some(end))`: a whole
    /// reply ends at `end`, and the scanner is ready for the next one.
    /// `Ok(None)`: more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if self.pending == 0 {
            self.pending = 1;
        }
        while self.pending > 0 {
            let rest = &buf[self.pos.min(buf.len())..];
            let Some(nl) = find_crlf(rest) else {
                if rest.len() > MAX_LINE {
                    return Err(FrameError(self.pos));
                }
                return Ok(None);
            };
            let line = &rest[1..nl];
            let kind = rest[0];
            let mut adv = nl + 2;
            // Elements this header adds (aggregates) besides itself.
            let mut more = 0u64;
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
                b'$' | b'=' | b'!' => {
                    let n = parse_len(line).ok_or(FrameError(self.pos))?;
                    if n >= 0 {
                        let need = nl + 2 + n as usize + 2;
                        if rest.len() < need {
                            return Ok(None);
                        }
                        if &rest[need - 2..need] != b"\r\n" {
                            return Err(FrameError(self.pos));
                        }
                        adv = need;
                    }
                }
                b'*' | b'~' | b'>' => {
                    let n = parse_len(line).ok_or(FrameError(self.pos))?;
                    more = n.max(0) as u64;
                }
                b'%' => {
                    let n = parse_len(line).ok_or(FrameError(self.pos))?;
                    more = 2 * n.max(0) as u64;
                }
                // An attribute map precedes the reply it describes.
                b'|' => {
                    let n = parse_len(line).ok_or(FrameError(self.pos))?;
                    more = 2 * n.max(0) as u64 + 1;
                }
                _ => return Err(FrameError(self.pos)),
            }
            self.pos += adv;
            self.pending = self.pending - 1 + more;
        }
        let end = self.pos;
        Ok(Some(end))
    }

    /// The caller dropped the first `n` bytes of the buffer (only between
    /// replies or at a reply's start: `n` ≤ the last end returned).
    pub fn rebase(&mut self, n: usize) {
        self.pos -= n;
    }

    /// Bytes scanned so far (the end of the last complete reply when
    /// between replies).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// True between replies.
    pub fn idle(&self) -> bool {
        self.pending == 0
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b'\r') {
        let at = from + i;
        if at + 1 >= b.len() {
            return None;
        }
        if b[at + 1] == b'\n' {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn parse_len(line: &[u8]) -> Option<i64> {
    if line == b"?" {
        // RESP3 streamed aggregates: Redis never sends them.
        return None;
    }
    let s = std::str::from_utf8(line).ok()?;
    let n: i64 = s.parse().ok()?;
    (n >= -1).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(b: &[u8]) -> Option<usize> {
        Scanner::default().next(b).unwrap()
    }

    #[test]
    fn resp2_replies() {
        assert_eq!(whole(b"+OK\r\n"), Some(5));
        assert_eq!(whole(b"-ERR x\r\n+OK\r\n"), Some(8));
        assert_eq!(whole(b":12\r\n"), Some(5));
        assert_eq!(whole(b"$3\r\nabc\r\n"), Some(9));
        assert_eq!(whole(b"$-1\r\n"), Some(5));
        assert_eq!(whole(b"*-1\r\n"), Some(5));
        assert_eq!(whole(b"*0\r\n"), Some(4));
        assert_eq!(whole(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n"), Some(19));
        // CR inside a bulk is data, not a line end.
        assert_eq!(whole(b"$4\r\na\r\nb\r\n"), Some(10));
    }

    #[test]
    fn resp3_replies() {
        assert_eq!(whole(b"_\r\n"), Some(3));
        assert_eq!(whole(b"#t\r\n"), Some(4));
        assert_eq!(whole(b",1.5\r\n"), Some(6));
        assert_eq!(whole(b"%1\r\n+a\r\n:1\r\n"), Some(12));
        assert_eq!(whole(b"~2\r\n+a\r\n+b\r\n"), Some(12));
        assert_eq!(whole(b"=8\r\ntxt:abcd\r\n"), Some(14));
        // An attribute and the reply it annotates are one unit.
        let b = b"|1\r\n+k\r\n+v\r\n:5\r\n";
        assert_eq!(whole(b), Some(b.len()));
    }

    #[test]
    fn partial_input_resumes() {
        let full = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n:2\r\n+x\r\n";
        for cut in 0..full.len() {
            let mut s = Scanner::default();
            assert_eq!(s.next(&full[..cut]).unwrap(), None, "cut {cut}");
            assert_eq!(s.next(full).unwrap(), Some(full.len()), "cut {cut}");
        }
    }

    #[test]
    fn consecutive_replies_and_rebase() {
        let mut s = Scanner::default();
        let b = b"+a\r\n:1\r\n$1\r\nz\r\n";
        assert_eq!(s.next(b).unwrap(), Some(4));
        assert_eq!(s.next(b).unwrap(), Some(8));
        s.rebase(8);
        assert_eq!(s.next(&b[8..]).unwrap(), Some(7));
        assert!(s.idle());
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(Scanner::default().next(b"?x\r\n").is_err());
        assert!(Scanner::default().next(b"$x\r\n").is_err());
        assert!(Scanner::default().next(b"$1\r\nab\r\n").is_err());
        assert!(Scanner::default().next(b"*-2\r\n").is_err());
        assert!(Scanner::default().next(b"*?\r\n").is_err());
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut b = Vec::new();
        for _ in 0..100_000 {
            b.extend_from_slice(b"*1\r\n");
        }
        b.extend_from_slice(b":1\r\n");
        assert_eq!(whole(&b), Some(b.len()));
    }
}
