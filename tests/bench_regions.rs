//! `anykv bench regions` on a small database in its own shaped world
//! (iad x3, a controller group, then syd): the report has both measurements, the new region
//! served the database (its time includes at least a round trip to syd),
//! the bulk copy over the same shaped link took at least a round trip
//! too, and the removal of iad under writes saw no error. The report is
//! also written where `--out` says.

use std::process::Command;

/// The built-in table's iad–syd round trip, ms.
const IAD_SYD_MS: f64 = 257.0;

/// The number that starts a row's second cell (its result, in ms).
fn result_ms(row: &str) -> f64 {
    row.split(" | ")
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no result in {row}"))
}

#[test]
fn bench_regions_reports_adding_and_removing_a_region() {
    let out_file =
        std::env::temp_dir().join(format!("anykv-bench-regions-{}.md", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_anykv"))
        .args([
            "bench", "regions", "--keys", "3000", "--net", "75", "--port", "24940",
        ])
        .arg("--out")
        .arg(&out_file)
        .output()
        .expect("running anykv bench regions");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench regions failed: {stderr}");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |start: &str| {
        report
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?}:\n{report}"))
            .to_string()
    };
    let add = row("| add syd holding 3000 keys");
    assert!(result_ms(&add) >= IAD_SYD_MS, "{add}");
    let copy = row("| a bulk copy of the same bytes iad → syd");
    assert!(result_ms(&copy) >= IAD_SYD_MS, "{copy}");
    assert!(row("| ratio").contains('x'));
    // Writers through the new syd node and through the primary's iad
    // node (whose writes the move holds): no error on either.
    let writes: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| writes through "))
        .collect();
    assert_eq!(writes.len(), 2, "{report}");
    assert!(writes[0].contains("(syd) while iad is removed"), "{report}");
    assert!(writes[1].contains("(iad, the primary's node"), "{report}");
    for w in &writes {
        assert!(w.contains("; 0 errors |"), "{w}");
        assert!(w.contains("longest (the pause)"), "{w}");
        assert!(w.contains("paced (a write every"), "{w}");
    }
    assert!(
        stderr.contains("hand database 1's primary to syd"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&out_file).expect("the report file");
    assert_eq!(written, report);
    let _ = std::fs::remove_file(&out_file);
}
