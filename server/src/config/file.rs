//! Reading configuration text: the lines of a `redis.conf` (and of the
//! argv options, which `Config::load` turns into config lines appended
//! after the file), Redis's directives that are not parameters (`include`
//! with wildcards, `rename-command`, `user`, module and sentinel lines,
//! deprecated names), and the line-numbered fatal errors redis-server
//! prints for them.
//!
//! Apart from `mod.rs` because it is the only code that deals with files
//! and line numbers on the way in; CONFIG REWRITE, the way out, is in
//! `rewrite.rs`.

use std::path::Path;

use super::parse::{lossy, strerror, trim_bytes, LoadState};
use super::table::{lookup, DEPRECATED, PARAMS};
use super::{Config, ConfigError};
use crate::resp::parse::split_args;
use crate::util::glob_match;

/// Guards `include` loops (Redis itself would recurse until it crashes).
const MAX_INCLUDE_DEPTH: usize = 16;

impl Config {
    /// Applies config text (Redis's `loadServerConfigFromString`).
    pub(super) fn load_string(
        &mut self,
        content: &[u8],
        depth: usize,
        st: &mut LoadState,
    ) -> Result<(), ConfigError> {
        for (i, raw) in content.split(|&c| c == b'\n').enumerate() {
            let line = trim_bytes(raw, b" \t\r\n");
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let err = |reason: &str| ConfigError::Line {
                line: i + 1,
                text: lossy(line),
                reason: reason.to_string(),
            };
            let Some(argv) = split_args(line) else {
                return Err(err("Unbalanced quotes in configuration line"));
            };
            let Some(name) = argv.first() else { continue };
            let name = lossy(name).to_ascii_lowercase();
            let argv: Vec<String> = argv.iter().map(|a| lossy(a)).collect();
            if let Some((idx, _)) = lookup(&name) {
                let Some(p) = PARAMS.get(idx) else { continue };
                if !p.multi_arg() && argv.len() != 2 {
                    return Err(err("wrong number of arguments"));
                }
                // Redis 7.0 splits a single non-empty argument of a
                // multi-argument param, so `--save "3600 1 300 100"` works.
                let values: Vec<String> = match argv.get(1) {
                    Some(one) if p.multi_arg() && argv.len() == 2 && !one.is_empty() => {
                        match split_args(one.as_bytes()) {
                            Some(v) => v.iter().map(|a| lossy(a)).collect(),
                            None => return Err(err("Unbalanced quotes in configuration line")),
                        }
                    }
                    _ => argv[1..].to_vec(),
                };
                self.apply(idx, &values, st).map_err(|r| err(&r))?;
                continue;
            }
            if DEPRECATED.contains(&name.as_str()) && argv.len() == 2 {
                continue;
            }
            match name.as_str() {
                "include" if argv.len() == 2 => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(err("Too many nested include directives"));
                    }
                    self.include(&argv[1], depth + 1, st).map_err(|e| match e {
                        IncludeError::Config(e) => e,
                        IncludeError::Other(r) => err(&r),
                    })?;
                }
                // Kept for the command table to apply (it knows which
                // commands exist and reports "No such command").
                "rename-command" if argv.len() == 3 => {
                    self.renamed_commands
                        .push((argv[1].clone(), argv[2].clone()));
                }
                // ACL users, kept for the ACL code.
                "user" if argv.len() >= 2 => self.users.push(argv[1..].to_vec()),
                "loadmodule" if argv.len() >= 2 => return Err(err("Modules are not supported")),
                "sentinel" => {
                    if argv.len() != 1 {
                        return Err(err("sentinel directive while not in sentinel mode"));
                    }
                }
                // A module config (`module.name value`): Redis queues it and
                // aborts after loading when no module claims it.
                _ if name.contains('.') => {
                    if argv.len() < 2 {
                        return Err(err("Module config specified without value"));
                    }
                    st.module_config = true;
                }
                _ => return Err(err("Bad directive or wrong number of arguments")),
            }
        }
        Ok(())
    }

    /// `include path`: the file is loaded in place, with its own line
    /// numbers. A wildcard in the file name loads every match in sorted
    /// order and no match is not an error (Redis's glob(3) behaviour).
    fn include(
        &mut self,
        path: &str,
        depth: usize,
        st: &mut LoadState,
    ) -> Result<(), IncludeError> {
        let open = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                IncludeError::Config(ConfigError::Open {
                    path: p.to_string_lossy().into_owned(),
                    reason: strerror(&e),
                })
            })
        };
        if !path.contains(['*', '?', '[']) {
            let data = open(Path::new(path))?;
            return self
                .load_string(&data, depth, st)
                .map_err(IncludeError::Config);
        }
        let p = Path::new(path);
        let (dir, pat) = match (p.parent(), p.file_name()) {
            (Some(d), Some(f)) => (d, f.to_string_lossy().into_owned()),
            _ => return Ok(()),
        };
        let dir_s = dir.to_string_lossy();
        if dir_s.contains(['*', '?', '[']) {
            return Err(IncludeError::Other(
                "Wildcards in include paths are only supported in the file name".into(),
            ));
        }
        let dir = if dir_s.is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                (!n.starts_with('.') || pat.starts_with('.'))
                    && glob_match(pat.as_bytes(), n.as_bytes(), false)
            })
            .collect();
        names.sort();
        for n in names {
            let data = open(&dir.join(&n))?;
            self.load_string(&data, depth, st)
                .map_err(IncludeError::Config)?;
        }
        Ok(())
    }
}

