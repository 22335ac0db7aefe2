//! An ACL user: its passwords and flags, its root selector and its
//! further selectors (Redis 7.0's `user` with `selectors`).

use sha2::{Digest, Sha256};

use super::keys::Access;
use super::selector::{Denied, RuleError, Selector};
use crate::cmd::table::Registered;

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn unhex(s: &[u8]) -> Option<[u8; 32]> {
    // Lowercase only, as Redis.
    if s.len() != 64 || s.iter().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    crate::util::unhex(s)?.try_into().ok()
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    /// SHA-256 digests, in the order they were added (a slow KDF would
    /// turn AUTH into a denial-of-service lever, so Redis uses none).
    pub passwords: Vec<[u8; 32]>,
    /// `sanitize-payload` (Some(true)) or `skip-sanitize-payload`
    /// (Some(false)); a new user has neither.
    pub sanitize: Option<bool>,
    pub root: Selector,
    pub selectors: Vec<Selector>,
    /// A database's `default` user: it logs in with the database's tokens,
    /// which the control plane manages, never with a password.
    pub token_login: bool,
}

impl User {
    /// A new user as ACL SETUSER creates it: off, no passwords, no rights.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            sanitize: None,
            root: Selector::new(),
            selectors: Vec::new(),
            token_login: false,
        }
    }

    /// A user that may do anything: the server's default user.
    pub fn all_powerful(name: &str) -> User {
        let mut u = User::new(name);
        u.enabled = true;
        u.root.apply(b"+@all").ok();
        u.root.apply(b"~*").ok();
        u.root.apply(b"&*").ok();
        u
    }

    /// Applies one ACL SETUSER rule (a selector `(...)` already merged
    /// into one argument).
    pub fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        // An empty rule does nothing, as in Redis.
        if op.is_empty() {
            return Ok(());
        }
        let lower = op.to_ascii_lowercase();
        let password_rule = matches!(&lower[..], b"nopass" | b"resetpass")
            || matches!(op.first(), Some(b'>' | b'<' | b'#' | b'!'));
        if password_rule && self.token_login {
            return Err(RuleError::TokenUser);
        }
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
            b"sanitize-payload" => self.sanitize = Some(true),
            b"skip-sanitize-payload" => self.sanitize = Some(false),
            b"clearselectors" => self.selectors.clear(),
            b"reset" => {
                if !self.token_login {
                    self.apply(b"resetpass")?;
                }
                self.root.apply(b"resetkeys")?;
                self.root.apply(b"resetchannels")?;
                self.enabled = false;
                self.sanitize = Some(true);
                self.selectors.clear();
                self.root.apply(b"-@all")?;
            }
            _ => match op.first() {
                Some(b'>') => {
                    let h = sha256(&op[1..]);
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'#') => {
                    let h = unhex(&op[1..]).ok_or(RuleError::BadHash)?;
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'<') => self.remove_password(sha256(&op[1..]))?,
                Some(b'!') => self.remove_password(unhex(&op[1..]).ok_or(RuleError::BadHash)?)?,
                Some(b'(') if op.last() == Some(&b')') => {
                    let mut sel = Selector::new();
                    for part in op[1..op.len() - 1].split(|b| b.is_ascii_whitespace()) {
                        if !part.is_empty() {
                            sel.apply(part)?;
                        }
                    }
                    self.selectors.push(sel);
                }
                _ => self.root.apply(op)?,
            },
        }
        Ok(())
    }

    fn remove_password(&mut self, h: [u8; 32]) -> Result<(), RuleError> {
        let before = self.passwords.len();
        self.passwords.retain(|p| *p != h);
        if self.passwords.len() == before {
            return Err(RuleError::NoSuchPassword);
        }
        Ok(())
    }

    pub fn check_password(&self, pw: &[u8]) -> bool {
        self.enabled && !self.token_login && (self.nopass || self.passwords.contains(&sha256(pw)))
    }

    /// May run every command on every key and channel: checks are skipped.
    pub fn is_unrestricted(&self) -> bool {
        self.root.all_commands && self.root.all_keys && self.root.all_channels
    }

    /// Whether one of the user's selectors allows the command; otherwise
    /// the most significant refusal (Redis's `ACLCheckAllUserCommandPerm`).
    pub fn check(&self, r: &Registered, args: &[&[u8]]) -> Result<(), Denied> {
        let mut keys = lazy_keys(r, args);
        let mut worst: Option<Denied> = None;
        for sel in std::iter::once(&self.root).chain(&self.selectors) {
            match sel.check(r, args, &mut keys) {
                Ok(()) => return Ok(()),
                Err(d) => worst = Some(worst.map_or(d, |w| w.max(d))),
            }
        }
        Err(worst.unwrap_or(Denied::Command))
    }

    /// The user's flags, as GETUSER lists them.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        match self.sanitize {
            Some(true) => f.push("sanitize-payload"),
            Some(false) => f.push("skip-sanitize-payload"),
            None => {}
        }
        f
    }

    /// The ACL LIST line (also an aclfile's line), as bytes (patterns
    /// are bytes).
    pub fn describe(&self) -> Vec<u8> {
        let mut s = format!("user {}", self.name).into_bytes();
        for f in self.flags() {
            s.push(b' ');
            s.extend_from_slice(f.as_bytes());
        }
        for p in &self.passwords {
            s.extend_from_slice(b" #");
            s.extend_from_slice(crate::util::hex(p).as_bytes());
        }
        s.push(b' ');
        s.extend_from_slice(&self.root.describe());
        for sel in &self.selectors {
            s.extend_from_slice(b" (");
            s.extend_from_slice(&sel.describe());
            s.push(b')');
        }
        s
    }

    /// Whether one selector allowing this command reads every key
    /// (SORT's BY and GET need it: Redis's
    /// `ACLUserCheckCmdWithUnrestrictedKeyAccess`).
    pub fn reads_every_key_with(&self, r: &Registered, args: &[&[u8]]) -> bool {
        let mut keys = lazy_keys(r, args);
        std::iter::once(&self.root)
            .chain(&self.selectors)
            .any(|s| s.reads_every_key() && s.check(r, args, &mut keys).is_ok())
    }
}

