//! Incremental request parser: RESP multibulk and inline commands.
//!
//! This follows Redis's `processMultibulkBuffer`/`processInlineBuffer` rule
//! for rule (error texts, the 64 KiB limits on header lines, the tighter
//! limits before AUTH, `strchr` stopping at NUL bytes) so that clients see the
//! same errors. Unlike a generic frame decoder it keeps its state across
//! reads, so a large request arriving in many reads is scanned once, and it
//! yields argument *ranges* into the read buffer so the hot path copies
//! nothing.

use std::ops::Range;

use crate::util::parse_i64;

/// Longest inline request / header line Redis accepts (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX_SIZE: usize = 64 * 1024;
/// Redis 7's multibulk limit for connections that must still authenticate.
pub const UNAUTH_MAX_MULTIBULK: i64 = 10;
/// Redis 7's bulk limit for connections that must still authenticate.
pub const UNAUTH_MAX_BULK: i64 = 16384;

/// Limits applied while parsing.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// `proto-max-bulk-len`.
    pub max_bulk_len: i64,
    /// Most arguments in one multibulk request (Redis: `INT_MAX`).
    pub max_multibulk_len: i64,
    /// The connection has not authenticated and AUTH is required.
    pub unauthenticated: bool,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as i64,
            unauthenticated: false,
        }
    }
}

/// A protocol error: the text after `-ERR ` that Redis sends before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Where the arguments of a complete request live.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Ranges into the buffer passed to [`RequestParser::next`].
    Multibulk,
    /// Owned arguments (inline requests are unescaped, so cannot be ranges).
    Inline,
}

/// Stateful parser over a growing read buffer. (Clone: a look-ahead that
/// decides not to take a request puts the parser back.)
#[derive(Default, Debug, Clone)]
pub struct RequestParser {
    /// Offset of the next unparsed byte.
    pos: usize,
    /// Offset where the multibulk in progress started.
    start: usize,
    /// Bulks still expected by the multibulk in progress (0: none).
    remaining: i64,
    /// Length of the bulk whose header was read, or -1.
    bulklen: i64,
    in_multibulk: bool,
    ranges: Vec<Range<usize>>,
    inline: Vec<Vec<u8>>,
}

/// Position of the first `needle` in `hay`, stopping at a NUL byte as
/// Redis's `strchr` over the query buffer does.
fn strchr(hay: &[u8], needle: u8) -> Option<usize> {
    for (i, &b) in hay.iter().enumerate() {
        if b == needle {
            return Some(i);
        }
        if b == 0 {
            return None;
        }
    }
    None
}

impl RequestParser {
    pub fn new() -> Self {
        RequestParser {
            bulklen: -1,
            ..Default::default()
        }
    }

    /// Parses the next complete request from `buf[self.pos..]`.
    ///
    /// `Ok(None)` means more bytes are needed. Empty requests (blank inline
    /// lines, `*0`) are skipped silently, as Redis does.
    pub fn next(
        &mut self,
        buf: &[u8],
        limits: &ParseLimits,
    ) -> Result<Option<Request>, ProtocolError> {
        loop {
            if !self.in_multibulk {
                if self.pos >= buf.len() {
                    return Ok(None);
                }
                if buf[self.pos] == b'*' {
                    self.start = self.pos;
                    let rest = &buf[self.pos..];
                    let Some(cr) = strchr(rest, b'\r') else {
                        if rest.len() > INLINE_MAX_SIZE {
                            return Err(ProtocolError("too big mbulk count string".into()));
                        }
                        return Ok(None);
                    };
                    if cr + 2 > rest.len() {
                        return Ok(None);
                    }
                    let ll = match parse_i64(&rest[1..cr]) {
                        Some(ll) if ll <= limits.max_multibulk_len => ll,
                        _ => return Err(ProtocolError("invalid multibulk length".into())),
                    };
                    if ll > UNAUTH_MAX_MULTIBULK && limits.unauthenticated {
                        return Err(ProtocolError("unauthenticated multibulk length".into()));
                    }
                    self.pos += cr + 2;
                    if ll <= 0 {
                        continue;
                    }
                    self.in_multibulk = true;
                    self.remaining = ll;
                    self.bulklen = -1;
                    self.ranges.clear();
                    self.ranges.reserve(ll.min(1024) as usize);
                } else {
                    let rest = &buf[self.pos..];
                    let Some(nl) = strchr(rest, b'\n') else {
                        if rest.len() > INLINE_MAX_SIZE {
                            return Err(ProtocolError("too big inline request".into()));
                        }
                        return Ok(None);
                    };
                    let mut line = &rest[..nl];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    let args = split_args(line)
                        .ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
                    self.pos += nl + 1;
                    if args.is_empty() {
                        continue;
                    }
                    self.inline = args;
                    return Ok(Some(Request::Inline));
                }
            }

            while self.remaining > 0 {
                if self.bulklen == -1 {
                    let rest = &buf[self.pos..];
                    let Some(cr) = strchr(rest, b'\r') else {
                        if rest.len() > INLINE_MAX_SIZE {
                            return Err(ProtocolError("too big bulk count string".into()));
                        }
                        return Ok(None);
                    };
                    if cr + 2 > rest.len() {
                        return Ok(None);
                    }
                    if rest[0] != b'$' {
                        return Err(ProtocolError(format!(
                            "expected '$', got '{}'",
                            rest[0] as char
                        )));
                    }
                    let ll = match parse_i64(&rest[1..cr]) {
                        Some(ll) if ll >= 0 && ll <= limits.max_bulk_len => ll,
                        _ => return Err(ProtocolError("invalid bulk length".into())),
                    };
                    if ll > UNAUTH_MAX_BULK && limits.unauthenticated {
                        return Err(ProtocolError("unauthenticated bulk length".into()));
                    }
                    self.pos += cr + 2;
                    self.bulklen = ll;
                }
                let need = self.bulklen as usize + 2;
                if buf.len() - self.pos < need {
                    return Ok(None);
                }
                self.ranges.push(self.pos..self.pos + self.bulklen as usize);
                self.pos += need;
                self.bulklen = -1;
                self.remaining -= 1;
            }
            self.in_multibulk = false;
            return Ok(Some(Request::Multibulk));
        }
    }

