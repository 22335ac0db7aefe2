//! The tenant catalog: which databases this server holds, how their clients
//! prove who they are, and each one's plan limits.
//!
//! Standalone servers read it from `tenants-file` (one tenant per line, as
//! Redis reads an ACL file); the cluster will feed the same structure from
//! its gossiped catalog table. Tokens are kept only as SHA-256 digests: a
//! token is random (at least 128 bits), so a fast hash is enough, and a slow
//! KDF would make AUTH a denial-of-service lever.
//!
//! ```text
//! # tenant <name> id=<n> (token=<secret> | token-sha256=<hex>)... [maxmemory=<size>] [maxmemory-policy=<policy>]
//! #        [maxclients=<n>] [ops-per-sec=<n>]
//! tenant shop id=1 token-sha256=9f86d0...  maxmemory=64mb maxmemory-policy=allkeys-lru maxclients=100
//! ```
//!
//! Two tokens may be valid at once (rotation: the old one stays until every
//! app has the new REDIS_URL).

use sha2::{Digest, Sha256};
use std::collections::HashMap;

use crate::evict::Policy;
use crate::tenant::TenantId;

/// One tenant's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpec {
    pub id: TenantId,
    pub name: String,
    pub token_sha256: Vec<[u8; 32]>,
    /// Plan memory limit in bytes (0: the server's `maxmemory`, applied to
    /// this database's own memory).
    pub maxmemory: u64,
    /// Plan eviction policy (None: the server's `maxmemory-policy`).
    pub policy: Option<Policy>,
    /// Plan connection limit (0: none beyond the server's `maxclients`):
    /// an AUTH that would exceed it is refused with Redis's `max number of
    /// clients reached`.
    pub maxclients: u64,
    /// Plan command rate (0: unlimited): commands beyond it wait for the
    /// next second's share instead of failing (see `tenant::RateLimit`).
    pub ops_per_sec: u64,
    /// On a cluster node: this node holds a replica of the tenant, whose
    /// primary is the store at this cluster address (None: this node is
    /// its primary, or the server is standalone). Set by the node's
    /// placement, never by a tenants file.
    pub follow: Option<std::net::SocketAddr>,
    /// On the primary of a tenant with durability `region`: the cluster
    /// address of its standby, whose acknowledgement every write waits for.
    pub standby: Option<std::net::SocketAddr>,
    /// On the node a move of the primary names the new primary: the old
    /// primary's offset where it stopped writing. This node, still its
    /// replica, takes over only once it has applied the stream up to
    /// there (`repl::replica::take_over`); writes wait meanwhile.
    pub promote_at: Option<u64>,
    /// On a cluster node: the failover epoch of the tenant's role record
    /// (0 standalone). Tokens carry it (docs/ROUTING.md).
    pub epoch: u64,
    /// On a cluster node: this node is the tenant's primary under its
    /// region controller's lease, and takes writes only while the lease
    /// covers the tenant at `epoch` (`Shared::lease_holds`).
    pub leased: bool,
    /// What a connection's reads promise (docs/ROUTING.md): with `strong`
    /// a `leased` primary's reads need the lease too (they are
    /// linearizable only under it) and a replica's node sends every read
    /// to the primary.
    pub consistency: Consistency,
    /// On the primary of a tenant with durability `region`: every write
    /// waits for the standby's acknowledgement, and without a standby that
    /// has completed its sync none is taken (`NOREPLICAS` after
    /// `standby-wait-ms`), even when the record names no standby.
    pub durable: bool,
    /// On a cluster node: the role record no longer names this node for
    /// the tenant, and the copy is kept only a while (an old primary
    /// rejoining to count what only it had, a copy lingering before it is
    /// dropped). Its acknowledgements say so (`REPLCONF ACK ... KEEP 0`):
    /// the primary counts none of them as its standby's, nor reports the
    /// copy synced to the controller, so no write is acknowledged, nor a
    /// standby marked in sync, by a copy about to be thrown away.
    pub leaving: bool,
    /// On a cluster node that holds no copy of the tenant: where its
    /// customers' requests go (the node's remote catalog only, see
    /// `Shared::set_remote`).
    pub remote: Option<Box<RemoteRoute>>,
}

/// Where a tenant this node holds no copy of is served: the cluster
/// addresses of its primary's node and of the nodes holding a copy,
/// nearest first (by the gossip's measured round trip; the primary among
/// them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRoute {
    pub primary: std::net::SocketAddr,
    pub copies: Vec<CopyAt>,
}

/// A node with a copy of a remote tenant, and how far it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyAt {
    pub addr: std::net::SocketAddr,
    /// The gossip's smallest round trip to it of the last minute, whole
    /// milliseconds (`u64::MAX`: not measured yet).
    pub rtt_ms: u64,
}

impl RemoteRoute {
    /// The primary's measured round trip (`u64::MAX`: unknown).
    pub fn primary_rtt_ms(&self) -> u64 {
        self.copies
            .iter()
            .find(|c| c.addr == self.primary)
            .map_or(u64::MAX, |c| c.rtt_ms)
    }
}

