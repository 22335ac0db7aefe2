//! The RDB format, as redis-server 7.0 reads and writes it (version 10):
//! full-sync payloads to and from a real Redis (`REPLICAOF` in either
//! direction, `redis-cli --rdb`), `.rdb` files people migrate with, and
//! later `DUMP`/`RESTORE`.
//!
//! anykv's own snapshots (`persist::snapshot`) stay its on-disk format:
//! they are block-checksummed and carry anykv's metadata. RDB is for
//! talking to Redis.
//!
//! - [`read`]: streams records out of any `Read`, every RDB version up to
//!   10 and every encoding Redis up to 7.0 writes (integer and LZF strings,
//!   listpack, ziplist, intset, quicklist), verifying the CRC-64.
//! - [`write`]: writes version 10 with RDB's generic value types, which
//!   Redis loads into its own encodings.
//! - [`crc64`], [`lzf`], [`packed`]: the checksum, the string compression
//!   and the packed encodings they need.
//!
//! Function libraries travel in both (`FUNCTION DUMP` payloads too), and
//! streams with their consumer groups (RDB types 15 and 19, as Redis 7.0 writes them).
//! Module values do not: anykv has no modules.

pub mod crc64;
pub mod lzf;
pub mod packed;
pub mod read;
pub mod write;

pub use read::{read, read_into, RdbInfo};
pub use write::RdbWriter;

use thiserror::Error;

/// The RDB version this server writes and the newest it reads.
pub const RDB_VERSION: u32 = 10;

pub(crate) const OP_FUNCTION_PRE_GA: u8 = 246;
pub(crate) const OP_FUNCTION2: u8 = 245;
pub(crate) const OP_IDLE: u8 = 248;
pub(crate) const OP_FREQ: u8 = 249;
pub(crate) const OP_AUX: u8 = 250;
pub(crate) const OP_RESIZEDB: u8 = 251;
pub(crate) const OP_EXPIRETIME_MS: u8 = 252;
pub(crate) const OP_EXPIRETIME: u8 = 253;
pub(crate) const OP_SELECTDB: u8 = 254;
pub(crate) const OP_EOF: u8 = 255;

/// RDB value types (Redis's `RDB_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Type {
    String = 0,
    List = 1,
    Set = 2,
    ZSet = 3,
    Hash = 4,
    ZSet2 = 5,
    Module = 6,
    Module2 = 7,
    HashZipmap = 9,
    ListZiplist = 10,
    SetIntset = 11,
    ZSetZiplist = 12,
    HashZiplist = 13,
    ListQuicklist = 14,
    Stream = 15,
    HashListpack = 16,
    ZSetListpack = 17,
    ListQuicklist2 = 18,
    Stream2 = 19,
}

impl Type {
    pub fn from_u8(b: u8) -> Option<Type> {
        use Type::*;
        Some(match b {
            0 => String,
            1 => List,
            2 => Set,
            3 => ZSet,
            4 => Hash,
            5 => ZSet2,
            6 => Module,
            7 => Module2,
            9 => HashZipmap,
            10 => ListZiplist,
            11 => SetIntset,
            12 => ZSetZiplist,
            13 => HashZiplist,
            14 => ListQuicklist,
            15 => Stream,
            16 => HashListpack,
            17 => ZSetListpack,
            18 => ListQuicklist2,
            19 => Stream2,
            _ => return None,
        })
    }
}

