//! ACL LOG: the latest refusals (commands, keys, channels the user may not
//! use, failed logins), newest first. A refusal like one logged in the last
//! minute (same reason, context, object and user) counts into it instead
//! of adding an entry, as Redis groups them.

use std::collections::VecDeque;

/// How far back a like refusal is grouped into an entry.
const GROUPING_MS: i64 = 60_000;
/// How many of the newest entries are searched for a like one.
const GROUPING_SCAN: usize = 10;

#[derive(Debug, Clone)]
pub struct Entry {
    pub count: u64,
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    /// `toplevel`, `multi` or `lua`.
    pub context: &'static str,
    /// The command's full name, the key, the channel, or (`auth`) the
    /// command that tried to log in.
    pub object: String,
    pub username: String,
    pub ctime_ms: i64,
    /// The client, as CLIENT LIST shows it.
    pub client_info: String,
}

#[derive(Debug, Clone, Default)]
pub struct Log {
    pub entries: VecDeque<Entry>,
}

impl Log {
    pub fn add(&mut self, e: Entry, max_len: usize) {
        let like = self.entries.iter().take(GROUPING_SCAN).position(|c| {
            c.reason == e.reason
                && c.context == e.context
                && c.object == e.object
                && c.username == e.username
                && (e.ctime_ms - c.ctime_ms).abs() <= GROUPING_MS
        });
        match like.and_then(|i| self.entries.remove(i)) {
            Some(mut c) => {
                c.count += 1;
                c.ctime_ms = e.ctime_ms;
                c.client_info = e.client_info;
                self.entries.push_front(c);
            }
            None => {
                self.entries.push_front(e);
                self.entries.truncate(max_len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(object: &str, at: i64) -> Entry {
        Entry {
            count: 1,
            reason: "command",
            context: "toplevel",
            object: object.into(),
            username: "u".into(),
            ctime_ms: at,
            client_info: format!("at={at}"),
        }
    }

    #[test]
    fn like_refusals_are_grouped_within_a_minute() {
        let mut l = Log::default();
        l.add(entry("get", 0), 128);
        l.add(entry("set", 10), 128);
        l.add(entry("get", 20), 128);
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].object, "get");
        assert_eq!(l.entries[0].count, 2);
        assert_eq!(l.entries[0].client_info, "at=20");
        l.add(entry("get", 100_000), 128);
        assert_eq!(l.entries.len(), 3);
        l.add(entry("x", 100_001), 2);
        assert_eq!(l.entries.len(), 2);
    }
}
