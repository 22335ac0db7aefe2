//! Values stored under keys. Strings live inline in the 24-byte `Value`;
//! the collection types are boxed, so every value is 24 bytes and the enum's
//! tag lives in the string's niche.

use std::hash::{Hash as _, Hasher};

use crate::db::hash::Hash;
use crate::db::list::List;
use crate::db::set::Set;
use crate::db::stream::Stream;
use crate::db::zset::ZSet;
use crate::sds::Sds;
use crate::util::parse_i64;

/// Redis's `OBJ_ENCODING_EMBSTR_SIZE_LIMIT`.
const EMBSTR_LIMIT: usize = 44;

/// A stored value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string; its `flag` byte holds the [`StrEnc`] (OBJECT ENCODING).
    Str(Sds),
    List(Box<List>),
    Hash(Box<Hash>),
    Set(Box<Set>),
    ZSet(Box<ZSet>),
    Stream(Box<Stream>),
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
    List,
    Hash,
    Set,
    ZSet,
    Stream,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Stream => "stream",
        }
    }

    /// Parses a TYPE name (SCAN ... TYPE); unknown names are `None`.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        [
            Kind::String,
            Kind::List,
            Kind::Hash,
            Kind::Set,
            Kind::ZSet,
            Kind::Stream,
        ]
        .into_iter()
        .find(|k| name.eq_ignore_ascii_case(k.name().as_bytes()))
    }
}

impl Value {
    pub fn from_bytes(b: &[u8]) -> Value {
        Value::Str(Sds::from_slice(b))
    }

    pub fn from_vec(v: Vec<u8>) -> Value {
        Value::Str(Sds::from_vec(v))
    }

    /// A string Redis builds itself rather than from a client's argument
    /// (BITOP's result, a new HyperLogLog): `raw` whatever its length.
    pub fn raw_vec(v: Vec<u8>) -> Value {
        let mut s = Sds::from_vec(v);
        s.set_flag(StrEnc::Raw as u8);
        Value::Str(s)
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
            Value::List(_) => Kind::List,
            Value::Hash(_) => Kind::Hash,
            Value::Set(_) => Kind::Set,
            Value::ZSet(_) => Kind::ZSet,
            Value::Stream(_) => Kind::Stream,
        }
    }

    /// The string bytes, if this is a string.
    #[inline]
    pub fn as_str(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The list, if this is one.
    #[inline]
    pub fn as_list(&self) -> Option<&List> {
        match self {
            Value::List(x) => Some(x),
            _ => None,
        }
    }

    #[inline]
    pub fn as_list_mut(&mut self) -> Option<&mut List> {
        match self {
            Value::List(x) => Some(x),
            _ => None,
        }
    }

    /// The hash, if this is one.
    #[inline]
    pub fn as_hash(&self) -> Option<&Hash> {
        match self {
            Value::Hash(x) => Some(x),
            _ => None,
        }
    }

    #[inline]
    pub fn as_hash_mut(&mut self) -> Option<&mut Hash> {
        match self {
            Value::Hash(x) => Some(x),
            _ => None,
        }
    }

    /// The set, if this is one.
    #[inline]
    pub fn as_set(&self) -> Option<&Set> {
        match self {
            Value::Set(x) => Some(x),
            _ => None,
        }
    }

    #[inline]
    pub fn as_set_mut(&mut self) -> Option<&mut Set> {
        match self {
            Value::Set(x) => Some(x),
            _ => None,
        }
    }

    /// The sorted set, if this is one.
    #[inline]
    pub fn as_zset(&self) -> Option<&ZSet> {
        match self {
            Value::ZSet(x) => Some(x),
            _ => None,
        }
    }

    #[inline]
    pub fn as_zset_mut(&mut self) -> Option<&mut ZSet> {
        match self {
            Value::ZSet(x) => Some(x),
            _ => None,
        }
    }

    /// The stream, if this is one.
    #[inline]
    pub fn as_stream(&self) -> Option<&Stream> {
        match self {
            Value::Stream(x) => Some(x),
            _ => None,
        }
    }

    #[inline]
    pub fn as_stream_mut(&mut self) -> Option<&mut Stream> {
        match self {
            Value::Stream(x) => Some(x),
            _ => None,
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
            Value::List(l) => l.encoding(),
            Value::Hash(h) => h.encoding(),
            Value::Set(x) => x.encoding(),
            Value::ZSet(z) => z.encoding(),
            Value::Stream(_) => "stream",
        }
    }

    /// Feeds the value (type and contents, independent of encoding) into a
    /// digest, for replay and snapshot consistency checks.
    pub fn digest_into(&self, h: &mut impl Hasher) {
        self.kind().name().hash(h);
        match self {
            Value::Str(s) => s.as_bytes().hash(h),
            Value::List(l) => l.digest_into(h),
            Value::Hash(x) => x.digest_into(h),
            Value::Set(x) => x.digest_into(h),
            Value::ZSet(z) => z.digest_into(h),
            Value::Stream(x) => x.digest_into(h),
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
            other => other.clone(),
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
            _ => false,
        }
    }

    /// Mutable string bytes, switched to a growable buffer and marked
    /// "raw" (APPEND/SETRANGE modify in place). `None` if not a string.
    pub fn str_mut_raw(&mut self) -> Option<&mut crate::sds::GrowBuf> {
        match self {
            Value::Str(s) => {
                s.set_flag(StrEnc::Raw as u8);
                Some(s.make_mut_vec())
            }
            _ => None,
        }
    }

    /// Approximate heap bytes owned by the value (for MEMORY USAGE and
    /// eviction accounting; the allocator's own counter is the truth).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Str(s) => s.heap_size(),
            Value::List(l) => std::mem::size_of::<List>() + l.heap_size(),
            Value::Hash(h) => std::mem::size_of::<Hash>() + h.heap_size(),
            Value::Set(x) => std::mem::size_of::<Set>() + x.heap_size(),
            Value::ZSet(z) => std::mem::size_of::<ZSet>() + z.heap_size(),
            Value::Stream(x) => std::mem::size_of::<Stream>() + x.allocated(),
        }
    }
}
