//! Values stored under keys. This store holds strings; the data-type
//! issue adds lists, hashes, sets and sorted sets as further variants.

use crate::sds::Sds;
use crate::util::parse_i64;

/// Redis's `OBJ_ENCODING_EMBSTR_SIZE_LIMIT`.
const EMBSTR_LIMIT: usize = 44;

/// A stored value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string; its `flag` byte holds the [`StrEnc`] (OBJECT ENCODING).
    Str(Sds),
}

/// Redis's string encodings depend on how the value was made, not only on
/// its bytes, so we remember the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StrEnc {
    /// Passed through `tryObjectEncoding` (SET, MSET, INCR...): "int" when
    /// it is a canonical integer, else "embstr"/"raw" by length.
    Auto,
    /// Created as a plain string object (INCRBYFLOAT, DEBUG POPULATE):
    /// "embstr" up to 44 bytes, else "raw".
    Plain,
    /// Modified in place (APPEND, SETRANGE): always "raw".
    Raw,
    /// Like `Auto`, but a private copy (COPY duplicates shared integers,
    /// so OBJECT REFCOUNT is 1 where the original reports INT_MAX).
    AutoCopy,
}

/// The data type, as TYPE names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
        }
    }

    /// Parses a TYPE name (SCAN ... TYPE); unknown names are `None`.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        if name.eq_ignore_ascii_case(b"string") {
            Some(Kind::String)
        } else {
            None
        }
    }
}

impl Value {
    pub fn from_bytes(b: &[u8]) -> Value {
        Value::Str(Sds::from_slice(b))
    }

    pub fn from_vec(v: Vec<u8>) -> Value {
        Value::Str(Sds::from_vec(v))
    }

    /// A string that Redis would not have integer-encoded.
    pub fn plain(b: &[u8]) -> Value {
        let mut s = Sds::from_slice(b);
        s.set_flag(StrEnc::Plain as u8);
        Value::Str(s)
    }

    pub fn from_i64(n: i64) -> Value {
        let mut b = [0u8; 20];
        Value::from_bytes(crate::util::fmt_i64(n, &mut b))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Str(_) => Kind::String,
        }
    }

    /// The string bytes, if this is a string.
    #[inline]
    pub fn as_str(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
        }
    }

    /// The encoding name OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) if s.flag() == StrEnc::Raw as u8 => "raw",
            Value::Str(s) => {
                let auto = s.flag() == StrEnc::Auto as u8 || s.flag() == StrEnc::AutoCopy as u8;
                if auto && s.len() <= 20 && parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= EMBSTR_LIMIT {
                    "embstr"
                } else {
                    "raw"
                }
            }
        }
    }

    /// A private duplicate, as Redis's COPY makes (`dupStringObject`).
    pub fn duplicate(&self) -> Value {
        match self {
            Value::Str(s) => {
                let mut d = s.clone();
                if d.flag() == StrEnc::Auto as u8 {
                    d.set_flag(StrEnc::AutoCopy as u8);
                }
                Value::Str(d)
            }
        }
    }

    /// True if Redis would share this value's object (small integers
    /// created through `tryObjectEncoding`), given the policy allows it.
    pub fn is_shared_integer(&self) -> bool {
        match self {
            Value::Str(s) => {
                s.flag() == StrEnc::Auto as u8
                    && s.len() <= 20
                    && parse_i64(s).is_some_and(|n| (0..10000).contains(&n))
            }
        }
    }

    /// Mutable string bytes, switched to a growable buffer and marked
    /// "raw" (APPEND/SETRANGE modify in place). `None` if not a string.
    pub fn str_mut_raw(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Value::Str(s) => {
                s.set_flag(StrEnc::Raw as u8);
                Some(s.make_mut_vec())
            }
        }
    }

    /// Approximate heap bytes owned by the value (for MEMORY USAGE and
    /// eviction accounting; the allocator's own counter is the truth).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(s) => s.heap_size(),
        }
    }
}
