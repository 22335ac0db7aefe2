//! A selector: one set of command, key and channel permissions. A user has
//! a root selector and any number of further ones (`(~cache:* +get)`); a
//! command is allowed when one of them allows it (Redis 7.0).
//!
//! Commands are a bitmap over the command table (subcommands have their
//! own bits), as in Redis: `+@read` sets the bits of the category's
//! commands at the time it is applied, so later rules refine it, and
//! ACL LIST rebuilds the shortest rules it can from the bits
//! ([`super::describe`]).

use crate::cmd::registry;
use crate::cmd::table::Registered;

use super::keys::Access;

/// Why a rule was refused; the texts are Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("Unknown command or category name in ACL")]
    Unknown,
    #[error("Syntax error")]
    Syntax,
    #[error("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns")]
    AfterAllKeys,
    #[error("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels")]
    AfterAllChannels,
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    #[error("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")]
    BadHash,
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSubcommand,
    /// anykv: a database's default user logs in with the database's tokens.
    #[error("the database's default user logs in with the database's tokens: its passwords are not set with ACL")]
    TokenUser,
}

/// What a selector (or a user) was refused, most significant last: when no
/// selector allows a command, the user's error is the most significant of
/// theirs (Redis's `ACL_DENIED_*` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denied {
    Command,
    /// The argument at this position is a key the user may not touch so.
    Key(usize),
    /// The argument at this position is a channel the user may not use.
    Channel(usize),
}

impl Denied {
    fn rank(self) -> (u8, usize) {
        match self {
            Denied::Command => (1, 0),
            Denied::Key(i) => (2, i),
            Denied::Channel(i) => (4, i),
        }
    }
    /// The more significant of two refusals (the later argument on a tie).
    pub fn max(self, other: Denied) -> Denied {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// A key pattern and what it allows (`~p` both, `%R~p` reading, `%W~p`
/// writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    pub pattern: Vec<u8>,
    pub read: bool,
    pub write: bool,
}

impl KeyPattern {
    /// The rule that adds it (`~p`, `%R~p`, `%W~p`), as bytes: a pattern
    /// is any bytes but whitespace.
    pub fn rule(&self) -> Vec<u8> {
        let mut r: Vec<u8> = match (self.read, self.write) {
            (true, true) => b"~".to_vec(),
            (true, false) => b"%R~".to_vec(),
            (false, true) => b"%W~".to_vec(),
            (false, false) => b"%~".to_vec(),
        };
        r.extend_from_slice(&self.pattern);
        r
    }
}

/// Redis's `ACLStringHasSpaces`: whitespace or NUL, which no user name or
/// pattern may hold (they are separated by spaces in ACL LIST and files).
pub fn has_spaces(b: &[u8]) -> bool {
    b.iter()
        .any(|&c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0))
}

/// Joins rules with single spaces.
pub fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&b' ')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// One bit per command table entry (`Registered::id`).
    bits: Vec<u64>,
    /// Every command, those added later included (`+@all`, cleared by any
    /// `-` rule).
    pub all_commands: bool,
    /// The rules started from `+@all` (ACL LIST's first rule); only
    /// `-@all` clears it.
    pub from_all: bool,
    /// Commands allowed only with one of these first arguments
    /// (`+select|0`), by command id.
    pub first_args: std::collections::BTreeMap<usize, Vec<String>>,
    pub all_keys: bool,
    pub keys: Vec<KeyPattern>,
    pub all_channels: bool,
    pub channels: Vec<Vec<u8>>,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::new()
    }
}

impl Selector {
    /// No commands, keys or channels.
    pub fn new() -> Selector {
        Selector {
            bits: vec![0; registry().all.len().div_ceil(64)],
            all_commands: false,
            from_all: false,
            first_args: Default::default(),
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        }
    }

