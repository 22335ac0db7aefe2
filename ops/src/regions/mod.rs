//! `anykv regions`: what adding or removing a region of data nodes takes,
//! as a plan of steps computed from what exists now (issue 18).
//!
//! A plan is recomputed from the current inventory every time it runs,
//! so a run interrupted at any step is resumed by running it again: what
//! was done is not planned again (a volume made but not yet used is taken
//! by the next machine; a machine already gone is not destroyed twice).
//! Removing a region hands its databases' primaries elsewhere first (or
//! refuses, naming them), takes the region out of the databases that read
//! there, waits until no database has a copy on its nodes, then stops
//! and destroys its machines, and only then their volumes.
//!
//! This module is the plan and its rules; [`run`] carries a plan out,
//! on machines over the Fly Machines API ([`fly`]) and on the cluster
//! over a node's admin API ([`cluster`]).

pub mod cluster;
pub mod fly;
pub mod run;

use std::fmt;

/// A data node (a Fly machine) as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub region: String,
    /// The volume it mounts at /data.
    pub volume: Option<String>,
    /// `started`, `stopped`...
    pub state: String,
}

/// A volume of the data nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vol {
    pub id: String,
    pub region: String,
    /// The machine that mounts it.
    pub attached: Option<String>,
    /// When it was made (Unix ms); None when unknown (taken as old).
    /// Only a spare volume's age is looked at.
    pub created_ms: Option<u64>,
}

/// A database, as the cluster places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: u64,
    pub name: String,
    pub primary_region: String,
    pub read_regions: Vec<String>,
    /// Nodes (machine ids) holding a copy of it now.
    pub copies_on: Vec<String>,
}

/// A data node the cluster still remembers (down) whose machine is gone:
/// destroyed by a removal, perhaps one that stopped before destroying its
/// volume, or by hand. Remembered by the nodes that saw it go and have
/// not restarted since (SWIM keeps a down member for a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub machine: String,
    pub region: String,
    /// When it last started (Unix ms, its gossip incarnation): a volume
    /// made after that cannot be the one it ran on.
    pub started_ms: u64,
}

/// What exists now.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub nodes: Vec<Node>,
    pub volumes: Vec<Vol>,
    pub tenants: Vec<Tenant>,
    pub departed: Vec<Departed>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateVolume {
        region: String,
    },
    /// A machine in `region` mounting `volume` (None: the one the step
    /// before created).
    CreateNode {
        region: String,
        volume: Option<String>,
    },
    /// Starts a node of the region that is stopped (one an interrupted
    /// run made but did not start, or one stopped by hand).
    StartNode {
        node: String,
    },
    /// Until `count` nodes of `region` are members, and every copy placed
    /// on them has caught up with its primary.
    WaitJoined {
        region: String,
        count: usize,
    },
    MovePrimary {
        tenant: u64,
        to: String,
    },
    DropReadRegion {
        tenant: u64,
        region: String,
    },
    /// Until no database has a copy on the region's nodes.
    WaitNoCopies {
        region: String,
    },
    StopNode {
        node: String,
    },
    DestroyNode {
        node: String,
    },
    DestroyVolume {
        volume: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateVolume { region } => {
                write!(f, "create a volume in {region} (unique zone)")
            }
            Step::CreateNode { region, volume } => match volume {
                Some(v) => write!(f, "create a node in {region} on volume {v}"),
                None => write!(f, "create a node in {region} on the new volume"),
            },
            Step::StartNode { node } => write!(f, "start node {node}"),
            Step::WaitJoined { region, count } => write!(
                f,
                "wait until {count} node(s) of {region} are members and their copies caught up"
            ),
            Step::MovePrimary { tenant, to } => {
                write!(f, "hand database {tenant}'s primary to {to}")
            }
            Step::DropReadRegion { tenant, region } => {
                write!(f, "take {region} out of database {tenant}'s read regions")
            }
            Step::WaitNoCopies { region } => {
                write!(f, "wait until no database has a copy in {region}")
            }
            Step::StopNode { node } => write!(f, "stop node {node} (it hands its primaries over)"),
            Step::DestroyNode { node } => write!(f, "destroy node {node}"),
            Step::DestroyVolume { volume } => write!(f, "destroy volume {volume}"),
        }
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{region} is the primary region of {}; add --move-primaries-to <region> to hand them over first", names(.tenants))]
    PrimaryRegion {
        region: String,
        tenants: Vec<String>,
    },
    #[error("--move-primaries-to {0}: that region has no data nodes; add it first (anykv regions add {0})")]
    NoSuchTarget(String),
    #[error("--count must be at least 1")]
    ZeroCount,
    #[error("{region} has volume(s) no node mounts ({}), made before node(s) of {region} that left the cluster with their machines gone last started ({}): they may hold those nodes' data, which a new node refuses to serve. {}", names(.volumes), names(.departed), stale_advice(.region, .serving))]
    StaleVolumes {
        region: String,
        volumes: Vec<String>,
        departed: Vec<String>,
        /// Databases that still live or read in the region.
        serving: Vec<String>,
    },
    #[error("nothing to remove: {0} has no data node, volume or database (a removal already finished, or a misspelt region); `anykv regions list` shows the regions there are")]
    UnknownRegion(String),
}

