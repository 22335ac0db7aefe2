//! Values stored under keys. This store holds strings; the data-type
//! issue adds lists, hashes, sets and sorted sets as further variants.

use crate::sds::Sds;
use crate::util::parse_i64;

/// Redis's `OBJ_ENCODING_EMBSTR_SIZE_LIMIT`.
const EMBSTR_LIMIT: usize = 44;

/// A stored value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string, with how Redis would have encoded it (OBJECT ENCODING).
    Str { s: Sds, enc: StrEnc },
}

/// Redis's string encodings depend on how the value was made, not only on
/// its bytes, so we remember the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrEnc {
    /// Passed through `tryObjectEncoding` (SET, MSET, INCR...): "int" when
    /// it is a canonical integer, else "embstr"/"raw" by length.
    Auto,
    /// Created as a plain string object (INCRBYFLOAT, DEBUG POPULATE):
    /// "embstr" up to 44 bytes, else "raw".
    Plain,
    /// Modified in place (APPEND, SETRANGE): always "raw".
    Raw,
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
        Value::Str {
            s: Sds::from_slice(b),
            enc: StrEnc::Auto,
        }
    }

    pub fn from_vec(v: Vec<u8>) -> Value {
        Value::Str {
            s: Sds::from_vec(v),
            enc: StrEnc::Auto,
        }
    }

    /// A string that Redis would not have integer-encoded.
    pub fn plain(b: &[u8]) -> Value {
        Value::Str {
            s: Sds::from_slice(b),
            enc: StrEnc::Plain,
        }
    }

    pub fn from_i64(n: i64) -> Value {
        let mut b = [0u8; 20];
        Value::from_bytes(crate::util::fmt_i64(n, &mut b))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Value::Str { .. } => Kind::String,
        }
    }

    /// The string bytes, if this is a string.
    #[inline]
    pub fn as_str(&self) -> Option<&[u8]> {
        match self {
            Value::Str { s, .. } => Some(s.as_bytes()),
        }
    }

    /// The encoding name OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str {
                enc: StrEnc::Raw, ..
            } => "raw",
            Value::Str { s, enc } => {
                if *enc == StrEnc::Auto && s.len() <= 20 && parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= EMBSTR_LIMIT {
                    "embstr"
                } else {
                    "raw"
                }
            }
        }
    }

    /// Approximate heap bytes owned by the value (for MEMORY USAGE and
    /// eviction accounting; the allocator's own counter is the truth).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str { s, .. } => s.heap_size(),
        }
    }
}
