//! Region-to-region round-trip times, as measured between real cities.
//!
//! The emulated world needs *some* latency between regions to make the
//! behaviour of gossip, state sync and routing look like the real thing;
//! the table comes from `bench/data/region-rtt.csv` (`from,to,rtt_ms`
//! rows, `#` comments). RTTs are symmetric: one row covers both
//! directions.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::LinkError;

/// RTT between two machines of one region (one datacenter) when the table
/// has no explicit `r,r,...` row; the CSV's header comment states the same.
pub const SAME_REGION_RTT: Duration = Duration::from_micros(500);

/// The header every RTT file starts with (after comments).
const HEADER: [&str; 3] = ["from", "to", "rtt_ms"];

/// A symmetric table of round-trip times between regions.
///
/// Regions are interned to dense indices so the shaper can look pairs up in
/// a flat matrix per packet instead of hashing strings.
#[derive(Clone, Debug, PartialEq)]
pub struct RttTable {
    /// Region names in first-seen order; index = region id.
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// `names.len()`² entries, row-major; `None` = pair not in the file.
    matrix: Vec<Option<Duration>>,
}

impl RttTable {
    /// Parses the CSV text: `#` comment lines and blank lines are skipped,
    /// the first other line must be the `from,to,rtt_ms` header, every
    /// following line a `region,region,milliseconds` row.
    ///
    /// A pair given twice with different values is an error (the file is
    /// ambiguous); a same-region row overrides [`SAME_REGION_RTT`].
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut rows: Vec<(usize, usize, Duration, usize)> = Vec::new();
        let mut seen_header = false;

        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if !seen_header {
                if fields != HEADER {
                    return Err(parse_err(
                        line_no,
                        format!("expected header `from,to,rtt_ms`, found `{line}`"),
                    ));
                }
                seen_header = true;
                continue;
            }
            let [from, to, ms] = fields[..] else {
                return Err(parse_err(
                    line_no,
                    format!("expected 3 fields `from,to,rtt_ms`, found {}", fields.len()),
                ));
            };
            if from.is_empty() || to.is_empty() {
                return Err(parse_err(line_no, "empty region name".into()));
            }
            let rtt_ms: f64 = ms
                .parse()
                .map_err(|_| parse_err(line_no, format!("rtt_ms `{ms}` is not a number")))?;
            // The upper bound keeps `Duration::from_secs_f64` from panicking
            // and rejects values no real network has (a day).
            if !rtt_ms.is_finite() || !(0.0..=86_400_000.0).contains(&rtt_ms) {
                return Err(parse_err(
                    line_no,
                    format!("rtt_ms `{ms}` must be between 0 and 86400000"),
                ));
            }
            let a = intern(&mut names, &mut index, from);
            let b = intern(&mut names, &mut index, to);
            rows.push((a, b, Duration::from_secs_f64(rtt_ms / 1000.0), line_no));
        }
        if !seen_header {
            return Err(parse_err(1, "missing header `from,to,rtt_ms`".into()));
        }

        let n = names.len();
        let mut matrix: Vec<Option<Duration>> = vec![None; n * n];
        for (a, b, rtt, line_no) in rows {
            if let Some(prev) = matrix[a * n + b] {
                if prev != rtt {
                    return Err(parse_err(
                        line_no,
                        format!(
                            "{},{} given again with {:.3} ms (was {:.3} ms)",
                            names[a],
                            names[b],
                            rtt.as_secs_f64() * 1000.0,
                            prev.as_secs_f64() * 1000.0
                        ),
                    ));
                }
            }
            matrix[a * n + b] = Some(rtt);
            matrix[b * n + a] = Some(rtt);
        }
        for r in 0..n {
            matrix[r * n + r].get_or_insert(SAME_REGION_RTT);
        }
        Ok(RttTable {
            names,
            index,
            matrix,
        })
    }

    /// Reads and parses an RTT file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LinkError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LinkError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Round-trip time between two regions (either order), or `None` when
    /// either region or the pair is missing from the table. A known region
    /// paired with itself gets [`SAME_REGION_RTT`] unless the file says
    /// otherwise.
    pub fn rtt(&self, a: &str, b: &str) -> Option<Duration> {
        let a = *self.index.get(a)?;
        let b = *self.index.get(b)?;
        self.rtt_by_id(a, b)
    }

    /// The regions of the table, in the order the file first names them.
    pub fn regions(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(String::as_str)
    }

    /// Number of regions (dense ids run `0..region_count()`).
    pub(crate) fn region_count(&self) -> usize {
        self.names.len()
    }

    /// Dense id of a region (its position in [`regions`](Self::regions)).
    pub(crate) fn id(&self, region: &str) -> Option<usize> {
        self.index.get(region).copied()
    }

    /// RTT by dense ids; ids past the table (regions the shaper learnt later)
    /// have no RTT.
    pub(crate) fn rtt_by_id(&self, a: usize, b: usize) -> Option<Duration> {
        let n = self.names.len();
        if a >= n || b >= n {
            return None;
        }
        self.matrix[a * n + b]
    }
}

