//! `anykv bench global` in its own emulated world (iad=3, cdg, syd): what
//! it reports is checked against the RTTs the world emulates. A read in
//! cdg or syd served by the local replica must not take the round trip to
//! iad, and baseline (a), which reads from the primary, must; writes from
//! every region take the round trip to iad in every strategy; anykv sees
//! no read-your-writes violation; killing the primary loses no
//! acknowledged write and every region writes again; the report and its
//! plots are written.

use std::process::Command;

fn rtt(from: &str) -> f64 {
    match from {
        "cdg" => 97.7,
        "syd" => 257.0,
        _ => 0.5,
    }
}

#[test]
fn bench_global_measures_what_the_emulated_world_makes() {
    let out_dir = std::env::temp_dir().join(format!("anykv-bench-global-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_anykv"))
        .args([
            "bench",
            "global",
            "--json",
            "--duration",
            "3",
            "--clients",
            "1",
        ])
        .args(["--failover-window", "8", "--net", "74", "--port", "24300"])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("running anykv bench global");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench global failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let strategy = |c: &str| -> Vec<serde_json::Value> {
        r["strategies"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["consistency"] == c))
            .and_then(|x| x["regions"].as_array().cloned())
            .unwrap_or_else(|| panic!("no {c} run: {r}"))
    };
    let num = |v: &serde_json::Value, k: &str| -> f64 {
        v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
    };
    for c in ["ryw", "strong", "nearest"] {
        let regions = strategy(c);
        assert_eq!(regions.len(), 3, "{c}: {regions:?}");
        for x in &regions {
            let region = x["region"].as_str().expect("region");
            let want = rtt(region);
            assert!(
                (num(x, "rtt_to_primary_ms") - want).abs() < 1.0,
                "{c} {region}: the table's RTT: {x}"
            );
            assert!(
                num(x, "reads") > 0.0 && num(x, "writes") > 0.0,
                "{c} {region}: {x}"
            );
            assert_eq!(num(x, "errors"), 0.0, "{c} {region}: {x}");
            // Every write goes to the primary in iad.
            assert!(
                num(x, "write_p50_ms") >= want * 0.95,
                "{c} {region}: a write took less than the RTT to iad: {x}"
            );
            if region == "iad" {
                continue;
            }
            let read = num(x, "read_p50_ms");
            if c == "strong" {
                assert!(
                    read >= want * 0.95,
                    "baseline (a) {region} reads from iad: {x}"
                );
            } else {
                assert!(
                    read < 20.0,
                    "{c} {region}: reads are served by the local replica: {x}"
                );
            }
            // What a reader sees is at least a one-way trip old.
            assert!(
                num(x, "staleness_p50_ms") >= want / 2.0 * 0.9,
                "{c} {region}: {x}"
            );
        }
    }
    for x in strategy("ryw") {
        assert!(num(&x, "ryw_checks") > 0.0, "{x}");
        assert_eq!(
            num(&x, "ryw_violations"),
            0.0,
            "anykv keeps read-your-writes: {x}"
        );
    }
    let fo = &r["failover"];
    assert_eq!(fo["lost"], 0, "no acknowledged write lost: {fo}");
    assert!(fo["acknowledged"].as_u64().is_some_and(|n| n > 50), "{fo}");
    assert!(
        fo["new_primary"].is_string() && fo["new_primary"] != fo["killed"],
        "{fo}"
    );
    for region in ["iad", "cdg", "syd"] {
        let t = fo["first_ack_after_kill_s"][region].as_f64();
        assert!(
            t.is_some_and(|t| t < 10.0),
            "{region} wrote again after the kill: {fo}"
        );
    }
    for f in [
        "report.md",
        "report.json",
        "latency.svg",
        "lag.svg",
        "failover.svg",
    ] {
        let text = std::fs::read_to_string(out_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!text.is_empty(), "{f} is empty");
        if f.ends_with(".svg") {
            assert!(text.contains("<svg"), "{f} is not SVG");
        }
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    assert!(
        md.contains("baseline (a)") && md.contains("| syd |"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