fn names(t: &[String]) -> String {
    t.join(", ")
}

/// What to do about volumes that may hold departed nodes' data: finish
/// the removal that left them when no database uses the region any more
/// (a removal takes the region out of every database before it destroys
/// a machine); otherwise no removal got that far, the machines went some
/// other way, and only the person who knows what is on the volumes can
/// destroy them.
fn stale_advice(region: &str, serving: &[String]) -> String {
    if serving.is_empty() {
        format!(
            "A removal of {region} did not finish: run `anykv regions remove {region}` to finish it (it destroys only volumes no database copy needs), then add {region} again"
        )
    } else {
        format!(
            "{region} still serves {} (no removal got that far: the machines were destroyed some other way). If nothing on those volumes is needed, destroy them (`fly volumes destroy <id>`; with --backend local, delete that directory of the world), then add {region} again",
            names(serving)
        )
    }
}

/// How far a node's clock (its start time) may be behind Fly's (a
/// volume's creation time) for the stale-volume rule.
const CLOCK_SKEW_MS: u64 = 60_000;

/// Machine states a node is started from by `add` (Fly's: made but never
/// started, stopped, suspended, or whose process failed).
const STARTABLE: &[&str] = &["created", "stopped", "suspended", "failed"];

/// The plan that gives `region` `count` data nodes (more are left alone).
pub fn plan_add(inv: &Inventory, region: &str, count: usize) -> Result<Vec<Step>, PlanError> {
    if count == 0 {
        return Err(PlanError::ZeroCount);
    }
    let have = inv.nodes.iter().filter(|n| n.region == region).count();
    let mut spare: Vec<&Vol> = inv
        .volumes
        .iter()
        .filter(|v| v.region == region && v.attached.is_none())
        .collect();
    // A spare volume made before a node of the region that left (its
    // machine destroyed) last started may be that node's: a removal
    // stopped between destroying the machine and the volume, or a
    // machine destroyed by hand. Fly's volume says nothing of what it
    // holds, so such a volume is not given to a new node. One made after
    // every such start is one an interrupted `add` made.
    // (A minute's grace for the node's clock against Fly's.)
    let older = |v: &Vol, d: &Departed| {
        v.created_ms
            .is_none_or(|made| made <= d.started_ms.saturating_add(CLOCK_SKEW_MS))
    };
    let left_here: Vec<&Departed> = inv.departed.iter().filter(|d| d.region == region).collect();
    let stale: Vec<String> = spare
        .iter()
        .filter(|v| left_here.iter().any(|d| older(v, d)))
        .map(|v| v.id.clone())
        .collect();
    if have < count && !stale.is_empty() {
        let serving = inv
            .tenants
            .iter()
            .filter(|t| t.primary_region == region || t.read_regions.iter().any(|r| r == region))
            .map(|t| t.name.clone())
            .collect();
        return Err(PlanError::StaleVolumes {
            region: region.into(),
            volumes: stale,
            departed: left_here
                .iter()
                .filter(|d| spare.iter().any(|v| older(v, d)))
                .map(|d| d.machine.clone())
                .collect(),
            serving,
        });
    }
    let mut steps: Vec<Step> = inv
        .nodes
        .iter()
        .filter(|n| n.region == region && STARTABLE.contains(&n.state.as_str()))
        .map(|n| Step::StartNode { node: n.id.clone() })
        .collect();
    for _ in have..count {
        match spare.pop() {
            // A volume an interrupted run made: the next node takes it.
            Some(v) => steps.push(Step::CreateNode {
                region: region.into(),
                volume: Some(v.id.clone()),
            }),
            None => {
                steps.push(Step::CreateVolume {
                    region: region.into(),
                });
                steps.push(Step::CreateNode {
                    region: region.into(),
                    volume: None,
                });
            }
        }
    }
    steps.push(Step::WaitJoined {
        region: region.into(),
        count: count.max(have),
    });
    Ok(steps)
}

