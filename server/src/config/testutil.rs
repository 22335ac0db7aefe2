//! Helpers shared by the config module's unit tests (argv building,
//! one-pattern CONFIG GET, one-pair CONFIG SET, scratch directories).

use std::path::PathBuf;

use super::Config;

pub(super) fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub(super) fn get1(c: &Config, pat: &str) -> Vec<(String, String)> {
    c.get(&[pat.as_bytes()])
}

pub(super) fn set1(c: &mut Config, name: &str, value: &str) -> Result<(), String> {
    c.set(&[(name.as_bytes(), value.as_bytes())])
}

pub(super) fn tmpdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "anykv-cfgtest-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
