//! The aclfile format: one `user <name> <rules...>` line per user, as ACL
//! LIST prints them. Loading is all or nothing: any error leaves the users
//! as they were, and the reply lists every line at fault (Redis's words).

use super::user::{merge_selectors, User};
use super::Users;

/// Parses a whole file over `base` (the users a database has before any
/// file: its default user).
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
            errors.push_str(&format!("{filename}:{n} should start with user keyword. "));
            continue;
        }
        let name = String::from_utf8_lossy(&args[1]).into_owned();
        if name.contains(' ') || name.contains('\0') || std::str::from_utf8(&args[1]).is_err() {
            errors.push_str(&format!(
                "{filename}:{n}: username '{name}' contains invalid characters. "
            ));
            continue;
        }
        if !seen.insert(name.clone()) {
            errors.push_str(&format!("{filename}:{n}: Duplicate user '{name}' found. "));
            continue;
        }
        let rules: Vec<&[u8]> = args[2..].iter().map(Vec::as_slice).collect();
        let merged = match merge_selectors(&rules) {
            Ok(m) => m,
            Err(arg) => {
                errors.push_str(&format!(
                    "{filename}:{n}: Unmatched parenthesis in acl selector starting at '{}'. ",
                    String::from_utf8_lossy(&arg)
                ));
                continue;
            }
        };
        // A database's default user keeps logging in with its tokens.
        let mut u = match base.users.get(&name) {
            Some(d) if d.token_login => d.clone(),
            _ => User::new(&name),
        };
        if let Err(e) = merged.iter().try_for_each(|op| u.apply(op)) {
            errors.push_str(&format!("{filename}:{n}: {e}. "));
            continue;
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

/// The file's text: every user's ACL LIST line.
pub fn serialize(users: &Users) -> String {
    let mut s = String::new();
    for u in users.users.values() {
        s.push_str(&u.describe());
        s.push('\n');
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
    f.write_all(serialize(users).as_bytes())?;
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
        let again = parse(serialize(&users).as_bytes(), "f", Users::operator(None)).unwrap();
        assert_eq!(serialize(&again), serialize(&users));
        let bad = parse(
            b"user a on +nosuch\nfoo\nuser a\n",
            "f",
            Users::operator(None),
        )
        .unwrap_err();
        assert!(bad.starts_with("f:1: Unknown command or category name in ACL. f:2 should start with user keyword. "), "{bad}");
        assert!(bad.ends_with("no change to the previously active ACL rules was performed"));
    }

    #[test]
    fn a_database_default_user_keeps_its_tokens() {
        let users = parse(
            b"user default on ~* &* -@all +get\n",
            "f",
            Users::database(),
        )
        .unwrap();
        let d = &users.users["default"];
        assert!(d.token_login && !d.is_unrestricted());
    }
}
