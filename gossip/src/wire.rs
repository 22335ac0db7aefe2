//! The gossip datagram envelope: authentication and RTT timestamps around
//! foca's payload.
//!
//! ```text
//! 0      2     3     4      5          13         21        25        n-16   n
//! | "AK" | ver | key | kind | send ts  | echo ts  | hold µs | payload | tag  |
//! ```
//!
//! - `kind` says whose payload it is: foca's, or the join handshake's
//!   ([`Kind::Hello`] asks "who are you?", [`Kind::HelloReply`] answers
//!   with the node's identity). foca only accepts an announce addressed to
//!   the receiver's identity, while DNS and static seeds give addresses;
//!   the handshake turns one into the other.
//! - `tag` is HMAC-SHA256 over everything before it with the cluster key,
//!   truncated to 16 bytes. `key` is the first byte of SHA-256(key), so a
//!   receiver holding several keys during a rotation tries the right one
//!   first; it accepts any configured key and sends with the first.
//! - `send ts` is the sender's clock (µs, its own monotonic epoch);
//!   `echo ts` is the last `send ts` the sender received *from the
//!   destination*, and `hold` how long it held it before this send. The
//!   destination gets an RTT sample as `now - echo - hold` from the ack of
//!   every probe it sends (the ack is sent at once, so `hold` is ~0), with
//!   no extra packets and no clock agreement between nodes.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 25;
/// Bytes after the payload.
pub const TAG_LEN: usize = 16;
/// Largest datagram accepted; anything bigger is dropped as oversized.
pub const MAX_DATAGRAM: usize = 1400;
const MAGIC: &[u8; 2] = b"AK";
const VERSION: u8 = 1;

/// Why an incoming datagram was dropped (the label of
/// `anykv_gossip_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("truncated")]
    Truncated,
    #[error("oversized")]
    Oversized,
    #[error("not an anykv gossip packet")]
    Magic,
    #[error("unknown envelope version")]
    Version,
    #[error("bad authentication tag")]
    Auth,
    #[error("unknown payload kind")]
    Kind,
}

/// What the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A foca (SWIM) message.
    Foca = 0,
    /// Join handshake: the sender asks for the receiver's identity.
    Hello = 1,
    /// Join handshake: the payload is the sender's identity.
    HelloReply = 2,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::Magic => "magic",
            Reject::Version => "version",
            Reject::Auth => "auth",
            Reject::Kind => "malformed",
        }
    }
}

/// The cluster's gossip keys: the first signs, all verify (rotation: add
/// the new key second everywhere, then first, then drop the old one).
#[derive(Clone)]
pub struct ClusterKeys {
    keys: Vec<(u8, Vec<u8>)>,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKeys({} keys)", self.keys.len())
    }
}

/// Keys must be long enough to be keys.
pub const MIN_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no gossip key configured")]
    Empty,
    #[error("gossip key {0} is shorter than {MIN_KEY_LEN} bytes")]
    Short(usize),
}

impl ClusterKeys {
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_ref();
            if k.len() < MIN_KEY_LEN {
                return Err(KeyError::Short(i));
            }
            out.push((Sha256::digest(k)[0], k.to_vec()));
        }
        Ok(ClusterKeys { keys: out })
    }

    /// Parses a comma-separated list of keys (as given on the command line
    /// or in `ANYKV_GOSSIP_KEYS`).
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let keys: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        Self::new(&keys)
    }

    fn tag(key: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length; new_from_slice cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => return [0; TAG_LEN],
        };
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }
}

/// Timestamps carried by every datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamps {
    pub send_us: u64,
    pub echo_us: u64,
    pub hold_us: u32,
}

/// Wraps `payload` into an authenticated datagram.
pub fn seal(keys: &ClusterKeys, kind: Kind, stamps: Stamps, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let (id, key) = &keys.keys[0];
    out.push(*id);
    out.push(kind as u8);
    out.extend_from_slice(&stamps.send_us.to_le_bytes());
    out.extend_from_slice(&stamps.echo_us.to_le_bytes());
    out.extend_from_slice(&stamps.hold_us.to_le_bytes());
    out.extend_from_slice(payload);
    let tag = ClusterKeys::tag(key, out);
    out.extend_from_slice(&tag);
}