/// The command's keys and their access, worked out once, by the first
/// selector that needs them (most users' checks never do).
fn lazy_keys<'a>(
    r: &'a Registered,
    args: &'a [&'a [u8]],
) -> impl FnMut() -> std::rc::Rc<Vec<(usize, Access)>> + 'a {
    let mut cache: Option<std::rc::Rc<Vec<(usize, Access)>>> = None;
    move || {
        cache
            .get_or_insert_with(|| std::rc::Rc::new(super::keys::keys_with_access(r, args)))
            .clone()
    }
}

/// Joins the arguments of a selector split over several (`(~a`, `+get)`)
/// into one, as Redis's `ACLMergeSelectorArguments` (a new `(` starts
/// the selector again); Err is the argument whose parenthesis is never
/// closed.
pub fn merge_selectors(args: &[&[u8]]) -> Result<Vec<Vec<u8>>, Vec<u8>> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<u8>)> = None;
    for (i, a) in args.iter().enumerate() {
        if a.first() == Some(&b'(') && a.last() != Some(&b')') {
            open = Some((i, a.to_vec()));
            continue;
        }
        if let Some((_, buf)) = open.as_mut() {
            buf.push(b' ');
            buf.extend_from_slice(a);
            if a.last() == Some(&b')') {
                out.push(std::mem::take(buf));
                open = None;
            }
            continue;
        }
        out.push(a.to_vec());
    }
    match open {
        Some((i, _)) => Err(args[i].to_vec()),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &[&str]) -> User {
        let mut u = User::new("u");
        let args: Vec<&[u8]> = rules.iter().map(|r| r.as_bytes()).collect();
        for op in merge_selectors(&args).unwrap() {
            u.apply(&op).unwrap();
        }
        u
    }

    fn check(u: &User, line: &str) -> Result<(), Denied> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        match crate::cmd::lookup(&args) {
            crate::cmd::Lookup::Found(r) => u.check(r, &args),
            _ => panic!("{line}"),
        }
    }

    #[test]
    fn passwords_and_flags() {
        let mut u = user(&["on", ">pw"]);
        assert!(u.check_password(b"pw") && !u.check_password(b"x"));
        assert_eq!(u.apply(b"<nope"), Err(RuleError::NoSuchPassword));
        assert_eq!(u.apply(b"#ABC"), Err(RuleError::BadHash));
        u.apply(b"off").unwrap();
        assert!(!u.check_password(b"pw"));
        assert_eq!(u.flags(), vec!["off"]);
        u.apply(b"reset").unwrap();
        assert_eq!(u.flags(), vec!["off", "sanitize-payload"]);
        let mut t = User::all_powerful("default");
        t.token_login = true;
        assert_eq!(t.apply(b">x"), Err(RuleError::TokenUser));
        assert!(!t.check_password(b""));
    }

    #[test]
    fn selectors_and_most_significant_refusal() {
        let u = user(&["+get", "~app:*", "(~sel*", "+set)", "&chan"]);
        assert_eq!(check(&u, "get app:1"), Ok(()));
        assert_eq!(check(&u, "set sel1 v"), Ok(()));
        // The root refuses the command, the selector the key: the key wins.
        assert_eq!(check(&u, "set app:1 v"), Err(Denied::Key(1)));
        assert_eq!(check(&u, "hset app:1 f v"), Err(Denied::Command));
        let p = user(&["+publish", "+psubscribe", "&chan*"]);
        assert_eq!(check(&p, "publish chan1 m"), Ok(()));
        assert_eq!(check(&p, "publish other m"), Err(Denied::Channel(1)));
        // A pattern must be one of the user's literally.
        assert_eq!(check(&p, "psubscribe chan*"), Ok(()));
        assert_eq!(check(&p, "psubscribe chan1*"), Err(Denied::Channel(1)));
        // AUTH is always allowed.
        assert_eq!(check(&user(&[]), "auth a b"), Ok(()));
    }

    #[test]
    fn read_and_write_patterns() {
        let u = user(&["+@all", "%R~r*", "%W~w*"]);
        assert_eq!(check(&u, "get r1"), Ok(()));
        assert_eq!(check(&u, "get w1"), Err(Denied::Key(1)));
        assert_eq!(check(&u, "set w1 v"), Ok(()));
        assert_eq!(check(&u, "set w1 v get"), Err(Denied::Key(1)));
        assert_eq!(check(&u, "copy r1 w1"), Ok(()));
        assert_eq!(check(&u, "lmove r1 w1 left left"), Err(Denied::Key(1)));
        let first_arg = user(&["+select|0"]);
        assert_eq!(check(&first_arg, "select 0"), Ok(()));
        assert_eq!(check(&first_arg, "select 1"), Err(Denied::Command));
    }

    #[test]
    fn describe_matches_redis_layout() {
        let u = user(&[
            "on", "~app:*", "%R~ro:*", "&chan*", "+@read", "-get", "(~sel*", "+set)",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&u.describe()),
            "user u on ~app:* %R~ro:* resetchannels &chan* -@all +@read -get (~sel* resetchannels -@all +set)"
        );
        assert_eq!(
            merge_selectors(&[b"(+get".as_slice(), b"x"]),
            Err(b"(+get".to_vec())
        );
    }
}
