//! Number parsing/formatting and glob matching with Redis's exact rules
//! (util.c), since replies and error paths depend on them byte for byte.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A shift of this process's wall clock (ms), for fault tests that give
/// one node a clock that is off (`anykv node --clock-offset-ms`): the
/// machine's clock is shared by every process of an emulated world.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts [`mstime`] and [`ustime`] by `ms` from now on.
pub fn set_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Wall-clock milliseconds since the Unix epoch (Redis's `mstime()`).
pub fn mstime() -> i64 {
    ustime() / 1000
}

/// Wall-clock microseconds since the Unix epoch (`ustime()`).
pub fn ustime() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    now.saturating_add(CLOCK_OFFSET_MS.load(Ordering::Relaxed).saturating_mul(1000))
}

/// C's `%.Ns` of a client argument: up to the first NUL, at most `max`
/// bytes (Redis formats some error replies from arguments with `%s`).
pub fn c_str(a: &[u8], max: usize) -> &[u8] {
    let end = a.iter().position(|&c| c == 0).unwrap_or(a.len());
    &a[..end.min(max)]
}

/// Redis's `string2ll`: strict base-10 i64 (no spaces, no '+', no leading
/// zeros, no "-0").
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s.len() == 1 && s[0] == b'0' {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' {
        (true, &s[1..])
    } else {
        (false, s)
    };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > (i64::MAX as u64) + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Formats an i64 into a stack buffer; returns the used slice.
pub fn fmt_i64(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

extern "C" {
    fn anykv_ld_incr(
        cur: *const u8,
        curlen: usize,
        has_cur: i32,
        incr: *const u8,
        incrlen: usize,
        out: *mut u8,
        outlen: usize,
    ) -> i32;
    fn anykv_string2d(s: *const u8, slen: usize, out: *mut f64) -> i32;
    fn anykv_timeout_ms(s: *const u8, slen: usize, out: *mut i64) -> i32;
    fn anykv_fmt_g17(v: f64, out: *mut u8, outlen: usize) -> i32;
}

/// Why a long-double increment failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LdIncrError {
    CurrentNotFloat,
    IncrNotFloat,
    NanOrInf,
}

/// `current + incr` in `long double`, formatted as Redis's INCRBYFLOAT reply.
pub fn ld_incr(current: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, LdIncrError> {
    let mut out = vec![0u8; 5 * 1024 + 8];
    let (p, l, has) = match current {
        Some(c) => (c.as_ptr(), c.len(), 1),
        None => (std::ptr::null(), 0, 0),
    };
    // SAFETY: every pointer/length pair describes a live slice (or is null
    // with length 0 and has_cur == 0, in which case C never reads it); the C
    // side copies inputs into its own NUL-terminated buffers and writes at
    // most `out.len()` bytes into `out`.
    let r = unsafe {
        anykv_ld_incr(
            p,
            l,
            has,
            incr.as_ptr(),
            incr.len(),
            out.as_mut_ptr(),
            out.len(),
        )
    };
    match r {
        -1 => Err(LdIncrError::CurrentNotFloat),
        -2 => Err(LdIncrError::IncrNotFloat),
        -3 | -4 => Err(LdIncrError::NanOrInf),
        n => {
            out.truncate(n as usize);
            Ok(out)
        }
    }
}

/// Redis's `string2d` (strtod with its validity rules).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let mut v = 0f64;
    // SAFETY: (ptr, len) is a live slice; C copies it before parsing and
    // writes only the f64 behind the valid `&mut v` pointer.
    let ok = unsafe { anykv_string2d(s.as_ptr(), s.len(), &mut v) };
    (ok == 1).then_some(v)
}

/// A blocking command's timeout in milliseconds, converted exactly as
/// Redis 7.0 does (long double seconds × 1000, rounded up; out-of-range
/// values come out negative). `None` if not a valid float.
pub fn timeout_ms(s: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    // SAFETY: (ptr, len) is a live slice that C copies before parsing; it
    // writes only the i64 behind the valid `&mut v` pointer.
    let ok = unsafe { anykv_timeout_ms(s.as_ptr(), s.len(), &mut v) };
    (ok == 1).then_some(v)
}

/// Formats a double as Redis's RESP2 replies do (`%.17g`, "inf"/"-inf").
pub fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // A whole number below 1e17 (17 digits at most) is written by %.17g
    // as its digits, exactly (such a double is an integer): no printf.
    // (-0.0 is "-0" there.)
    if v.fract() == 0.0 && v.abs() < 1e17 && !(v == 0.0 && v.is_sign_negative()) {
        return (v as i64).to_string();
    }
    fmt_g17(v)
}

/// `name` as lower-case text, borrowed when it already is (script and
/// function names are kept lower-cased; most clients send them so).
pub fn ascii_lower(name: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(name) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => s.into(),
        _ => String::from_utf8_lossy(name).to_ascii_lowercase().into(),
    }
}

/// `%.17g` by the C library.
fn fmt_g17(v: f64) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: the buffer is 64 bytes and snprintf writes at most that many,
    // including the terminating NUL; "%.17g" of a double needs < 32.
    let n = unsafe { anykv_fmt_g17(v, buf.as_mut_ptr(), buf.len()) };
    String::from_utf8_lossy(&buf[..n.clamp(0, 63) as usize]).into_owned()
}