    /// Argument ranges of the last [`Request::Multibulk`].
    pub fn ranges(&self) -> &[Range<usize>] {
        &self.ranges
    }

    /// Arguments of the last [`Request::Inline`].
    pub fn inline_args(&self) -> &[Vec<u8>] {
        &self.inline
    }

    /// The arguments of the request `next` just returned, whichever its
    /// form (a multibulk one's in `buf`).
    pub fn args<'a>(&'a self, req: &Request, buf: &'a [u8]) -> smallvec::SmallVec<[&'a [u8]; 8]> {
        match req {
            Request::Multibulk => self.ranges.iter().map(|r| &buf[r.clone()]).collect(),
            Request::Inline => self.inline.iter().map(|a| a.as_slice()).collect(),
        }
    }

    /// Bytes fully consumed by complete requests (safe to drop from the
    /// buffer). A request in progress keeps its bytes until complete.
    pub fn consumed(&self) -> usize {
        if self.in_multibulk {
            self.start
        } else {
            self.pos
        }
    }

    /// Tells the parser that the caller dropped the first `n` bytes of the
    /// buffer (`n` must be ≤ `consumed()`).
    pub fn rebase(&mut self, n: usize) {
        self.pos -= n;
        self.start = self.start.saturating_sub(n);
        if self.in_multibulk {
            for r in &mut self.ranges {
                r.start -= n;
                r.end -= n;
            }
        } else {
            // Ranges of a completed request are dead once its bytes go.
            self.ranges.clear();
        }
    }

    /// Bytes still missing for the bulk being read, to size the buffer once
    /// for large values instead of growing it many times.
    pub fn bulk_bytes_missing(&self, buf_len: usize) -> usize {
        if self.in_multibulk && self.bulklen >= 0 {
            (self.pos + self.bulklen as usize + 2).saturating_sub(buf_len)
        } else {
            0
        }
    }
}

/// Redis's `sdssplitargs` over one inline line. `None`: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| -> u8 { line.get(i).copied().unwrap_or(0) };
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let hex = |c: u8| -> Option<u8> { (c as char).to_digit(16).map(|d| d as u8) };
    let mut out = Vec::new();
    let mut p = 0usize;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(out);
        }
        let (mut inq, mut insq, mut done) = (false, false, false);
        let mut cur = Vec::new();
        while !done {
            let c = at(p);
            if inq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    cur.push(hex(at(p + 2)).unwrap_or(0) * 16 + hex(at(p + 3)).unwrap_or(0));
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        o => o,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    o => cur.push(o),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        let lim = ParseLimits::default();
        while let Some(r) = p.next(input, &lim)? {
            out.push(match r {
                Request::Multibulk => p
                    .ranges()
                    .iter()
                    .map(|r| input[r.clone()].to_vec())
                    .collect(),
                Request::Inline => p.inline_args().to_vec(),
            });
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset a \"b c\"\r\n\r\n*0\r\n")
            .unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"a".to_vec(), b"b c".to_vec()],
            ]
        );
    }

    #[test]
    fn errors_match_redis() {
        let e = |i: &[u8]| parse_all(i).unwrap_err().to_string();
        assert_eq!(e(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(e(b"*1\r\n+x\r\n"), "Protocol error: expected '$', got '+'");
        assert_eq!(e(b"*1\r\n$-1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"set \"a\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            e(b"set \"a\"b\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        let big = vec![b'a'; INLINE_MAX_SIZE + 1];
        assert_eq!(e(&big), "Protocol error: too big inline request");
    }

    #[test]
    fn unauthenticated_limits() {
        let mut p = RequestParser::new();
        let lim = ParseLimits {
            unauthenticated: true,
            ..Default::default()
        };
        let err = p.next(b"*11\r\n", &lim).unwrap_err();
        assert_eq!(err.0, "unauthenticated multibulk length");
        let mut p = RequestParser::new();
        let err = p.next(b"*1\r\n$16385\r\n", &lim).unwrap_err();
        assert_eq!(err.0, "unauthenticated bulk length");
    }

    #[test]
    fn incremental_byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let mut p = RequestParser::new();
        let lim = ParseLimits::default();
        for end in 1..input.len() {
            assert_eq!(p.next(&input[..end], &lim).unwrap(), None);
        }
        assert_eq!(p.next(input, &lim).unwrap(), Some(Request::Multibulk));
        assert_eq!(p.ranges().len(), 3);
    }

    #[test]
    fn split_args_escapes() {
        assert_eq!(
            split_args(b"a \"\\x41\\n\" 'it\\'s'").unwrap(),
            vec![b"a".to_vec(), b"A\n".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(split_args(b"   ").unwrap(), Vec::<Vec<u8>>::new());
    }
}