/// The plan that empties `region` and removes its nodes and volumes.
pub fn plan_remove(
    inv: &Inventory,
    region: &str,
    move_primaries_to: Option<&str>,
) -> Result<Vec<Step>, PlanError> {
    let known = inv.nodes.iter().any(|n| n.region == region)
        || inv.volumes.iter().any(|v| v.region == region)
        || inv
            .tenants
            .iter()
            .any(|t| t.primary_region == region || t.read_regions.iter().any(|r| r == region));
    if !known {
        return Err(PlanError::UnknownRegion(region.into()));
    }
    let primaries: Vec<&Tenant> = inv
        .tenants
        .iter()
        .filter(|t| t.primary_region == region)
        .collect();
    let mut steps = Vec::new();
    if !primaries.is_empty() {
        let Some(to) = move_primaries_to else {
            return Err(PlanError::PrimaryRegion {
                region: region.into(),
                tenants: primaries.iter().map(|t| t.name.clone()).collect(),
            });
        };
        if to == region || !inv.nodes.iter().any(|n| n.region == to) {
            return Err(PlanError::NoSuchTarget(to.into()));
        }
        for t in &primaries {
            steps.push(Step::MovePrimary {
                tenant: t.id,
                to: to.into(),
            });
        }
    }
    // (A moved primary leaves its old region as a read region, which is
    // then taken out like the others.)
    for t in &inv.tenants {
        if t.primary_region == region || t.read_regions.iter().any(|r| r == region) {
            steps.push(Step::DropReadRegion {
                tenant: t.id,
                region: region.into(),
            });
        }
    }
    let nodes: Vec<&Node> = inv.nodes.iter().filter(|n| n.region == region).collect();
    if !nodes.is_empty() {
        steps.push(Step::WaitNoCopies {
            region: region.into(),
        });
    }
    for n in &nodes {
        if n.state != "stopped" {
            steps.push(Step::StopNode { node: n.id.clone() });
        }
        steps.push(Step::DestroyNode { node: n.id.clone() });
    }
    // Volumes last: the machines that mount them are gone by then, and
    // the wait above saw their nodes hold no database.
    for v in inv.volumes.iter().filter(|v| v.region == region) {
        steps.push(Step::DestroyVolume {
            volume: v.id.clone(),
        });
    }
    Ok(steps)
}

/// Whether destroying volume `vol` is allowed now: no machine mounts it.
/// (That its node held no database when it went is the plan's order: a
/// node is destroyed only after the wait that no copy is left on it.)
pub fn volume_is_free(inv: &Inventory, vol: &Vol) -> bool {
    vol.attached.is_none()
        && !inv
            .nodes
            .iter()
            .any(|n| n.volume.as_deref() == Some(vol.id.as_str()))
}

