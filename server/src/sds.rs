//! `Sds`: the byte string used for keys and string values.
//!
//! Most Redis keys and many values are short (`user:1234`, a counter, a
//! session id). Storing them inline in the 24-byte handle saves a heap
//! allocation and its header per key, which is most of what Redis pays per
//! small key; longer strings go to one exact-size heap slice. Strings that
//! are grown in place (APPEND, SETRANGE) switch to a growable vector so
//! repeated appends stay amortised O(1), as Redis's sds does.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// A string's growable storage: a vector whose length and capacity live
/// in its allocation (one pointer in the handle).
pub type GrowBuf = thin_vec::ThinVec<u8>;

/// Longest string kept inline.
pub const INLINE_CAP: usize = 21;

/// A byte string with small-string optimisation and one spare byte (`flag`)
/// for the owner (values keep their Redis encoding there). The enum tag
/// leaves a niche, so `Value` wraps an `Sds` and its other variants in the
/// same 24 bytes.
#[derive(Clone)]
pub enum Sds {
    /// `len` bytes of `buf` are the string.
    Inline {
        flag: u8,
        len: u8,
        buf: [u8; INLINE_CAP],
    },
    /// Exact-size heap storage.
    Heap { flag: u8, b: Box<[u8]> },
    /// Heap storage with spare capacity (APPEND/SETRANGE grow in place).
    /// Length and capacity sit in front of the bytes, in one allocation.
    Grow { flag: u8, v: GrowBuf },
}

impl Sds {
    pub const fn new() -> Sds {
        Sds::Inline {
            flag: 0,
            len: 0,
            buf: [0; INLINE_CAP],
        }
    }

    pub fn from_slice(s: &[u8]) -> Sds {
        if s.len() <= INLINE_CAP {
            let mut buf = [0u8; INLINE_CAP];
            buf[..s.len()].copy_from_slice(s);
            Sds::Inline {
                flag: 0,
                len: s.len() as u8,
                buf,
            }
        } else {
            Sds::Heap {
                flag: 0,
                b: s.into(),
            }
        }
    }

    pub fn from_vec(v: Vec<u8>) -> Sds {
        if v.len() <= INLINE_CAP {
            Sds::from_slice(&v)
        } else {
            Sds::Heap {
                flag: 0,
                b: v.into_boxed_slice(),
            }
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Sds::Inline { len, buf, .. } => &buf[..*len as usize],
            Sds::Heap { b, .. } => b,
            Sds::Grow { v, .. } => v,
        }
    }

    /// The owner's spare byte.
    #[inline]
    pub fn flag(&self) -> u8 {
        match self {
            Sds::Inline { flag, .. } | Sds::Heap { flag, .. } | Sds::Grow { flag, .. } => *flag,
        }
    }

    #[inline]
    pub fn set_flag(&mut self, f: u8) {
        match self {
            Sds::Inline { flag, .. } | Sds::Heap { flag, .. } | Sds::Grow { flag, .. } => *flag = f,
        }
    }

    /// Mutable access to the bytes as a growable vector (moves inline data to
    /// the heap: used by APPEND/SETRANGE, which Redis also turns into "raw").
    pub fn make_mut_vec(&mut self) -> &mut GrowBuf {
        let flag = self.flag();
        let v = match std::mem::take(self) {
            Sds::Grow { v, .. } => v,
            Sds::Inline { len, buf, .. } => GrowBuf::from(&buf[..len as usize]),
            Sds::Heap { b, .. } => GrowBuf::from(&b[..]),
        };
        *self = Sds::Grow { flag, v };
        match self {
            Sds::Grow { v, .. } => v,
            _ => unreachable!("set to Grow above"),
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self, Sds::Inline { .. })
    }

    /// Bytes of heap memory owned beyond the handle itself.
    pub fn heap_size(&self) -> usize {
        match self {
            Sds::Inline { .. } => 0,
            Sds::Heap { b, .. } => b.len(),
            // The header (length, capacity) shares the allocation.
            Sds::Grow { v, .. } => v.capacity() + 2 * std::mem::size_of::<usize>(),
        }
    }
}

impl Default for Sds {
    fn default() -> Self {
        Sds::new()
    }
}

impl Deref for Sds {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for Sds {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Sds {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Sds {}

impl Hash for Sds {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialOrd for Sds {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sds {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for Sds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl From<&[u8]> for Sds {
    fn from(s: &[u8]) -> Self {
        Sds::from_slice(s)
    }
}
impl From<&str> for Sds {
    fn from(s: &str) -> Self {
        Sds::from_slice(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Sds>(), 24);
    }

    #[test]
    fn inline_and_heap_roundtrip() {
        for n in [0usize, 1, 21, 22, 23, 100] {
            let v: Vec<u8> = (0..n as u8).collect();
            let s = Sds::from_slice(&v);
            assert_eq!(s.as_bytes(), &v[..]);
            assert_eq!(s.is_inline(), n <= INLINE_CAP);
        }
    }

    #[test]
    fn make_mut_moves_to_heap_and_keeps_flag() {
        let mut s = Sds::from("abc");
        s.set_flag(2);
        s.make_mut_vec().extend_from_slice(b"def");
        assert_eq!(&*s, b"abcdef");
        assert!(!s.is_inline());
        assert_eq!(s.flag(), 2);
    }
}