enum IncludeError {
    Config(ConfigError),
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::*;

    #[test]
    fn file_parsing_quotes_include_and_errors() {
        let d = tmpdir("file");
        let inc = d.join("inc.conf");
        std::fs::write(&inc, "timeout 5\n# nested comment\nmaxmemory 2gb\n").unwrap();
        let conf = d.join("r.conf");
        std::fs::write(
            &conf,
            format!(
                "# comment\n\n  port 7100  \r\nrequirepass \"p a\\x41\\\"s\"\nlogfile 'it\\'s.log'\ninclude {}\nmaxmemory 1gb\nsave 10 1\nsave 20 2\nlist-max-ziplist-entries 5\nrename-command DEBUG \"\"\nuser alice on >pw\n",
                inc.display()
            ),
        )
        .unwrap();
        let c = Config::load(&args(&[conf.to_str().unwrap(), "--hz", "20"])).unwrap();
        assert_eq!(c.port(), 7100);
        assert_eq!(c.requirepass(), Some(b"p aA\"s".to_vec()));
        assert_eq!(c.logfile(), "it's.log");
        assert_eq!(c.timeout(), 5);
        // The later line wins over the included one.
        assert_eq!(c.maxmemory(), 1 << 30);
        assert_eq!(c.value("save"), Some("10 1 20 2"));
        assert_eq!(c.hz(), 20);
        assert_eq!(c.config_file(), Some(conf.clone()));
        assert_eq!(
            c.renamed_commands(),
            &[("DEBUG".to_string(), String::new())]
        );
        assert_eq!(c.users(), &[args(&["alice", "on", ">pw"])]);

        // Wildcard include: sorted matches; no match is fine.
        std::fs::write(d.join("a1.inc"), "port 7201\n").unwrap();
        std::fs::write(d.join("a2.inc"), "port 7202\n").unwrap();
        let g = d.join("g.conf");
        std::fs::write(
            &g,
            format!(
                "include {}/a*.inc\ninclude {}/none*.inc\n",
                d.display(),
                d.display()
            ),
        )
        .unwrap();
        assert_eq!(
            Config::load(&args(&[g.to_str().unwrap()])).unwrap().port(),
            7202
        );

        let bad = |text: &str| {
            let f = d.join("bad.conf");
            std::fs::write(&f, text).unwrap();
            Config::load(&args(&[f.to_str().unwrap()]))
                .unwrap_err()
                .to_string()
        };
        // Redis counts lines from 1 and shows the trimmed line.
        assert_eq!(
            bad("port 0\n\n# c\nfoo \"bar baz\"\n"),
            "*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***\nReading the configuration file, at line 4\n>>> 'foo \"bar baz\"'\nBad directive or wrong number of arguments"
        );
        assert!(bad("port \"0\n")
            .ends_with("at line 1\n>>> 'port \"0'\nUnbalanced quotes in configuration line"));
        assert!(bad("port 0 1\n").ends_with(">>> 'port 0 1'\nwrong number of arguments"));
        assert!(bad("appendonly maybe\n").ends_with("argument must be 'yes' or 'no'"));
        assert!(bad("include /nonexistent/x.conf\n")
            .ends_with("can't open config file '/nonexistent/x.conf': No such file or directory"));
        // An include loop is an error, not a stack overflow.
        let lp = d.join("loop.conf");
        std::fs::write(&lp, format!("include {}\n", lp.display())).unwrap();
        assert!(Config::load(&args(&[lp.to_str().unwrap()]))
            .unwrap_err()
            .to_string()
            .contains("nested include"));
        // An error inside an included file reports that file's line.
        std::fs::write(d.join("badinc.conf"), "\nport x\n").unwrap();
        assert!(bad(&format!("include {}/badinc.conf\n", d.display()))
            .contains("at line 2\n>>> 'port x'"));
        // The argv options come after the file: line numbers continue.
        let f = d.join("two.conf");
        std::fs::write(&f, "port 1\nport 2\n").unwrap();
        let e = Config::load(&args(&[f.to_str().unwrap(), "--port", "x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at line 4\n>>> 'port \"x\"'"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