    pub fn bit(&self, id: usize) -> bool {
        self.bits
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn set_bit(&mut self, id: usize, on: bool) {
        if let Some(w) = self.bits.get_mut(id / 64) {
            if on {
                *w |= 1 << (id % 64);
            } else {
                *w &= !(1 << (id % 64));
            }
        }
    }

    /// Allows or forbids a command and, for a container, all of its
    /// subcommands (Redis's `ACLChangeSelectorPerm`).
    pub fn change(&mut self, id: usize, allow: bool) {
        self.set_bit(id, allow);
        self.first_args.remove(&id);
        let subs: Vec<usize> = registry().subcommands(id).map(|r| r.id).collect();
        for s in subs {
            self.set_bit(s, allow);
        }
    }

    /// Applies a category to every command in it, subcommands included.
    pub fn change_category(&mut self, cat: usize, allow: bool) {
        for &id in super::describe::members(cat) {
            self.change(id, allow);
        }
    }

    fn set_all(&mut self, on: bool) {
        let fill = if on { u64::MAX } else { 0 };
        self.bits.iter_mut().for_each(|w| *w = fill);
        self.first_args.clear();
        self.all_commands = on;
        self.from_all = on;
    }

    /// Applies one key, channel or command rule.
    pub fn apply(&mut self, op: &[u8]) -> Result<(), RuleError> {
        let lower = op.to_ascii_lowercase();
        match &lower[..] {
            b"allkeys" | b"~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            b"resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            b"allchannels" | b"&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            b"resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            b"allcommands" | b"+@all" => self.set_all(true),
            b"nocommands" | b"-@all" => self.set_all(false),
            _ => match op.first() {
                Some(b'~') | Some(b'%') => self.add_key_pattern(op)?,
                Some(b'&') => {
                    if self.all_channels {
                        return Err(RuleError::AfterAllChannels);
                    }
                    let p = &op[1..];
                    if has_spaces(p) {
                        return Err(RuleError::Syntax);
                    }
                    if !self.channels.iter().any(|c| c == p) {
                        self.channels.push(p.to_vec());
                    }
                    self.all_channels = false;
                }
                Some(b'+') | Some(b'-') => {
                    self.command_rule(op[0] == b'+', &lower[1..], &op[1..])?
                }
                _ => return Err(RuleError::Syntax),
            },
        }
        Ok(())
    }

    fn add_key_pattern(&mut self, op: &[u8]) -> Result<(), RuleError> {
        if self.all_keys {
            return Err(RuleError::AfterAllKeys);
        }
        let (mut read, mut write) = (true, true);
        let mut at = 1;
        if op[0] == b'%' {
            (read, write) = (false, false);
            while at < op.len() {
                match op[at].to_ascii_uppercase() {
                    b'R' if !read => read = true,
                    b'W' if !write => write = true,
                    b'~' => {
                        at += 1;
                        break;
                    }
                    _ => return Err(RuleError::Syntax),
                }
                at += 1;
            }
            if !read && !write {
                return Err(RuleError::Syntax);
            }
        }
        let pattern = &op[at..];
        if has_spaces(pattern) {
            return Err(RuleError::Syntax);
        }
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern: pattern.to_vec(),
                read,
                write,
            }),
        }
        Ok(())
    }

    /// `+cmd`, `-cmd`, `+cmd|sub`, `+cmd|firstarg`, `+@cat`, `-@cat`
    /// (`name` lowercased, without its sign; `as_given` its case kept,
    /// for a first argument).
    fn command_rule(&mut self, allow: bool, name: &[u8], as_given: &[u8]) -> Result<(), RuleError> {
        if let Some(cat) = name.strip_prefix(b"@") {
            let cat = std::str::from_utf8(cat).map_err(|_| RuleError::Unknown)?;
            let idx = super::describe::category_index(cat).ok_or(RuleError::Unknown)?;
            self.change_category(idx, allow);
            if !allow {
                self.all_commands = false;
            }
            return Ok(());
        }
        let reg = registry();
        if !allow {
            let r = reg.by_fullname(name).ok_or(RuleError::Unknown)?;
            self.change(r.id, false);
            self.all_commands = false;
            return Ok(());
        }
        let Some(bar) = name.iter().rposition(|&b| b == b'|') else {
            let r = reg.by_fullname(name).ok_or(RuleError::Unknown)?;
            self.change(r.id, true);
            return Ok(());
        };
        let (head, arg) = (&name[..bar], &name[bar + 1..]);
        let r = reg.by_fullname(head).ok_or(RuleError::Unknown)?;
        if r.parent.is_some() {
            return Err(RuleError::FirstArgOfSubcommand);
        }
        if arg.is_empty() {
            return Err(RuleError::Syntax);
        }
        if reg.subcommands(r.id).next().is_some() {
            let sub = reg.by_fullname(name).ok_or(RuleError::Unknown)?;
            self.change(sub.id, true);
        } else {
            // Allowing one first argument of an otherwise refused command
            // (`+select|0`); Redis deprecates it but 7.0 has it.
            let arg = String::from_utf8_lossy(&as_given[bar + 1..]).into_owned();
            let list = self.first_args.entry(r.id).or_default();
            if !list.iter().any(|a| a.eq_ignore_ascii_case(&arg)) {
                list.push(arg);
            }
        }
        Ok(())
    }

    /// Whether the selector allows the command with these arguments;
    /// `keys` are the command's keys and what it does to each.
    pub fn check(
        &self,
        r: &Registered,
        args: &[&[u8]],
        keys: &mut dyn FnMut() -> std::rc::Rc<Vec<(usize, Access)>>,
    ) -> Result<(), Denied> {
        // AUTH and HELLO are always allowed: a user must be able to switch.
        if !self.all_commands && !r.no_auth && !self.bit(r.id) {
            let idx = if r.parent.is_some() { 2 } else { 1 };
            let allowed = self.first_args.get(&r.id).is_some_and(|list| {
                args.get(idx)
                    .is_some_and(|a| list.iter().any(|f| a.eq_ignore_ascii_case(f.as_bytes())))
            });
            if !allowed {
                return Err(Denied::Command);
            }
        }
        if !self.all_keys && (r.spec.first_key > 0 || r.spec.has_flag("movablekeys")) {
            for &(pos, access) in keys().iter() {
                if !self.may_access_key(args[pos], access) {
                    return Err(Denied::Key(pos));
                }
            }
        }
        if !self.all_channels {
            for (pos, pattern) in channels(r, args) {
                if !self.may_use_channel(args[pos], pattern) {
                    return Err(Denied::Channel(pos));
                }
            }
        }
        Ok(())
    }

    /// Redis's `ACLSelectorCheckKey`: a pattern that grants all the
    /// access the command needs and matches the key.
    pub fn may_access_key(&self, key: &[u8], access: Access) -> bool {
        self.all_keys
            || self.keys.iter().any(|p| {
                (p.read || !access.read)
                    && (p.write || !access.write)
                    && crate::util::glob_match(&p.pattern, key, false)
            })
    }

    /// A channel matches a permitted pattern; a pattern (PSUBSCRIBE) must
    /// be one of them literally.
    pub fn may_use_channel(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.all_channels
            || self.channels.iter().any(|p| {
                if is_pattern {
                    p == channel
                } else {
                    crate::util::glob_match(p, channel, false)
                }
            })
    }

    /// The key, channel and command rules that rebuild this selector
    /// (Redis's `ACLDescribeSelector`).
    pub fn describe(&self) -> Vec<u8> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if self.all_keys {
            parts.push(b"~*".to_vec());
        } else {
            parts.extend(self.keys.iter().map(KeyPattern::rule));
        }
        if !self.all_channels {
            parts.push(b"resetchannels".to_vec());
        }
        let channels = self.channels_rules();
        if !channels.is_empty() {
            parts.push(channels);
        }
        parts.push(super::describe::command_rules(self).into_bytes());
        join(&parts)
    }

    /// GETUSER's `keys`: the patterns as rules, or `~*`.
    pub fn keys_rules(&self) -> Vec<u8> {
        if self.all_keys {
            b"~*".to_vec()
        } else {
            join(&self.keys.iter().map(KeyPattern::rule).collect::<Vec<_>>())
        }
    }

    /// GETUSER's `channels`.
    pub fn channels_rules(&self) -> Vec<u8> {
        if self.all_channels {
            b"&*".to_vec()
        } else {
            let v: Vec<Vec<u8>> = self
                .channels
                .iter()
                .map(|c| [&b"&"[..], c].concat())
                .collect();
            join(&v)
        }
    }

    /// Whether the selector reads every key (a `~*`-like pattern that
    /// allows reading): Redis's `ACLSelectorHasUnrestrictedKeyAccess`.
    pub fn reads_every_key(&self) -> bool {
        self.all_keys || self.keys.iter().any(|p| p.read && p.pattern == b"*")
    }
}

/// The channels a command publishes to or subscribes to (true: a pattern,
/// PSUBSCRIBE's); unsubscribing is never checked.
pub fn channels(r: &Registered, args: &[&[u8]]) -> Vec<(usize, bool)> {
    match r.fullname.as_str() {
        "publish" | "spublish" => vec![(1, false)]
            .into_iter()
            .filter(|(i, _)| *i < args.len())
            .collect(),
        "subscribe" | "ssubscribe" => (1..args.len()).map(|i| (i, false)).collect(),
        "psubscribe" => (1..args.len()).map(|i| (i, true)).collect(),
        _ => Vec::new(),
    }
}