fn intern(names: &mut Vec<String>, index: &mut HashMap<String, usize>, name: &str) -> usize {
    if let Some(&id) = index.get(name) {
        return id;
    }
    names.push(name.to_owned());
    index.insert(name.to_owned(), names.len() - 1);
    names.len() - 1
}

fn parse_err(line: usize, msg: String) -> LinkError {
    LinkError::Parse { line, msg }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
# Same-region RTT is taken as 0.5 ms.

from,to,rtt_ms
iad,dfw,35.1
iad,cdg,97.7
dfw , cdg , 131.4
";

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn parses_symmetric_pairs() {
        let t = RttTable::parse(SAMPLE).unwrap();
        assert!((ms(t.rtt("iad", "dfw").unwrap()) - 35.1).abs() < 1e-9);
        assert_eq!(t.rtt("iad", "dfw"), t.rtt("dfw", "iad"));
        assert!((ms(t.rtt("cdg", "dfw").unwrap()) - 131.4).abs() < 1e-9);
        assert_eq!(t.regions().collect::<Vec<_>>(), ["iad", "dfw", "cdg"]);
        assert_eq!(t.rtt("iad", "syd"), None);
        assert_eq!(t.rtt("syd", "syd"), None, "unknown regions have no RTT");
    }

    #[test]
    fn same_region_defaults_and_overrides() {
        let t = RttTable::parse(SAMPLE).unwrap();
        assert_eq!(t.rtt("iad", "iad"), Some(SAME_REGION_RTT));
        let t = RttTable::parse("from,to,rtt_ms\niad,iad,2\niad,dfw,35\n").unwrap();
        assert_eq!(t.rtt("iad", "iad"), Some(Duration::from_millis(2)));
        assert_eq!(t.rtt("dfw", "dfw"), Some(SAME_REGION_RTT));
    }

    #[test]
    fn pair_missing_from_file_is_none() {
        let t = RttTable::parse("from,to,rtt_ms\niad,dfw,35\ncdg,syd,300\n").unwrap();
        assert_eq!(t.rtt("iad", "cdg"), None);
    }

    #[test]
    fn bad_rows_report_their_line() {
        let cases = [
            ("# c\nfrom,to,rtt_ms\niad,dfw,abc\n", 3, "not a number"),
            ("from,to,rtt_ms\niad,dfw,1\n\niad,dfw\n", 4, "3 fields"),
            ("from,to,rtt_ms\niad,dfw,-1\n", 2, "between"),
            ("from,to,rtt_ms\niad,dfw,NaN\n", 2, "between"),
            ("from,to,rtt_ms\n,dfw,1\n", 2, "empty region"),
            ("from,to,rtt_ms\niad,dfw,1\ndfw,iad,2\n", 3, "given again"),
            ("# only\niad,dfw,1\n", 2, "expected header"),
            ("# nothing\n", 1, "missing header"),
        ];
        for (text, line, what) in cases {
            match RttTable::parse(text) {
                Err(LinkError::Parse { line: l, msg }) => {
                    assert_eq!(l, line, "{text:?}: {msg}");
                    assert!(msg.contains(what), "{text:?}: {msg}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
        let err = RttTable::parse("from,to,rtt_ms\niad,dfw,x\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }

    #[test]
    fn repeated_identical_pair_is_accepted() {
        let t = RttTable::parse("from,to,rtt_ms\niad,dfw,35\ndfw,iad,35\n").unwrap();
        assert_eq!(t.rtt("iad", "dfw"), Some(Duration::from_millis(35)));
    }

    #[test]
    fn loads_the_shipped_region_file() {
        // bench/data/region-rtt.csv, the table the demo uses.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/data/region-rtt.csv");
        let t = RttTable::load(&path).unwrap();
        let regions: Vec<&str> = t.regions().collect();
        for r in ["iad", "dfw", "sjc", "cdg", "syd"] {
            assert!(regions.contains(&r), "{r} missing from {regions:?}");
        }
        assert!((ms(t.rtt("cdg", "iad").unwrap()) - 97.7).abs() < 1e-9);
        // Every pair of listed regions is present (the file is complete).
        for a in &regions {
            for b in &regions {
                assert!(t.rtt(a, b).is_some(), "{a},{b}");
                assert_eq!(t.rtt(a, b), t.rtt(b, a));
            }
        }
    }

    #[test]
    fn load_reports_missing_file() {
        let err = RttTable::load("/nonexistent/rtt.csv").unwrap_err();
        assert!(matches!(err, LinkError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/rtt.csv"), "{err}");
    }
}
