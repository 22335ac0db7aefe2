//! The aclfile format: one `user <name> <rules...>` line per user, as ACL
//! LIST prints them. Loading is all or nothing: any error leaves the users
//! as they were, and the reply lists every line at fault (Redis's words).

use super::selector::RuleError;
use super::user::{merge_selectors, User};
use super::Users;

/// Parses a whole file over `base` (the users a database has before any
/// file: its default user), with Redis 7.0's messages for what is wrong.
pub fn parse(text: &[u8], filename: &str, mut base: Users) -> Result<Users, String> {
    let mut errors = String::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let n = n + 1;
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let Some(args) = crate::resp::parse::split_args(line) else {
            errors.push_str(&format!("{filename}:{n}: unbalanced quotes in acl line. "));
            continue;
        };
        if args.first().map(|a| a.as_slice()) != Some(b"user") || args.len() < 2 {
            errors.push_str(&format!(
                "{filename}:{n} should start with user keyword followed by the username. "
            ));
            continue;
        }
        let name = match std::str::from_utf8(&args[1]) {
            Ok(name) if !super::selector::has_spaces(name.as_bytes()) => name.to_string(),
            // (What redis-server 7.0.15 answers for such a name.)
            _ => {
                errors.push_str(&format!("{filename}:{n}: Syntax error. "));
                continue;
            }
        };
        if !seen.insert(name.clone()) {
            errors.push_str(&format!(
                "WARNING: Duplicate user '{name}' found on line {n}. "
            ));
            continue;
        }
        let rules: Vec<&[u8]> = args[2..].iter().map(Vec::as_slice).collect();
        let Ok(merged) = merge_selectors(&rules) else {
            errors.push_str(&format!(
                "{filename}:{n}: Unmatched parenthesis in selector definition."
            ));
            continue;
        };
        // A user is defined from nothing; a database's default user keeps
        // logging in with its tokens.
        let mut u = User::new(&name);
        u.token_login = base.users.get(&name).is_some_and(|d| d.token_login);
        // Every unknown command is reported; of other errors, the first
        // (it may explain the rest), as Redis does.
        let mut other_error = false;
        for op in &merged {
            let outcome = if op.is_empty() {
                Err(RuleError::Syntax)
            } else {
                u.apply(op)
            };
            match outcome {
                Ok(()) => {}
                Err(RuleError::Unknown) => errors.push_str(&format!(
                    "{filename}:{n}: Error in applying operation '{}': {}. ",
                    String::from_utf8_lossy(op),
                    RuleError::Unknown
                )),
                Err(e) if !other_error => {
                    errors.push_str(&format!("{filename}:{n}: {e}. "));
                    other_error = true;
                }
                Err(_) => {}
            }
        }
        base.users.insert(name, u);
    }
    if errors.is_empty() {
        Ok(base)
    } else {
        errors.push_str(
            "WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
        );
        Err(errors)
    }
}

/// The file's text: every user's ACL LIST line, a word quoted (as
/// `redis-cli` and `sdssplitargs` read quotes) when it holds a quote, a
/// backslash or a byte that is not printable ASCII, so any pattern reads
/// back as it was.
pub fn serialize(users: &Users) -> Vec<u8> {
    let mut s = Vec::new();
    for u in users.users.values() {
        let line = u.describe();
        for (i, word) in line.split(|&b| b == b' ').enumerate() {
            if i > 0 {
                s.push(b' ');
            }
            let plain = word
                .iter()
                .all(|&c| c.is_ascii_graphic() && !matches!(c, b'"' | b'\'' | b'\\'));
            if plain {
                s.extend_from_slice(word);
                continue;
            }
            s.push(b'"');
            for &c in word {
                match c {
                    b'"' => s.extend_from_slice(b"\\\""),
                    b'\\' => s.extend_from_slice(b"\\\\"),
                    c if c.is_ascii_graphic() || c == b' ' => s.push(c),
                    c => s.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                }
            }
            s.push(b'"');
        }
        s.push(b'\n');
    }
    s
}

/// Writes the file through a temporary one, synced, then renamed: a crash
/// leaves the old file or the new one, never half of one.
pub fn save(path: &std::path::Path, users: &Users) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serialize(users))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let text = b"user alice on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~app:* resetchannels -@all +get (~x resetchannels -@all +set)\n\nuser default on nopass ~* &* +@all\n";
        let users = parse(text, "users.acl", Users::operator(None)).unwrap();
        assert!(users.authenticate(b"alice", b"pw").is_some());
        let again = parse(&serialize(&users), "f", Users::operator(None)).unwrap();
        assert_eq!(serialize(&again), serialize(&users));
        let bad = parse(
            b"user a on +nosuch -x2 <nope >p <nope2\nfoo\nuser a\n",
            "f",
            Users::operator(None),
        )
        .unwrap_err();
        let want = "f:1: Error in applying operation '+nosuch': Unknown command or category name in ACL. \
                    f:1: Error in applying operation '-x2': Unknown command or category name in ACL. \
                    f:1: The password you are trying to remove from the user does not exist. \
                    f:2 should start with user keyword followed by the username. \
                    WARNING: Duplicate user 'a' found on line 3. ";
        assert!(bad.starts_with(want), "{bad}");
        assert!(bad.ends_with("no change to the previously active ACL rules was performed"));
    }

    #[test]
    fn a_database_default_user_keeps_its_tokens_and_its_narrowing() {
        let users = parse(
            b"user default on ~* &* -@all +get\n",
            "f",
            Users::database(),
        )
        .unwrap();
        let d = &users.users["default"];
        assert!(d.token_login && !d.is_unrestricted());
        // A narrowed default user saves and loads as it was.
        let mut narrowed = Users::database();
        for rule in [&b"resetkeys"[..], b"~app:*"] {
            narrowed
                .users
                .get_mut("default")
                .unwrap()
                .apply(rule)
                .unwrap();
        }
        let back = parse(&serialize(&narrowed), "f", Users::database()).unwrap();
        assert_eq!(
            back.users["default"].describe(),
            narrowed.users["default"].describe()
        );
        assert!(back.users["default"].token_login);
    }

    #[test]
    fn odd_bytes_in_patterns_survive_the_file() {
        let mut users = Users::operator(None);
        let mut u = User::new("odd");
        u.apply(b"~a\"b\\c").unwrap();
        u.apply(b"&\xffq'").unwrap();
        users.users.insert("odd".into(), u);
        let back = parse(&serialize(&users), "f", Users::operator(None)).unwrap();
        assert_eq!(back.users["odd"].describe(), users.users["odd"].describe());
    }
}