/// Checks and unwraps a datagram; the payload is a slice of `data`.
pub fn open<'a>(keys: &ClusterKeys, data: &'a [u8]) -> Result<(Kind, Stamps, &'a [u8]), Reject> {
    if data.len() > MAX_DATAGRAM {
        return Err(Reject::Oversized);
    }
    if data.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::Truncated);
    }
    if &data[..2] != MAGIC {
        return Err(Reject::Magic);
    }
    if data[2] != VERSION {
        return Err(Reject::Version);
    }
    let (body, tag) = data.split_at(data.len() - TAG_LEN);
    let id = data[3];
    // Try the key the sender named first, then the rest (an id collision
    // between two keys only costs one more HMAC).
    let ok = keys
        .keys
        .iter()
        .filter(|(kid, _)| *kid == id)
        .chain(keys.keys.iter().filter(|(kid, _)| *kid != id))
        .any(|(_, key)| ct_eq(&ClusterKeys::tag(key, body), tag));
    if !ok {
        return Err(Reject::Auth);
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let kind = match data[4] {
        0 => Kind::Foca,
        1 => Kind::Hello,
        2 => Kind::HelloReply,
        _ => return Err(Reject::Kind),
    };
    let mut h = [0u8; 4];
    h.copy_from_slice(&data[21..25]);
    let stamps = Stamps {
        send_us: u64_at(5),
        echo_us: u64_at(13),
        hold_us: u32::from_le_bytes(h),
    };
    Ok((kind, stamps, &body[HEADER_LEN..]))
}

/// Constant-time comparison, so the tag check leaks no timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> ClusterKeys {
        ClusterKeys::new(k).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = keys(&["0123456789abcdef-cluster"]);
        let st = Stamps {
            send_us: 7,
            echo_us: 5,
            hold_us: 3,
        };
        let mut buf = Vec::new();
        seal(&k, Kind::Hello, st, b"hello", &mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 5 + TAG_LEN);
        let (kind, got, payload) = open(&k, &buf).unwrap();
        assert_eq!(kind, Kind::Hello);
        assert_eq!(got, st);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn rejects_wrong_key_and_tampering() {
        let a = keys(&["0123456789abcdef-cluster"]);
        let b = keys(&["another-key-0123456789"]);
        let mut buf = Vec::new();
        seal(&a, Kind::Foca, Stamps::default(), b"payload", &mut buf);
        assert_eq!(open(&b, &buf), Err(Reject::Auth));
        for i in 0..buf.len() {
            let mut t = buf.clone();
            t[i] ^= 0x40;
            assert!(open(&a, &t).is_err(), "flip at {i} accepted");
        }
        for n in 0..buf.len() {
            assert!(open(&a, &buf[..n]).is_err());
        }
        assert_eq!(
            open(&a, &vec![0u8; MAX_DATAGRAM + 1]),
            Err(Reject::Oversized)
        );
    }

    #[test]
    fn rotation_accepts_old_and_new() {
        let old = keys(&["old-key-0123456789"]);
        let new = keys(&["new-key-0123456789"]);
        let both = keys(&["new-key-0123456789", "old-key-0123456789"]);
        let mut buf = Vec::new();
        seal(&old, Kind::Foca, Stamps::default(), b"x", &mut buf);
        assert!(open(&both, &buf).is_ok());
        seal(&both, Kind::Foca, Stamps::default(), b"x", &mut buf);
        assert!(open(&new, &buf).is_ok());
        assert_eq!(open(&old, &buf), Err(Reject::Auth));
    }

    #[test]
    fn short_keys_refused() {
        assert!(ClusterKeys::parse("short").is_err());
        assert!(ClusterKeys::parse("").is_err());
        assert!(ClusterKeys::parse("0123456789abcdef, fedcba9876543210").is_ok());
    }
}