/// Why an RDB payload could not be read.
#[derive(Debug, Error)]
pub enum RdbError {
    #[error("RDB I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an RDB payload (no REDIS magic)")]
    Magic,
    #[error("RDB version {0} is not supported (this server reads 1 to 10)")]
    Version(u32),
    #[error("RDB ends early (after {0} bytes)")]
    Truncated(u64),
    #[error("bad RDB length encoding near byte {0}")]
    BadLength(u64),
    #[error("unknown RDB opcode or value type {0} near byte {1}")]
    Opcode(u8, u64),
    #[error("unsupported RDB content for key '{key}': {what}")]
    Unsupported { what: &'static str, key: String },
    #[error("database {0} out of range ('databases' is {1})")]
    Db(u64, u32),
    #[error("bad score '{0}'")]
    BadScore(String),
    #[error("odd number of elements in a packed {0}")]
    Odd(&'static str),
    #[error("unknown quicklist container {0}")]
    BadContainer(u64),
    #[error(
        "RDB checksum mismatch: the file says {file:#018x}, its content gives {computed:#018x}"
    )]
    Checksum { file: u64, computed: u64 },
    #[error(transparent)]
    Lzf(#[from] lzf::LzfError),
    #[error(transparent)]
    Packed(#[from] packed::PackedError),
    #[error("RDB value: {0}")]
    Value(#[from] crate::persist::codec::CodecError),
    /// An error from the caller's record handler.
    #[error("{0}")]
    Consumer(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::persist::codec::Thresholds;
    use crate::shared::Shared;
    use crate::tenant::{Tenant, TenantId};

    fn populated() -> Tenant {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        let a = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let mut s = crate::client::Session::new(
            std::rc::Rc::new(crate::client::ClientInfo::new(1, a, a, -1, 0)),
            true,
        );
        let big: String = "x".repeat(3000);
        let mut cmds: Vec<Vec<String>> = vec![
            vec!["SET".into(), "s".into(), "hello".into()],
            vec!["SET".into(), "i".into(), "-123456".into()],
            vec!["SET".into(), "big".into(), big.clone()],
            vec!["SET".into(), "n64".into(), "9223372036854775807".into()],
            vec!["RPUSH".into(), "l".into(), "a".into(), "1".into(), big],
            vec![
                "SADD".into(),
                "ints".into(),
                "1".into(),
                "-7".into(),
                "100000".into(),
            ],
            vec!["SADD".into(), "strs".into(), "a".into(), "b".into()],
            vec![
                "HSET".into(),
                "h".into(),
                "f".into(),
                "v".into(),
                "n".into(),
                "5".into(),
            ],
            vec![
                "ZADD".into(),
                "z".into(),
                "1.5".into(),
                "a".into(),
                "-inf".into(),
                "b".into(),
            ],
            vec!["PEXPIREAT".into(), "s".into(), "4102444800000".into()],
            vec!["SELECT".into(), "5".into()],
            vec!["SET".into(), "other".into(), "db".into()],
        ];
        for i in 0..300 {
            cmds.push(vec![
                "HSET".into(),
                "bigh".into(),
                format!("f{i}"),
                format!("{i}"),
            ]);
            cmds.push(vec![
                "ZADD".into(),
                "bigz".into(),
                i.to_string(),
                format!("m{i}"),
            ]);
        }
        for c in &cmds {
            let args: Vec<&[u8]> = c.iter().map(|x| x.as_bytes()).collect();
            let mut out = crate::resp::Reply::new(2);
            crate::dispatch::dispatch(
                &mut t,
                &mut s,
                &shared,
                &set,
                &args,
                &mut out,
                1_700_000_000_000,
            );
            assert_ne!(out.buf.first(), Some(&b'-'), "{c:?}");
        }
        t
    }

    fn write_rdb(t: &Tenant) -> Vec<u8> {
        let mut w =
            RdbWriter::new(Vec::new(), &[("redis-ver", "7.0.15"), ("redis-bits", "64")]).unwrap();
        w.keyspace(&t.ks).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_keyspace_round_trips_through_rdb() {
        let t = populated();
        let bytes = write_rdb(&t);
        let mut back = Tenant::new(TenantId::DEFAULT, "b", 16);
        let (info, skipped) =
            read_into(&bytes[..], &Thresholds::default(), &mut back.ks, None).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(info.version, 10);
        assert_eq!(info.aux("redis-ver"), Some("7.0.15"));
        assert_eq!(info.keys, t.ks.total_keys() as u64);
        assert!(
            back.ks.digest() == t.ks.digest(),
            "keyspace differs after an RDB round trip"
        );
    }

    #[test]
    fn damage_is_detected_never_a_panic() {
        let bytes = write_rdb(&populated());
        let th = Thresholds::default();
        // A flipped byte in the body: the checksum (or the parser) refuses it.
        for at in (9..bytes.len() - 8).step_by(37) {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            assert!(
                read(&b[..], &th, 16, |_| Ok(())).is_err(),
                "byte {at} flipped"
            );
        }
        // Every truncation is an error.
        for cut in (0..bytes.len()).step_by(11) {
            assert!(
                read(&bytes[..cut], &th, 16, |_| Ok(())).is_err(),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            read(&b"REDIS0011"[..], &th, 16, |_| Ok(())),
            Err(RdbError::Version(11))
        ));
        assert!(matches!(
            read(&b"RODIS0010"[..], &th, 16, |_| Ok(())),
            Err(RdbError::Magic)
        ));
    }
}