/// Which copy a connection's reads may use, per database (the catalog's
/// `consistency`). Writes always run on the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Read-your-writes and monotonic reads: a replica serves a read once
    /// it has the connection's last write (waiting `ryw-wait-ms` for it),
    /// otherwise the primary does.
    #[default]
    Ryw,
    /// Every read on the primary, under its lease.
    Strong,
    /// Any copy as it is: a replica may not have the connection's own
    /// last write yet.
    Nearest,
}

impl Consistency {
    /// `ryw`, `strong` or `nearest`; the empty string is the default.
    pub fn parse(s: &str) -> Option<Consistency> {
        match s {
            "" | "ryw" => Some(Consistency::Ryw),
            "strong" => Some(Consistency::Strong),
            "nearest" => Some(Consistency::Nearest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Ryw => "ryw",
            Consistency::Strong => "strong",
            Consistency::Nearest => "nearest",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tenants file line {line}: {msg}")]
pub struct CatalogError {
    pub line: usize,
    pub msg: String,
}

/// Every tenant this server knows, by id, name and token digest.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    tenants: Vec<TenantSpec>,
    by_token: HashMap<[u8; 32], usize>,
}

/// SHA-256 of a token, as the catalog keeps it.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n != "default"
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

const POLICIES: &[&str] = &[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// Why `policy` is not a `maxmemory-policy` a tenant may have (None: it
/// is one, or none is given).
pub fn policy_error(policy: Option<&str>) -> Option<String> {
    let p = policy?;
    (!POLICIES.contains(&p)).then(|| {
        format!(
            "unknown maxmemory_policy '{p}' (one of {})",
            POLICIES.join(", ")
        )
    })
}

impl Catalog {
    /// Parses a tenants file's text.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |msg: String| CatalogError { line, msg };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut words = l.split_whitespace();
            if words.next() != Some("tenant") {
                return Err(err(
                    "expected 'tenant <name> id=<n> token-sha256=<hex> ...'".into(),
                ));
            }
            let name = words.next().unwrap_or_default();
            if !valid_name(name) {
                return Err(err(format!(
                    "invalid tenant name '{name}' (1-63 of a-z 0-9 - _, not 'default')"
                )));
            }
            let mut spec = TenantSpec {
                id: TenantId::DEFAULT,
                name: name.to_string(),
                token_sha256: Vec::new(),
                maxmemory: 0,
                policy: None,
                maxclients: 0,
                ops_per_sec: 0,
                follow: None,
                standby: None,
                promote_at: None,
                epoch: 0,
                leased: false,
                consistency: Consistency::Ryw,
                durable: false,
                leaving: false,
                remote: None,
            };
            for w in words {
                let (k, v) = w
                    .split_once('=')
                    .ok_or_else(|| err(format!("expected key=value, got '{w}'")))?;
                match k {
                    "id" => match v.parse::<u64>() {
                        Ok(n) if n > 0 => spec.id = TenantId(n),
                        _ => return Err(err(format!("invalid id '{v}' (a positive integer)"))),
                    },
                    "token" if v.len() >= 16 => spec.token_sha256.push(token_digest(v.as_bytes())),
                    "token" => return Err(err("a token must be at least 16 characters".into())),
                    "token-sha256" => match parse_hex32(v) {
                        Some(d) => spec.token_sha256.push(d),
                        None => return Err(err(format!("invalid token-sha256 '{v}'"))),
                    },
                    "maxmemory" => match crate::config::memtoull(v) {
                        Some(n) => spec.maxmemory = n,
                        None => return Err(err(format!("invalid maxmemory '{v}'"))),
                    },
                    "maxmemory-policy" if POLICIES.contains(&v) => {
                        spec.policy = Some(Policy::parse(v))
                    }
                    "maxmemory-policy" => {
                        return Err(err(format!("invalid maxmemory-policy '{v}'")))
                    }
                    "maxclients" => match v.parse::<u64>() {
                        Ok(n) => spec.maxclients = n,
                        Err(_) => return Err(err(format!("invalid maxclients '{v}'"))),
                    },
                    "ops-per-sec" => match v.parse::<u64>() {
                        Ok(n) => spec.ops_per_sec = n,
                        Err(_) => return Err(err(format!("invalid ops-per-sec '{v}'"))),
                    },
                    _ => return Err(err(format!("unknown setting '{k}'"))),
                }
            }
            if spec.id == TenantId::DEFAULT {
                return Err(err(format!("tenant '{name}' has no id")));
            }
            if spec.token_sha256.is_empty() {
                return Err(err(format!("tenant '{name}' has no token")));
            }
            if cat
                .tenants
                .iter()
                .any(|t| t.id == spec.id || t.name == spec.name)
            {
                return Err(err(format!("duplicate tenant name or id '{name}'")));
            }
            for d in &spec.token_sha256 {
                if cat.by_token.insert(*d, cat.tenants.len()).is_some() {
                    return Err(err("a token is shared by two tenants".into()));
                }
            }
            cat.tenants.push(spec);
        }
        Ok(cat)
    }

    /// A catalog of `specs` (the cluster's, as the node's placement derives
    /// it). A spec whose id, name or token another one already has is
    /// skipped and reported, so one bad entry never hides the others.
    pub fn from_specs(specs: Vec<TenantSpec>) -> (Catalog, Vec<String>) {
        let mut cat = Catalog::default();
        let mut skipped = Vec::new();
        for spec in specs {
            let clash = cat
                .tenants
                .iter()
                .any(|t| t.id == spec.id || t.name == spec.name)
                || spec
                    .token_sha256
                    .iter()
                    .any(|d| cat.by_token.contains_key(d))
                || spec.id == TenantId::DEFAULT;
            if clash {
                skipped.push(format!(
                    "tenant '{}' (id {}): its id, name or a token is another tenant's",
                    spec.name, spec.id.0
                ));
                continue;
            }
            for d in &spec.token_sha256 {
                cat.by_token.insert(*d, cat.tenants.len());
            }
            cat.tenants.push(spec);
        }
        (cat, skipped)
    }

    /// Reads `path` (an empty path is an empty catalog).
    pub fn load(path: &str) -> Result<Catalog, String> {
        if path.is_empty() {
            return Ok(Catalog::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Catalog::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn tenants(&self) -> &[TenantSpec] {
        &self.tenants
    }

    pub fn get(&self, id: TenantId) -> Option<&TenantSpec> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// The tenant a client logs in to: `AUTH <token>`, `AUTH default
    /// <token>` or `AUTH <db-name> <token>` (`user` None for the first).
    pub fn authenticate(&self, user: Option<&[u8]>, token: &[u8]) -> Option<&TenantSpec> {
        let t = &self.tenants[*self.by_token.get(&token_digest(token))?];
        match user {
            None | Some(b"default") => Some(t),
            Some(u) if u == t.name.as_bytes() => Some(t),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
# two databases
tenant shop id=1 token=shop-secret-0123456 maxmemory=1mb maxmemory-policy=allkeys-lru
tenant blog id=7 token-sha256=0000000000000000000000000000000000000000000000000000000000000000 token=blog-secret-0123456
";

    #[test]
    fn parses_and_authenticates() {
        let c = Catalog::parse(FILE).unwrap();
        assert_eq!(c.tenants().len(), 2);
        let shop = c.get(TenantId(1)).unwrap();
        assert_eq!(shop.maxmemory, 1024 * 1024);
        assert_eq!(shop.policy, Some(Policy::AllkeysLru));
        let blog = c.get(TenantId(7)).unwrap();
        assert_eq!(blog.token_sha256.len(), 2, "rotation: two valid tokens");
        assert_eq!((blog.maxmemory, blog.policy), (0, None));
        let id = |u: Option<&[u8]>, p: &[u8]| c.authenticate(u, p).map(|t| t.id);
        assert_eq!(id(None, b"shop-secret-0123456"), Some(TenantId(1)));
        assert_eq!(
            id(Some(b"default"), b"blog-secret-0123456"),
            Some(TenantId(7))
        );
        assert_eq!(id(Some(b"blog"), b"blog-secret-0123456"), Some(TenantId(7)));
        assert_eq!(
            id(Some(b"shop"), b"blog-secret-0123456"),
            None,
            "name must match"
        );
        assert_eq!(id(None, b"wrong"), None);
        assert_eq!(id(None, b""), None);
    }

    #[test]
    fn rejects_bad_lines_with_their_number() {
        for (text, needle) in [
            (
                "tenant Shop id=1 token=0123456789abcdef",
                "invalid tenant name",
            ),
            (
                "tenant default id=1 token=0123456789abcdef",
                "invalid tenant name",
            ),
            ("tenant a id=0 token=0123456789abcdef", "invalid id"),
            ("tenant a token=0123456789abcdef", "has no id"),
            ("tenant a id=1", "has no token"),
            ("tenant a id=1 token=short", "at least 16"),
            ("tenant a id=1 token-sha256=zz", "invalid token-sha256"),
            (
                "tenant a id=1 token=0123456789abcdef maxmemory=lots",
                "invalid maxmemory",
            ),
            (
                "tenant a id=1 token=0123456789abcdef maxmemory-policy=lru",
                "invalid maxmemory-policy",
            ),
            (
                "tenant a id=1 token=0123456789abcdef colour=red",
                "unknown setting",
            ),
            ("tenant a id=1 token=0123456789abcdef noequals", "key=value"),
            ("user a on", "expected 'tenant"),
        ] {
            let e = Catalog::parse(&format!("# x\n{text}")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.msg.contains(needle), "{text}: {}", e.msg);
        }
        let dup = "tenant a id=1 token=0123456789abcdef\ntenant b id=1 token=0123456789abcdeg";
        assert!(Catalog::parse(dup).unwrap_err().msg.contains("duplicate"));
        let shared = "tenant a id=1 token=0123456789abcdef\ntenant b id=2 token=0123456789abcdef";
        assert!(Catalog::parse(shared).unwrap_err().msg.contains("shared"));
    }
}
