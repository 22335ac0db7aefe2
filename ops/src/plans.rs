//! The plans a database can be on: the limits the cluster enforces for it
//! (the catalog's `maxmemory`, `maxclients`, `ops_per_sec`; docs/TENANCY.md
//! says how each node applies them) and what the plan is for.
//!
//! A new database starts on [`DEFAULT`] (Fly's provisioning request
//! names none); `PATCH /extensions/{id}` with `"plan"` moves it to another
//! (the cluster applies the new limits live). The table lives in the code,
//! versioned with it and documented in docs/SIDECAR.md; each database's
//! plan name is in the sidecar's SQLite store.

/// One plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub name: &'static str,
    /// Memory limit of the database on each node holding it (bytes).
    pub maxmemory: u64,
    /// Connections per node holding it.
    pub maxclients: u64,
    /// Commands per second per node holding it.
    pub ops_per_sec: u64,
    pub summary: &'static str,
}

const MIB: u64 = 1024 * 1024;

const FREE: Plan = Plan {
    name: "free",
    maxmemory: 256 * MIB,
    maxclients: 100,
    ops_per_sec: 1_000,
    summary: "to try anykv: 256 MiB, 100 connections, 1,000 commands/s",
};

const PAYG: Plan = Plan {
    name: "payg",
    maxmemory: 1024 * MIB,
    maxclients: 1_000,
    ops_per_sec: 10_000,
    summary: "pay as you go: 1 GiB, 1,000 connections, 10,000 commands/s",
};

const PRO: Plan = Plan {
    name: "pro",
    maxmemory: 10 * 1024 * MIB,
    maxclients: 10_000,
    ops_per_sec: 100_000,
    summary: "for production: 10 GiB, 10,000 connections, 100,000 commands/s",
};

/// Every plan, smallest first.
pub const PLANS: &[Plan] = &[FREE, PAYG, PRO];

/// The plan of a database provisioned without one.
pub const DEFAULT: &Plan = &PAYG;

/// The plan called `name`.
pub fn find(name: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.name == name)
}

/// The plans' names, for an error message.
pub fn names() -> String {
    PLANS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_exists_and_plans_grow() {
        assert_eq!(find(DEFAULT.name), Some(DEFAULT));
        assert!(find("gold").is_none());
        for w in PLANS.windows(2) {
            assert!(w[0].maxmemory < w[1].maxmemory, "{w:?}");
            assert!(w[0].maxclients < w[1].maxclients, "{w:?}");
            assert!(w[0].ops_per_sec < w[1].ops_per_sec, "{w:?}");
        }
        assert_eq!(names(), "free, payg, pro");
    }
}
