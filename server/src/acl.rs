//! ACL users: the `requirepass`-style default user plus users created with
//! `ACL SETUSER`. Passwords are kept only as SHA-256 digests (as Redis does;
//! a slow KDF would turn AUTH into a denial-of-service lever).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::cmd::table::Registered;
use crate::util::glob_match;

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    pub passwords: BTreeSet<[u8; 32]>,
    pub all_commands: bool,
    /// Commands (`get`, `client|list`) or categories (`@read`) allowed on top
    /// of / removed from `all_commands`, in rule order.
    pub cmd_rules: Vec<(bool, String)>,
    pub all_keys: bool,
    pub key_patterns: Vec<Vec<u8>>,
    pub all_channels: bool,
    pub channel_patterns: Vec<Vec<u8>>,
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

use crate::util::hex;

fn unhex(s: &[u8]) -> Option<[u8; 32]> {
    crate::util::unhex(s)?.try_into().ok()
}

impl User {
    /// A new user as ACL SETUSER creates it: off, no passwords, no rights.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: BTreeSet::new(),
            all_commands: false,
            cmd_rules: Vec::new(),
            all_keys: false,
            key_patterns: Vec::new(),
            all_channels: false,
            channel_patterns: Vec::new(),
        }
    }

    /// The default user: all rights, password from `requirepass`.
    pub fn default_user(requirepass: Option<&[u8]>) -> User {
        let mut u = User::new("default");
        u.enabled = true;
        u.all_commands = true;
        u.all_keys = true;
        u.all_channels = true;
        match requirepass {
            Some(p) => {
                u.passwords.insert(sha256(p));
            }
            None => u.nopass = true,
        }
        u
    }

    /// Applies one ACL SETUSER rule; `Err` is Redis's reason text.
    pub fn apply_rule(&mut self, rule: &[u8]) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match &lower[..] {
            b"on" => self.enabled = true,
            b"off" => self.enabled = false,
            b"nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            b"resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            b"allkeys" | b"~*" => {
                self.all_keys = true;
                self.key_patterns.clear();
            }
            b"resetkeys" => {
                self.all_keys = false;
                self.key_patterns.clear();
            }
            b"allchannels" | b"&*" => {
                self.all_channels = true;
                self.channel_patterns.clear();
            }
            b"resetchannels" => {
                self.all_channels = false;
                self.channel_patterns.clear();
            }
            b"allcommands" | b"+@all" => {
                self.all_commands = true;
                self.cmd_rules.clear();
            }
            b"nocommands" | b"-@all" => {
                self.all_commands = false;
                self.cmd_rules.clear();
            }
            b"reset" => {
                *self = User::new(&self.name);
                self.all_channels = false;
            }
            _ => match rule.first() {
                Some(b'>') => {
                    self.passwords.insert(sha256(&rule[1..]));
                    self.nopass = false;
                }
                Some(b'<') => {
                    if !self.passwords.remove(&sha256(&rule[1..])) {
                        return Err("no such password".into());
                    }
                }
                Some(b'#') => {
                    let h = unhex(&rule[1..]).ok_or("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")?;
                    self.passwords.insert(h);
                    self.nopass = false;
                }
                Some(b'!') => {
                    let h = unhex(&rule[1..]).ok_or("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")?;
                    if !self.passwords.remove(&h) {
                        return Err("no such password".into());
                    }
                }
                Some(b'~') => {
                    if self.all_keys {
                        return Err("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns".into());
                    }
                    self.key_patterns.push(rule[1..].to_vec());
                }
                Some(b'&') => {
                    if self.all_channels {
                        return Err("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels".into());
                    }
                    self.channel_patterns.push(rule[1..].to_vec());
                }
                Some(b'+') | Some(b'-') => {
                    let name = String::from_utf8_lossy(&lower[1..]).into_owned();
                    if name.is_empty() {
                        return Err("Syntax error".into());
                    }
                    if let Some(cat) = name.strip_prefix('@') {
                        if !crate::cmd::command::ACL_CATEGORIES.contains(&cat) {
                            return Err("Unknown command or category name in ACL".into());
                        }
                    } else if crate::cmd::registry()
                        .by_fullname(name.as_bytes())
                        .is_none()
                    {
                        return Err("Unknown command or category name in ACL".into());
                    }
                    self.cmd_rules.push((rule[0] == b'+', name));
                }
                _ => return Err("Syntax error".into()),
            },
        }
        Ok(())
    }

    /// True if the user may run the command (rules apply in order, the last
    /// matching one wins, as Redis's bitmap updates do).
    pub fn can_run(&self, cmd: &Registered) -> bool {
        let mut allowed = self.all_commands;
        let parent = cmd
            .parent
            .map(|p| crate::cmd::registry().all[p].fullname.as_str());
        for (plus, name) in &self.cmd_rules {
            let matches = if let Some(cat) = name.strip_prefix('@') {
                cmd.spec
                    .acl
                    .split(' ')
                    .any(|c| c.strip_prefix('@') == Some(cat))
                    || (cat == "all")
            } else {
                *name == cmd.fullname || Some(name.as_str()) == parent
            };
            if matches {
                allowed = *plus;
            }
        }
        allowed
    }

    pub fn can_access_key(&self, key: &[u8]) -> bool {
        self.all_keys || self.key_patterns.iter().any(|p| glob_match(p, key, false))
    }

    pub fn check_password(&self, pw: &[u8]) -> bool {
        self.enabled && (self.nopass || self.passwords.contains(&sha256(pw)))
    }

    /// The ACL LIST line.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "user {} {}",
            self.name,
            if self.enabled { "on" } else { "off" }
        );
        if self.nopass {
            s.push_str(" nopass");
        }
        s.push_str(" sanitize-payload");
        for p in &self.passwords {
            s.push_str(" #");
            s.push_str(&hex(p));
        }
        if self.all_keys {
            s.push_str(" ~*");
        } else {
            if self.key_patterns.is_empty() {
                s.push_str(" resetkeys");
            }
            for p in &self.key_patterns {
                s.push_str(" ~");
                s.push_str(&String::from_utf8_lossy(p));
            }
        }
        if self.all_channels {
            s.push_str(" &*");
        } else {
            s.push_str(" resetchannels");
            for p in &self.channel_patterns {
                s.push_str(" &");
                s.push_str(&String::from_utf8_lossy(p));
            }
        }
        s.push_str(if self.all_commands {
            " +@all"
        } else {
            " -@all"
        });
        for (plus, name) in &self.cmd_rules {
            s.push(' ');
            s.push(if *plus { '+' } else { '-' });
            s.push_str(name);
        }
        s
    }
}

