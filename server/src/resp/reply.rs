//! Reply encoder for RESP2 and RESP3.
//!
//! Commands write replies straight into the connection's output buffer
//! instead of building a reply tree, so a pipeline of GETs costs one memcpy
//! per value. The few places where RESP2 and RESP3 differ (null, maps, sets,
//! doubles, booleans, push) are methods here, so command code never checks
//! the protocol version.

use bytes::{BufMut, BytesMut};

use crate::util::{fmt_f64, fmt_i64};

/// An output buffer plus the protocol version of the connection.
pub struct Reply {
    pub buf: BytesMut,
    pub resp: u8,
}

impl Reply {
    pub fn new(resp: u8) -> Self {
        Reply {
            buf: BytesMut::with_capacity(16 * 1024),
            resp,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn line(&mut self, prefix: u8, n: i64) {
        let mut b = [0u8; 20];
        self.buf.put_u8(prefix);
        self.buf.put_slice(fmt_i64(n, &mut b));
        self.buf.put_slice(b"\r\n");
    }

    /// `+OK`-style status. `s` must not contain CR/LF.
    pub fn simple(&mut self, s: &str) {
        self.buf.put_u8(b'+');
        self.buf.put_slice(s.as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    /// An error reply; `msg` includes the code (`ERR ...`, `WRONGTYPE ...`).
    /// Newlines are replaced by spaces, as Redis's `addReplyErrorLength` does.
    pub fn error(&mut self, msg: &str) {
        self.buf.put_u8(b'-');
        for &b in msg.as_bytes() {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }

    /// An error reply from raw bytes (`msg` includes the code); Redis
    /// echoes client bytes in some errors, which need not be UTF-8.
    pub fn error_bytes(&mut self, msg: &[u8]) {
        self.buf.put_u8(b'-');
        for &b in msg {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }

    /// `-ERR <msg>`.
    pub fn err(&mut self, msg: &str) {
        self.buf.put_slice(b"-ERR ");
        for &b in msg.as_bytes() {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }

    #[inline]
    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    #[inline(always)]
    pub fn bulk(&mut self, s: &[u8]) {
        // Short elements (most list/set/hash members) are framed on the
        // stack and appended with one copy: three tiny memcpy calls per
        // element dominated LRANGE.
        if s.len() < 10 {
            let mut f = [0u8; 15];
            f[..4].copy_from_slice(&[b'$', b'0' + s.len() as u8, b'\r', b'\n']);
            f[4..4 + s.len()].copy_from_slice(s);
            f[4 + s.len()..6 + s.len()].copy_from_slice(b"\r\n");
            self.buf.extend_from_slice(&f[..6 + s.len()]);
            return;
        }
        self.bulk_long(s);
    }

    #[inline(never)]
    fn bulk_long(&mut self, s: &[u8]) {
        self.buf.reserve(s.len() + 24);
        self.line(b'$', s.len() as i64);
        self.buf.put_slice(s);
        self.buf.put_slice(b"\r\n");
    }

    pub fn bulk_i64(&mut self, n: i64) {
        let mut b = [0u8; 20];
        let s = fmt_i64(n, &mut b);
        self.line(b'$', s.len() as i64);
        self.buf.put_slice(s);
        self.buf.put_slice(b"\r\n");
    }

    /// Null bulk (`$-1` / `_`).
    pub fn null(&mut self) {
        if self.resp >= 3 {
            self.buf.put_slice(b"_\r\n");
        } else {
            self.buf.put_slice(b"$-1\r\n");
        }
    }

    /// Null array (`*-1` / `_`).
    pub fn null_array(&mut self) {
        if self.resp >= 3 {
            self.buf.put_slice(b"_\r\n");
        } else {
            self.buf.put_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map of `n` pairs (`%n` / `*2n`).
    pub fn map(&mut self, n: usize) {
        if self.resp >= 3 {
            self.line(b'%', n as i64);
        } else {
            self.line(b'*', 2 * n as i64);
        }
    }

    /// A set of `n` elements (`~n` / `*n`).
    pub fn set(&mut self, n: usize) {
        if self.resp >= 3 {
            self.line(b'~', n as i64);
        } else {
            self.line(b'*', n as i64);
        }
    }

    /// A push frame (`>n`); RESP2 pub/sub messages are plain arrays.
    pub fn push(&mut self, n: usize) {
        if self.resp >= 3 {
            self.line(b'>', n as i64);
        } else {
            self.line(b'*', n as i64);
        }
    }

    /// A double (`,d` / bulk "%.17g").
    pub fn double(&mut self, v: f64) {
        let s = fmt_f64(v);
        if self.resp >= 3 {
            self.buf.put_u8(b',');
            self.buf.put_slice(s.as_bytes());
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }

    /// A boolean (`#t` / `:1`).
    pub fn boolean(&mut self, v: bool) {
        if self.resp >= 3 {
            self.buf.put_slice(if v { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(v as i64);
        }
    }

    /// Verbatim text (`=n\r\ntxt:...` / bulk), as INFO and CLIENT LIST use.
    pub fn verbatim(&mut self, s: &[u8]) {
        if self.resp >= 3 {
            self.line(b'=', s.len() as i64 + 4);
            self.buf.put_slice(b"txt:");
            self.buf.put_slice(s);
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(s);
        }
    }

    /// Verbatim text of format `format` (three characters, `txt` or
    /// `mkd`; others are written as they are).
    pub fn verbatim_as(&mut self, format: &[u8], s: &[u8]) {
        if self.resp >= 3 {
            self.line(b'=', (s.len() + format.len() + 1) as i64);
            self.buf.put_slice(format);
            self.buf.put_u8(b':');
            self.buf.put_slice(s);
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(s);
        }
    }

    /// A big number (`(digits` / bulk).
    pub fn big_number(&mut self, digits: &[u8]) {
        if self.resp >= 3 {
            self.buf.put_u8(b'(');
            self.buf.put_slice(digits);
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(digits);
        }
    }

    /// Raw pre-encoded bytes.
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }

    /// Empty array (also an empty RESP2 map/set).
    pub fn empty_array(&mut self) {
        self.buf.put_slice(b"*0\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_differ_where_redis_does() {
        let mut r2 = Reply::new(2);
        let mut r3 = Reply::new(3);
        for r in [&mut r2, &mut r3] {
            r.null();
            r.map(1);
            r.double(1.5);
            r.boolean(true);
        }
        assert_eq!(&r2.buf[..], b"$-1\r\n*2\r\n$3\r\n1.5\r\n:1\r\n");
        assert_eq!(&r3.buf[..], b"_\r\n%1\r\n,1.5\r\n#t\r\n");
    }

    #[test]
    fn errors_lose_newlines() {
        let mut r = Reply::new(2);
        r.err("a\r\nb");
        assert_eq!(&r.buf[..], b"-ERR a  b\r\n");
    }
}