/// Redis's `stringmatchlen`: glob-style matching with `*`, `?`, `[...]`
/// (ranges, `^` negation) and `\` escapes.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut skip_longer = false;
    glob_inner(pattern, string, nocase, &mut skip_longer, 0)
}

fn eq_byte(a: u8, b: u8, nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

fn glob_inner(
    mut p: &[u8],
    mut s: &[u8],
    nocase: bool,
    skip_longer: &mut bool,
    nesting: u32,
) -> bool {
    // Protection against abusive patterns, as Redis 7 does.
    if nesting > 1000 {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if glob_inner(&p[1..], s, nocase, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {
                s = &s[1..];
            }
            b'[' => {
                p = &p[1..];
                let not = !p.is_empty() && p[0] == b'^';
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if p.is_empty() {
                        break;
                    }
                    if p[0] == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if p[0] == s[0] {
                            matched = true;
                        }
                    } else if p[0] == b']' {
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut start, mut end) = (p[0], p[2]);
                        let mut c = s[0];
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = start.to_ascii_lowercase();
                            end = end.to_ascii_lowercase();
                            c = c.to_ascii_lowercase();
                        }
                        p = &p[2..];
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if eq_byte(p[0], s[0], nocase) {
                        matched = true;
                    }
                    p = &p[1..];
                }
                // Redis: if the pattern ended inside [...], step back so the
                // outer loop's advance lands at the end.
                let matched = if not { !matched } else { matched };
                if !matched {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // Unterminated class: Redis treats the class as the last
                    // pattern element.
                    break;
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if !eq_byte(p[0], s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if !eq_byte(c, s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
        }
        if !p.is_empty() {
            p = &p[1..];
        }
        if s.is_empty() {
            while !p.is_empty() && p[0] == b'*' {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// `b` in lowercase hex.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
    out
}

/// The bytes hex digits `s` spell (either case), if they are hex.
pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(b"\x00\xffa"), "00ff61");
        assert_eq!(unhex(b"00FF61").as_deref(), Some(&b"\x00\xffa"[..]));
        assert_eq!(unhex(b"0"), None);
        assert_eq!(unhex(b"zz"), None);
    }

    use super::*;

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"01", b"-0", b"+1", b" 1", b"1 ", b"1a", b"-"] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn fmt_i64_edges() {
        let mut b = [0u8; 20];
        assert_eq!(fmt_i64(i64::MIN, &mut b), b"-9223372036854775808");
        assert_eq!(fmt_i64(0, &mut b), b"0");
    }

    #[test]
    fn long_double_incr_matches_redis() {
        assert_eq!(ld_incr(None, b"0.1").unwrap(), b"0.1");
        assert_eq!(ld_incr(Some(b"10.5"), b"0.1").unwrap(), b"10.6");
        assert_eq!(ld_incr(Some(b"5.0e3"), b"2.0e2").unwrap(), b"5200");
        assert_eq!(
            ld_incr(Some(b"abc"), b"1"),
            Err(LdIncrError::CurrentNotFloat)
        );
        assert_eq!(ld_incr(Some(b"1"), b" 1"), Err(LdIncrError::IncrNotFloat));
        assert_eq!(ld_incr(Some(b"1"), b"inf"), Err(LdIncrError::NanOrInf));
    }

    #[test]
    fn doubles() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(fmt_f64(1.5), "1.5");
        assert_eq!(fmt_f64(0.1), "0.10000000000000001");
        assert_eq!(fmt_f64(f64::NEG_INFINITY), "-inf");
        // Whole numbers skip printf: the same text as %.17g.
        let mut whole = vec![0.0, -0.0, 1.0, -1.0, 5.0, 1e15, 1e16, 1e17, -1e17, 1e18];
        whole.extend([2f64.powi(53), 2f64.powi(53) + 2.0, 99999999999999984.0]);
        whole.extend((0..2000).map(|i| (i as f64 - 1000.0) * 12345.0));
        whole.extend((0..60).map(|e| 1.7f64.powi(e).round()));
        for v in whole {
            assert_eq!(fmt_f64(v), fmt_g17(v), "{v:?}");
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b"anything", false));
        assert!(glob_match(b"h?llo", b"hello", false));
        assert!(glob_match(b"h[ae]llo", b"hallo", false));
        assert!(!glob_match(b"h[^e]llo", b"hello", false));
        assert!(glob_match(b"h[a-b]llo", b"hbllo", false));
        assert!(glob_match(b"h\\*llo", b"h*llo", false));
        assert!(!glob_match(b"h\\*llo", b"hello", false));
        assert!(glob_match(b"key:*", b"key:1", false));
        assert!(!glob_match(b"key:*", b"kez:1", false));
        assert!(glob_match(b"*a*b*c*", b"xxaxxbxxcxx", false));
        assert!(glob_match(b"HELLO", b"hello", true));
        assert!(!glob_match(b"a*", b"", false));
        // Redis's stringmatchlen("*", "") is 0; KEYS special-cases "*".
        assert!(!glob_match(b"*", b"", false));
    }
}