/// All users of a server (later: of a tenant).
#[derive(Clone, Debug)]
pub struct Users {
    pub users: BTreeMap<String, User>,
}

impl Users {
    pub fn new(requirepass: Option<&[u8]>) -> Users {
        let mut users = BTreeMap::new();
        users.insert("default".to_string(), User::default_user(requirepass));
        Users { users }
    }

    /// Keeps the default user's password in step with `requirepass`.
    pub fn set_requirepass(&mut self, requirepass: Option<&[u8]>) {
        if let Some(u) = self.users.get_mut("default") {
            u.passwords.clear();
            u.nopass = requirepass.is_none();
            if let Some(p) = requirepass {
                u.passwords.insert(sha256(p));
            }
        }
    }

    /// New connections start authenticated when the default user needs no password.
    pub fn default_is_open(&self) -> bool {
        self.users
            .get("default")
            .is_some_and(|u| u.enabled && u.nopass)
    }

    /// The user may run every command on every key (ACL checks skipped).
    pub fn is_unrestricted(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| {
            u.all_commands && u.cmd_rules.is_empty() && u.all_keys && u.all_channels
        })
    }

    pub fn authenticate(&self, user: &[u8], pw: &[u8]) -> Option<&User> {
        let name = std::str::from_utf8(user).ok()?;
        self.users.get(name).filter(|u| u.check_password(pw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_user_and_requirepass() {
        let mut u = Users::new(None);
        assert!(u.default_is_open());
        u.set_requirepass(Some(b"secret"));
        assert!(!u.default_is_open());
        assert!(u.authenticate(b"default", b"secret").is_some());
        assert!(u.authenticate(b"default", b"nope").is_none());
    }

    #[test]
    fn setuser_rules_and_permissions() {
        let mut u = User::new("app");
        for r in ["on", ">pw", "~app:*", "+@all", "-flushall"] {
            u.apply_rule(r.as_bytes()).unwrap();
        }
        assert!(u.check_password(b"pw"));
        assert!(u.can_access_key(b"app:1"));
        assert!(!u.can_access_key(b"other"));
        let reg = crate::cmd::registry();
        assert!(u.can_run(reg.by_name(b"get").unwrap()));
        assert!(!u.can_run(reg.by_name(b"flushall").unwrap()));
        assert!(u.apply_rule(b"bogus").is_err());
        assert!(u.apply_rule(b"+nosuchcommand").is_err());
        assert!(u.describe().starts_with("user app on sanitize-payload #"));
    }
}
