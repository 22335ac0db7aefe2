//! ACL users, as Redis 7.0 has them, one set per database.
//!
//! The server's own database (the default tenant) has the operator's
//! users: `default` with `requirepass`, those of `aclfile`, those made with
//! ACL SETUSER. Every customer database has users of its own: its
//! `default` user logs in with the database's tokens, and the database's
//! administrators add more with ACL SETUSER, save them with ACL SAVE (to
//! `tenants/<id>/users.acl`) and log in as them with
//! `AUTH <database>.<user> <password>` (or `AUTH <user> <password>` on a
//! connection already in the database). No database sees another's users.
//!
//! - [`user`]: a user, its passwords and selectors.
//! - [`selector`]: one set of command, key and channel rules, and checks.
//! - [`describe`]: categories and the rules ACL LIST shows.
//! - [`keys`] / [`keyspecs`]: which arguments are keys and how each is used.
//! - [`log`]: ACL LOG.
//! - [`file`]: the aclfile format (ACL LOAD / SAVE).

pub mod describe;
pub mod file;
pub mod keys;
pub mod keyspecs;
pub mod log;
pub mod selector;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;

pub use selector::{Denied, RuleError, Selector};
pub use user::{sha256, User};

use crate::tenant::TenantId;

/// The snapshot AUX field (anykv's snapshots, RDB files and full syncs)
/// holding a customer database's users, as a hex-encoded aclfile.
pub const AUX_KEY: &str = "anykv-users";

/// The users a snapshot's AUX fields carry, if any (a field that is not
/// hex is refused: the snapshot is damaged).
pub fn users_in_aux(aux: &[(String, String)]) -> Result<Option<Vec<u8>>, String> {
    match aux.iter().find(|(k, _)| k == AUX_KEY) {
        None => Ok(None),
        Some((_, v)) => crate::util::unhex(v.as_bytes())
            .map(Some)
            .ok_or_else(|| "the users in the snapshot are not hex".to_string()),
    }
}

/// Bumped by every change to any user: a connection whose cached
/// "may do anything" answer is older looks again (Redis applies rule
/// changes to logged-in connections at once).
static EPOCH: AtomicU64 = AtomicU64::new(1);

pub fn epoch() -> u64 {
    EPOCH.load(Relaxed)
}

/// One database's users and its ACL LOG.
#[derive(Debug, Clone)]
pub struct Users {
    pub users: BTreeMap<String, User>,
    pub log: log::Log,
}

impl Users {
    /// The server's own users: `default`, with `requirepass` if set.
    pub fn operator(requirepass: Option<&[u8]>) -> Users {
        let mut u = Users {
            users: BTreeMap::new(),
            log: Default::default(),
        };
        u.users
            .insert("default".into(), User::all_powerful("default"));
        u.set_requirepass(requirepass);
        u
    }

    /// A customer database's users: its `default`, reached with its tokens.
    pub fn database() -> Users {
        let mut d = User::all_powerful("default");
        d.token_login = true;
        let mut users = BTreeMap::new();
        users.insert("default".into(), d);
        Users {
            users,
            log: Default::default(),
        }
    }

    /// Keeps the default user's password in step with `requirepass`.
    pub fn set_requirepass(&mut self, requirepass: Option<&[u8]>) {
        if let Some(u) = self.users.get_mut("default") {
            u.passwords.clear();
            u.nopass = requirepass.is_none();
            if let Some(p) = requirepass {
                u.passwords.push(sha256(p));
            }
        }
    }

    /// New connections start authenticated when the default user needs no
    /// password.
    pub fn default_is_open(&self) -> bool {
        self.users
            .get("default")
            .is_some_and(|u| u.enabled && u.nopass)
    }

    /// The user may run every command on every key (ACL checks skipped).
    pub fn is_unrestricted(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(User::is_unrestricted)
    }

    pub fn authenticate(&self, user: &[u8], pw: &[u8]) -> Option<&User> {
        let name = std::str::from_utf8(user).ok()?;
        self.users.get(name).filter(|u| u.check_password(pw))
    }
}

/// Every database's users.
pub struct Store {
    tenants: RwLock<HashMap<TenantId, Users>>,
}

impl Store {
    pub fn new(requirepass: Option<&[u8]>) -> Store {
        let mut m = HashMap::new();
        m.insert(TenantId::DEFAULT, Users::operator(requirepass));
        Store {
            tenants: RwLock::new(m),
        }
    }

    fn fresh(t: TenantId) -> Users {
        if t == TenantId::DEFAULT {
            Users::operator(None)
        } else {
            Users::database()
        }
    }

    /// Reads database `t`'s users.
    pub fn read<R>(&self, t: TenantId, f: impl FnOnce(&Users) -> R) -> R {
        {
            let g = self.tenants.read();
            if let Some(u) = g.get(&t) {
                return f(u);
            }
        }
        let mut g = self.tenants.write();
        f(g.entry(t).or_insert_with(|| Store::fresh(t)))
    }

    /// Changes database `t`'s users; connections logged in as them look
    /// at their rules again before their next command.
    pub fn write<R>(&self, t: TenantId, f: impl FnOnce(&mut Users) -> R) -> R {
        let mut g = self.tenants.write();
        let r = f(g.entry(t).or_insert_with(|| Store::fresh(t)));
        EPOCH.fetch_add(1, Relaxed);
        r
    }

    /// Adds to database `t`'s ACL LOG (no rule changes).
    pub fn log(&self, t: TenantId, entry: log::Entry, max_len: usize) {
        let mut g = self.tenants.write();
        g.entry(t)
            .or_insert_with(|| Store::fresh(t))
            .log
            .add(entry, max_len);
    }

    /// Replaces database `t`'s users with those of an aclfile named
    /// `name` (None: only its default user), keeping its ACL LOG: how a
    /// snapshot, a full sync, ACL LOAD or a file at start brings them.
    /// Nothing changes on error.
    pub fn install(&self, t: TenantId, file: Option<&[u8]>, name: &str) -> Result<(), String> {
        let mut users = match file {
            Some(f) => file::parse(f, name, Store::fresh(t))?,
            None => Store::fresh(t),
        };
        self.write(t, |u| {
            users.log = std::mem::take(&mut u.log);
            *u = users;
        });
        Ok(())
    }

    /// A removed database's users go with it (its file stays).
    pub fn forget(&self, t: TenantId) {
        self.tenants.write().remove(&t);
        EPOCH.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_user_and_requirepass() {
        let mut u = Users::operator(None);
        assert!(u.default_is_open());
        u.set_requirepass(Some(b"secret"));
        assert!(!u.default_is_open());
        assert!(u.authenticate(b"default", b"secret").is_some());
        assert!(u.authenticate(b"default", b"nope").is_none());
    }

    #[test]
    fn databases_have_their_own_users() {
        let s = Store::new(None);
        let shop = TenantId(7);
        s.write(shop, |u| {
            let mut a = User::new("alice");
            a.apply(b"on").unwrap();
            a.apply(b">pw").unwrap();
            u.users.insert("alice".into(), a);
        });
        assert!(s.read(shop, |u| u.authenticate(b"alice", b"pw").is_some()));
        assert!(s.read(TenantId::DEFAULT, |u| u
            .authenticate(b"alice", b"pw")
            .is_none()));
        // A database's default user never logs in by password.
        assert!(s.read(shop, |u| u.authenticate(b"default", b"").is_none()));
        assert!(s.read(shop, |u| u.is_unrestricted("default")));
    }
}