/// A plan as `--dry-run` prints it: one numbered line per step.
pub fn render(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "nothing to do\n".into();
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{:>3}. {s}\n", i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, vol: &str) -> Node {
        Node {
            id: id.into(),
            region: region.into(),
            volume: Some(vol.into()),
            state: "started".into(),
        }
    }

    fn vol(id: &str, region: &str, attached: Option<&str>) -> Vol {
        Vol {
            id: id.into(),
            region: region.into(),
            attached: attached.map(str::to_string),
            created_ms: Some(1_000),
        }
    }

    fn world() -> Inventory {
        Inventory {
            nodes: vec![
                node("m1", "iad", "v1"),
                node("m2", "iad", "v2"),
                node("m3", "cdg", "v3"),
            ],
            volumes: vec![
                vol("v1", "iad", Some("m1")),
                vol("v2", "iad", Some("m2")),
                vol("v3", "cdg", Some("m3")),
            ],
            tenants: vec![
                Tenant {
                    id: 1,
                    name: "shop".into(),
                    primary_region: "iad".into(),
                    read_regions: vec!["cdg".into()],
                    copies_on: vec!["m1".into(), "m2".into(), "m3".into()],
                },
                Tenant {
                    id: 2,
                    name: "blog".into(),
                    primary_region: "cdg".into(),
                    read_regions: vec![],
                    copies_on: vec!["m3".into()],
                },
            ],
            departed: Vec::new(),
        }
    }

    /// m3 (cdg) left, its machine destroyed, its volume v3 still there
    /// (made at 1 s; m3 last started at 5 s). Adding cdg does not give v3
    /// to a new node: it refuses, naming the volume and the node. While a
    /// database still reads in cdg, no removal got that far: the advice
    /// is to destroy the volume if nothing on it is needed, not to remove
    /// the region. Once no database uses cdg, a removal stopped there:
    /// finish it. A volume made after m3's last start (an interrupted
    /// add's, after the removal finished) is taken by the new node.
    #[test]
    fn a_volume_a_departed_node_may_have_used_is_not_given_to_a_new_node() {
        let mut inv = world();
        inv.nodes.retain(|n| n.id != "m3");
        inv.volumes[2].attached = None;
        inv.departed.push(Departed {
            machine: "m3".into(),
            region: "cdg".into(),
            started_ms: 5_000,
        });
        let refused = plan_add(&inv, "cdg", 1).expect_err("refused");
        let text = refused.to_string();
        assert_eq!(
            refused,
            PlanError::StaleVolumes {
                region: "cdg".into(),
                volumes: vec!["v3".into()],
                departed: vec!["m3".into()],
                serving: vec!["shop".into(), "blog".into()],
            }
        );
        assert!(text.contains("fly volumes destroy"), "{text}");
        assert!(!text.contains("regions remove"), "{text}");
        // No database uses cdg: a removal stopped before the volume.
        for t in &mut inv.tenants {
            t.read_regions.retain(|r| r != "cdg");
            t.primary_region = "iad".into();
            t.copies_on.retain(|n| n != "m3");
        }
        let text = plan_add(&inv, "cdg", 1).expect_err("refused").to_string();
        assert!(
            text.contains("run `anykv regions remove cdg` to finish it"),
            "{text}"
        );
        // The removal destroys the volume; an add then makes a new one,
        // and, interrupted after it, takes it when run again although m3
        // is still remembered.
        assert!(plan_remove(&inv, "cdg", None)
            .expect("plan")
            .contains(&Step::DestroyVolume {
                volume: "v3".into()
            }));
        inv.volumes.retain(|v| v.id != "v3");
        assert_eq!(
            plan_add(&inv, "cdg", 1).expect("plan")[0],
            Step::CreateVolume {
                region: "cdg".into()
            }
        );
        let mut made = vol("v7", "cdg", None);
        made.created_ms = Some(100_000);
        inv.volumes.push(made);
        assert_eq!(
            plan_add(&inv, "cdg", 1).expect("plan")[0],
            Step::CreateNode {
                region: "cdg".into(),
                volume: Some("v7".into())
            }
        );
        // Made within a minute after m3's start (its clock may be
        // behind), or at it: stale. A second departed node that started
        // after the volume was made makes it stale alone, and only the
        // nodes that make a volume stale are named.
        for (made, stale) in [(65_000, true), (5_000, true), (65_001, false)] {
            for v in inv.volumes.iter_mut().filter(|v| v.id == "v7") {
                v.created_ms = Some(made);
            }
            assert_eq!(plan_add(&inv, "cdg", 1).is_err(), stale, "made at {made}");
        }
        inv.departed.push(Departed {
            machine: "m8".into(),
            region: "cdg".into(),
            started_ms: 200_000,
        });
        match plan_add(&inv, "cdg", 1) {
            Err(PlanError::StaleVolumes { departed, .. }) => assert_eq!(departed, ["m8"]),
            other => panic!("m8 started after v7 was made: {other:?}"),
        }
        inv.departed.pop();
        // A volume of unknown age counts as old.
        for v in inv.volumes.iter_mut().filter(|v| v.id == "v7") {
            v.created_ms = None;
        }
        assert!(plan_add(&inv, "cdg", 1).is_err());
        // A node that left elsewhere is no matter here.
        inv.volumes.push(vol("v9", "syd", None));
        assert_eq!(
            plan_add(&inv, "syd", 1).expect("plan")[0],
            Step::CreateNode {
                region: "syd".into(),
                volume: Some("v9".into())
            }
        );
    }

    #[test]
    fn adding_a_region_makes_a_volume_then_a_node_each_and_resumes() {
        let inv = world();
        let steps = plan_add(&inv, "syd", 2).expect("plan");
        assert_eq!(
            steps,
            vec![
                Step::CreateVolume {
                    region: "syd".into()
                },
                Step::CreateNode {
                    region: "syd".into(),
                    volume: None
                },
                Step::CreateVolume {
                    region: "syd".into()
                },
                Step::CreateNode {
                    region: "syd".into(),
                    volume: None
                },
                Step::WaitJoined {
                    region: "syd".into(),
                    count: 2
                },
            ]
        );
        // Interrupted after the first node and the second volume: the
        // spare volume is used, nothing is made twice.
        let mut later = inv.clone();
        later.nodes.push(node("m4", "syd", "v4"));
        later.volumes.push(vol("v4", "syd", Some("m4")));
        later.volumes.push(vol("v5", "syd", None));
        assert_eq!(
            plan_add(&later, "syd", 2).expect("plan"),
            vec![
                Step::CreateNode {
                    region: "syd".into(),
                    volume: Some("v5".into())
                },
                Step::WaitJoined {
                    region: "syd".into(),
                    count: 2
                },
            ]
        );
        // Done: only the wait (it is over at once).
        later.nodes.push(node("m5", "syd", "v5"));
        later.volumes[4].attached = Some("m5".into());
        assert_eq!(
            plan_add(&later, "syd", 2).expect("plan"),
            vec![Step::WaitJoined {
                region: "syd".into(),
                count: 2
            }]
        );
        assert_eq!(plan_add(&inv, "syd", 0), Err(PlanError::ZeroCount));
    }

    #[test]
    fn an_unknown_region_is_not_removed_and_stopped_nodes_are_started() {
        let mut inv = world();
        assert_eq!(
            plan_remove(&inv, "ams", None),
            Err(PlanError::UnknownRegion("ams".into()))
        );
        // A node an interrupted add recorded but did not start (or one
        // suspended, or whose process failed): started.
        for state in ["stopped", "created", "suspended", "failed"] {
            inv.nodes[2].state = state.into();
            assert_eq!(
                plan_add(&inv, "cdg", 1).expect("plan"),
                vec![
                    Step::StartNode { node: "m3".into() },
                    Step::WaitJoined {
                        region: "cdg".into(),
                        count: 1
                    }
                ],
                "{state}"
            );
        }
        // A started one is waited for, not started again.
        inv.nodes[2].state = "started".into();
        assert_eq!(
            plan_add(&inv, "cdg", 1).expect("plan"),
            vec![Step::WaitJoined {
                region: "cdg".into(),
                count: 1
            }]
        );
    }

    #[test]
    fn removing_a_primary_region_is_refused_unless_primaries_move() {
        let inv = world();
        let err = plan_remove(&inv, "cdg", None).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "cdg is the primary region of blog; add --move-primaries-to <region> to hand them over first"
        );
        assert_eq!(
            plan_remove(&inv, "cdg", Some("syd")),
            Err(PlanError::NoSuchTarget("syd".into()))
        );
        let steps = plan_remove(&inv, "cdg", Some("iad")).expect("plan");
        assert_eq!(
            steps,
            vec![
                Step::MovePrimary {
                    tenant: 2,
                    to: "iad".into()
                },
                Step::DropReadRegion {
                    tenant: 1,
                    region: "cdg".into()
                },
                Step::DropReadRegion {
                    tenant: 2,
                    region: "cdg".into()
                },
                Step::WaitNoCopies {
                    region: "cdg".into()
                },
                Step::StopNode { node: "m3".into() },
                Step::DestroyNode { node: "m3".into() },
                Step::DestroyVolume {
                    volume: "v3".into()
                },
            ]
        );
        // Volumes come after every machine of the region.
        let last_node = steps
            .iter()
            .rposition(|s| matches!(s, Step::DestroyNode { .. }))
            .expect("a node destroyed");
        let first_volume = steps
            .iter()
            .position(|s| matches!(s, Step::DestroyVolume { .. }))
            .expect("a volume destroyed");
        assert!(last_node < first_volume);
        let printed = render(&steps);
        assert!(
            printed.starts_with("  1. hand database 2's primary to iad\n"),
            "{printed}"
        );
        assert_eq!(printed.lines().count(), 7);
    }

    #[test]
    fn a_removal_resumes_where_it_stopped_and_frees_volumes_last() {
        let mut inv = world();
        // The databases moved, the machine stopped and was destroyed, the
        // volume is left: only it remains.
        inv.tenants[1].primary_region = "iad".into();
        inv.tenants[1].copies_on = vec!["m1".into()];
        inv.tenants[0].read_regions.clear();
        inv.tenants[0].copies_on.retain(|c| c != "m3");
        inv.nodes.retain(|n| n.id != "m3");
        inv.volumes[2].attached = None;
        assert_eq!(
            plan_remove(&inv, "cdg", None).expect("plan"),
            vec![Step::DestroyVolume {
                volume: "v3".into()
            }]
        );
        assert!(volume_is_free(&inv, &inv.volumes[2]));
        // A volume still mounted is not free.
        let inv = world();
        assert!(!volume_is_free(&inv, &inv.volumes[2]));
        assert_eq!(render(&[]), "nothing to do\n");
    }
}
