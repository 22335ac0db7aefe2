//! Carrying a plan out: each step on the machines (an [`Infra`]: Fly's
//! Machines API, or local processes) or on the cluster (a [`Cluster`]: a
//! node's admin API), with a report per step.
//!
//! Nothing here remembers a run: [`Runner::run`] takes the inventory
//! afresh and plans from it, so a run stopped anywhere (Ctrl-C, a lost
//! connection, a machine that would not start) is resumed by running the
//! same command again. The one rule the plan's order cannot guarantee on
//! its own, that no volume goes while a database still has a copy on its
//! region's nodes, is checked again just before each volume is destroyed.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::cluster::{ClusterApi, ClusterError, State};
use super::{plan_add, plan_remove, Departed, Inventory, Node, PlanError, Step, Tenant, Vol};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Infra(String),
    #[error("{what} did not happen within {limit:?}: {now}; look at the nodes' logs (fly logs -i <machine>, or the world's <node>.log) for why, then run the command again to go on (nothing done so far is undone)")]
    Timeout {
        what: String,
        limit: Duration,
        now: String,
    },
    #[error("refusing to destroy volume {volume}: {why}")]
    Unsafe { volume: String, why: String },
}

/// Machines and volumes: what the plan creates and destroys.
pub trait Infra {
    /// The data nodes and their volumes now.
    fn inventory(&self) -> impl Future<Output = Result<(Vec<Node>, Vec<Vol>), RunError>> + Send;
    /// A new volume in `region`: its id.
    fn create_volume(&self, region: &str) -> impl Future<Output = Result<String, RunError>> + Send;
    /// A new data node in `region` mounting `volume`: its id (the
    /// cluster's name for it).
    fn create_node(
        &self,
        region: &str,
        volume: &str,
    ) -> impl Future<Output = Result<String, RunError>> + Send;
    /// Starts a stopped node.
    fn start_node(&self, node: &str) -> impl Future<Output = Result<(), RunError>> + Send;
    /// Stops a node (SIGTERM: it hands its primaries over) and waits
    /// until it has.
    fn stop_node(&self, node: &str) -> impl Future<Output = Result<(), RunError>> + Send;
    fn destroy_node(&self, node: &str) -> impl Future<Output = Result<(), RunError>> + Send;
    fn destroy_volume(&self, volume: &str) -> impl Future<Output = Result<(), RunError>> + Send;
}

/// The cluster's side: its view, and changes to a database's regions.
pub trait Cluster {
    fn state(&self) -> impl Future<Output = Result<State, ClusterError>> + Send;
    fn drop_read_region(
        &self,
        tenant: u64,
        region: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn add_read_region(
        &self,
        tenant: u64,
        region: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Hands the primary to the replica in `to` (planned, nothing lost).
    fn move_primary(
        &self,
        tenant: u64,
        to: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
}

impl Cluster for ClusterApi {
    fn state(&self) -> impl Future<Output = Result<State, ClusterError>> + Send {
        ClusterApi::state(self)
    }
    fn drop_read_region(
        &self,
        tenant: u64,
        region: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send {
        ClusterApi::drop_read_region(self, tenant, region)
    }
    fn add_read_region(
        &self,
        tenant: u64,
        region: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send {
        ClusterApi::add_read_region(self, tenant, region)
    }
    async fn move_primary(&self, tenant: u64, to: &str) -> Result<(), ClusterError> {
        ClusterApi::move_primary(self, tenant, to).await.map(drop)
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add {
        region: String,
        count: usize,
    },
    Remove {
        region: String,
        move_primaries_to: Option<String>,
    },
}

/// What a run reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan, before the first step.
    Planned(Vec<Step>),
    /// Step `index` (from 0) of `of` begins.
    Step { index: usize, of: usize, step: Step },
    /// A wait goes on: what it is waiting for now.
    Waiting(String),
    /// The step made something: its id.
    Made(String),
}

/// Carries plans out.
pub struct Runner<I, C> {
    pub infra: I,
    pub cluster: C,
    /// How often a wait looks again.
    pub poll: Duration,
    /// How long a wait may take before the run stops (to be resumed).
    pub wait_limit: Duration,
}

impl<I: Infra + Sync, C: Cluster + Sync> Runner<I, C> {
    pub fn new(infra: I, cluster: C) -> Self {
        Runner {
            infra,
            cluster,
            poll: Duration::from_millis(500),
            wait_limit: Duration::from_secs(600),
        }
    }

    /// What exists now: machines, volumes, and the databases with where
    /// their copies are.
    pub async fn inventory(&self) -> Result<Inventory, RunError> {
        let (nodes, volumes) = self.infra.inventory().await?;
        let state = self.cluster.state().await?;
        let departed = state
            .members
            .iter()
            .filter(|m| m.state != "alive" && !m.is_router())
            .filter(|m| !nodes.iter().any(|n| n.id == m.machine))
            .map(|m| Departed {
                machine: m.machine.clone(),
                region: m.region.clone(),
                // A node that reported no start time may have started at
                // any time: every spare volume counts as older.
                started_ms: if m.incarnation == 0 {
                    u64::MAX
                } else {
                    m.incarnation
                },
            })
            .collect();
        Ok(Inventory {
            nodes,
            volumes,
            tenants: tenants_of(&state),
            departed,
        })
    }

    /// The plan for `change`, from what exists now.
    pub async fn plan(&self, change: &Change) -> Result<Vec<Step>, RunError> {
        let inv = self.inventory().await?;
        Ok(match change {
            Change::Add { region, count } => plan_add(&inv, region, *count)?,
            Change::Remove {
                region,
                move_primaries_to,
            } => plan_remove(&inv, region, move_primaries_to.as_deref())?,
        })
    }

    /// Plans `change` and carries it out, reporting to `report`.
    pub async fn run(
        &self,
        change: &Change,
        report: &mut impl FnMut(Event),
    ) -> Result<(), RunError> {
        let steps = self.plan(change).await?;
        report(Event::Planned(steps.clone()));
        let mut new_volume: Option<String> = None;
        for (index, step) in steps.iter().enumerate() {
            report(Event::Step {
                index,
                of: steps.len(),
                step: step.clone(),
            });
            match step {
                Step::CreateVolume { region } => {
                    let id = self.infra.create_volume(region).await?;
                    report(Event::Made(id.clone()));
                    new_volume = Some(id);
                }
                Step::CreateNode { region, volume } => {
                    let Some(vol) = volume.clone().or_else(|| new_volume.take()) else {
                        return Err(RunError::Infra(format!(
                            "no volume for the new node in {region}; run the command again"
                        )));
                    };
                    let id = self.infra.create_node(region, &vol).await?;
                    report(Event::Made(id));
                }
                Step::WaitJoined { region, count } => {
                    self.wait_joined(region, *count, report).await?;
                }
                Step::MovePrimary { tenant, to } => {
                    self.move_primary(*tenant, to, report).await?;
                }
                Step::DropReadRegion { tenant, region } => {
                    self.cluster.drop_read_region(*tenant, region).await?;
                }
                Step::WaitNoCopies { region } => {
                    let nodes = self.nodes_of(region).await?;
                    self.wait(
                        &format!("no database left with a copy in {region}"),
                        report,
                        |s| {
                            let left = s.with_copies_on(&nodes);
                            if left.is_empty() {
                                None
                            } else {
                                Some(format!("copies left: {}", left.join(", ")))
                            }
                        },
                    )
                    .await?;
                }
                Step::StartNode { node } => self.infra.start_node(node).await?,
                Step::StopNode { node } => self.infra.stop_node(node).await?,
                Step::DestroyNode { node } => self.infra.destroy_node(node).await?,
                Step::DestroyVolume { volume } => {
                    self.check_volume_free(volume).await?;
                    self.infra.destroy_volume(volume).await?;
                }
            }
        }
        Ok(())
    }

    /// What `change` left in its region, as it is now.
    pub async fn outcome(&self, change: &Change) -> Result<Outcome, RunError> {
        let region = match change {
            Change::Add { region, .. } | Change::Remove { region, .. } => region,
        };
        let (nodes, volumes) = self.infra.inventory().await?;
        let state = self.cluster.state().await?;
        Ok(Outcome::of(region, &nodes, &volumes, &state))
    }

    /// Hands database `tenant`'s primary to region `to`: a replica there
    /// first (`to` made a read region if it is not one), caught up with
    /// what the primary had when the wait began, so the move holds writes
    /// only for the last bytes; then the move, and a wait until the
    /// cluster shows the primary there.
    async fn move_primary(
        &self,
        tenant: u64,
        to: &str,
        report: &mut impl FnMut(Event),
    ) -> Result<(), RunError> {
        let s = self.cluster.state().await?;
        let Some(t) = s.tenants.iter().find(|t| t.id == tenant) else {
            return Ok(()); // deleted meanwhile
        };
        if s.region_of(&t.primary) == Some(to) {
            return Ok(()); // moved by a run that was stopped
        }
        if !t.read_regions.iter().any(|r| r == to) {
            self.cluster.add_read_region(tenant, to).await?;
        }
        let target = t.offset.unwrap_or(0);
        self.wait(
            &format!("a replica of database {tenant} in {to} caught up"),
            report,
            |s| {
                let caught_up = s
                    .tenants
                    .iter()
                    .any(|t| t.id == tenant && t.caught_up_in(to, target));
                (!caught_up).then(|| format!("database {tenant}'s replica in {to} catching up"))
            },
        )
        .await?;
        self.cluster.move_primary(tenant, to).await?;
        self.wait(
            &format!("database {tenant}'s primary in {to}"),
            report,
            |s| {
                let there = s.tenants.iter().any(|t| {
                    t.id == tenant && s.alive_in(to).iter().any(|m| m.machine == t.primary)
                });
                (!there).then(|| format!("database {tenant}'s primary moving to {to}"))
            },
        )
        .await
    }

    /// The ids of the nodes the machines say are in `region`.
    async fn nodes_of(&self, region: &str) -> Result<Vec<String>, RunError> {
        let (nodes, _) = self.infra.inventory().await?;
        Ok(nodes
            .into_iter()
            .filter(|n| n.region == region)
            .map(|n| n.id)
            .collect())
    }

    /// Until `count` nodes of `region` are alive members and every
    /// database that lives or reads in `region` has a copy there that has
    /// reached the offset its primary had when the wait began.
    async fn wait_joined(
        &self,
        region: &str,
        count: usize,
        report: &mut impl FnMut(Event),
    ) -> Result<(), RunError> {
        let start = self.cluster.state().await?;
        let targets: Vec<(u64, u64)> = start
            .tenants
            .iter()
            .filter(|t| t.primary_region == region || t.read_regions.iter().any(|r| r == region))
            .map(|t| (t.id, t.offset.unwrap_or(0)))
            .collect();
        self.wait(
            &format!("{count} node(s) of {region} joined and caught up"),
            report,
            |s| {
                let alive = s.alive_in(region).len();
                if alive < count {
                    return Some(format!(
                        "{alive} of {count} node(s) of {region} are members"
                    ));
                }
                let behind: Vec<String> = targets
                    .iter()
                    .filter(|(id, target)| {
                        let Some(t) = s.tenants.iter().find(|t| t.id == *id) else {
                            return false;
                        };
                        s.region_of(&t.primary) != Some(region) && !t.caught_up_in(region, *target)
                    })
                    .map(|(id, _)| {
                        s.tenants
                            .iter()
                            .find(|t| t.id == *id)
                            .map_or(id.to_string(), |t| t.name.clone())
                    })
                    .collect();
                if behind.is_empty() {
                    None
                } else {
                    Some(format!("catching up in {region}: {}", behind.join(", ")))
                }
            },
        )
        .await
    }

    /// Polls the cluster until `pending` says nothing is left (`None`), up
    /// to the wait limit.
    async fn wait(
        &self,
        what: &str,
        report: &mut impl FnMut(Event),
        pending: impl Fn(&State) -> Option<String>,
    ) -> Result<(), RunError> {
        let end = tokio::time::Instant::now() + self.wait_limit;
        let mut last = String::new();
        loop {
            let now = match self.cluster.state().await {
                Ok(s) => pending(&s),
                // A node that is restarting or busy: look again.
                Err(e) => Some(e.to_string()),
            };
            let Some(now) = now else {
                return Ok(());
            };
            if now != last {
                report(Event::Waiting(now.clone()));
                last = now.clone();
            }
            if tokio::time::Instant::now() >= end {
                return Err(RunError::Timeout {
                    what: what.to_string(),
                    limit: self.wait_limit,
                    now,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Refuses unless `volume` is mounted by no machine and no database
    /// has a copy on a node of its region.
    async fn check_volume_free(&self, volume: &str) -> Result<(), RunError> {
        let (nodes, volumes) = self.infra.inventory().await?;
        let Some(vol) = volumes.iter().find(|v| v.id == volume) else {
            return Ok(()); // gone already
        };
        let inv = Inventory {
            nodes: nodes.clone(),
            volumes: volumes.clone(),
            ..Inventory::default()
        };
        if !super::volume_is_free(&inv, vol) {
            return Err(RunError::Unsafe {
                volume: volume.into(),
                why: "a machine still mounts it".into(),
            });
        }
        let state = self.cluster.state().await?;
        let mut region_nodes: Vec<String> = nodes
            .iter()
            .filter(|n| n.region == vol.region)
            .map(|n| n.id.clone())
            .collect();
        region_nodes.extend(
            state
                .members
                .iter()
                .filter(|m| m.region == vol.region)
                .map(|m| m.machine.clone()),
        );
        let left = state.with_copies_on(&region_nodes);
        if !left.is_empty() {
            return Err(RunError::Unsafe {
                volume: volume.into(),
                why: format!(
                    "databases still have copies on {}'s nodes: {}",
                    vol.region,
                    left.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// What a finished run left in its region: the report `anykv regions`
/// prints after `done`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub region: String,
    /// The region's data nodes: machine, volume, the machine's state and
    /// the node's state as a member of the cluster.
    pub nodes: Vec<(Node, String)>,
    /// Volumes of the region no node mounts.
    pub spare_volumes: Vec<String>,
    /// The copies the region's nodes hold.
    pub copies: Vec<CopyRow>,
    /// Databases with their primary elsewhere, by the primary's region
    /// (where a removal moved them to).
    pub primaries_elsewhere: Vec<(String, usize)>,
}

/// One copy of a database on a node of the region.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRow {
    pub database: String,
    pub node: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// The copy's replication offset (a primary's is the database's).
    pub offset: Option<u64>,
    /// The database's primary: node, region and offset.
    pub primary: String,
    pub primary_region: String,
    pub primary_offset: Option<u64>,
}

impl Outcome {
    /// The region as `state` and the machines show it now.
    pub fn of(region: &str, nodes: &[Node], volumes: &[Vol], state: &State) -> Outcome {
        let nodes: Vec<(Node, String)> = nodes
            .iter()
            .filter(|n| n.region == region)
            .map(|n| {
                let member = state
                    .members
                    .iter()
                    .find(|m| m.machine == n.id)
                    .map_or("not a member", |m| m.state.as_str());
                (n.clone(), member.to_string())
            })
            .collect();
        let spare_volumes = volumes
            .iter()
            .filter(|v| v.region == region && v.attached.is_none())
            .map(|v| v.id.clone())
            .collect();
        let here = |node: &str| nodes.iter().any(|(n, _)| n.id == node);
        let mut copies = Vec::new();
        let mut elsewhere: std::collections::BTreeMap<String, usize> = Default::default();
        for t in &state.tenants {
            let primary_region = state.region_of(&t.primary).unwrap_or("?").to_string();
            let row = |node: &str, role, offset| CopyRow {
                database: t.name.clone(),
                node: node.to_string(),
                role,
                offset,
                primary: t.primary.clone(),
                primary_region: primary_region.clone(),
                primary_offset: t.offset,
            };
            if here(&t.primary) {
                copies.push(row(&t.primary, "primary", t.offset));
            } else {
                *elsewhere.entry(primary_region.clone()).or_default() += 1;
            }
            for c in t.replicas.iter().filter(|c| here(&c.node)) {
                copies.push(row(&c.node, "replica", c.offset));
            }
        }
        Outcome {
            region: region.to_string(),
            nodes,
            spare_volumes,
            copies,
            primaries_elsewhere: elsewhere.into_iter().collect(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |o: Option<u64>| o.map_or("-".to_string(), |o| o.to_string());
        let r = &self.region;
        if self.nodes.is_empty() {
            writeln!(f, "{r}: no data node")?;
        } else {
            writeln!(f, "{r}: {} data node(s)", self.nodes.len())?;
            writeln!(
                f,
                "  {:<16} {:<24} {:<10} MEMBER",
                "NODE", "VOLUME", "MACHINE"
            )?;
            for (n, member) in &self.nodes {
                let vol = n.volume.as_deref().unwrap_or("-");
                writeln!(f, "  {:<16} {vol:<24} {:<10} {member}", n.id, n.state)?;
            }
        }
        if !self.spare_volumes.is_empty() {
            writeln!(
                f,
                "{r}: volume(s) no node mounts: {}",
                self.spare_volumes.join(", ")
            )?;
        }
        if self.copies.is_empty() {
            writeln!(f, "{r}: no database has a copy here")?;
        } else {
            writeln!(f, "{r}: database copies held here: {}", self.copies.len())?;
            writeln!(
                f,
                "  {:<20} {:<8} {:<16} {:>12}   PRIMARY",
                "DATABASE", "ROLE", "NODE", "OFFSET"
            )?;
            for c in &self.copies {
                writeln!(
                    f,
                    "  {:<20} {:<8} {:<16} {:>12}   {} ({}) at {}",
                    c.database,
                    c.role,
                    c.node,
                    opt(c.offset),
                    c.primary,
                    c.primary_region,
                    opt(c.primary_offset)
                )?;
            }
        }
        if !self.primaries_elsewhere.is_empty() {
            let by: Vec<String> = self
                .primaries_elsewhere
                .iter()
                .map(|(region, n)| format!("{region} {n}"))
                .collect();
            writeln!(
                f,
                "databases with their primary elsewhere: {}",
                by.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The plan's view of the cluster's databases.
fn tenants_of(s: &State) -> Vec<Tenant> {
    s.tenants
        .iter()
        .map(|t| Tenant {
            id: t.id,
            name: t.name.clone(),
            primary_region: t.primary_region.clone(),
            read_regions: t.read_regions.clone(),
            copies_on: t.nodes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::cluster::{Copy, Database, Member};
    use super::super::fly::FlyInfra;
    use super::super::render;
    use super::*;
    use crate::machines::fake::FakeMachines;
    use crate::machines::{Machines, NewMachine, NewVolume, Retry};
    use parking_lot::Mutex;
    use serde_json::json;
    use std::sync::Arc;

    /// The cluster as the fake machines make it: a started machine is an
    /// alive member; a database gets a caught-up copy in each of its read
    /// regions as soon as that region has a member, and loses the copy
    /// when the region stops being one of its read regions (unless
    /// `stuck`, a copy that does not go).
    struct FakeCluster {
        fly: Arc<FakeMachines>,
        dbs: Mutex<Vec<Database>>,
        stuck: Mutex<Option<String>>,
        /// New copies start at offset 0 and stay there (a full sync under
        /// way) until this is cleared.
        syncing: Mutex<bool>,
        /// Every member seen, as SWIM remembers them: one whose machine
        /// is destroyed stays, down.
        seen: Mutex<Vec<Member>>,
    }

    impl FakeCluster {
        fn members(&self) -> Vec<Member> {
            let live: Vec<Member> = self
                .fly
                .machines()
                .iter()
                .map(|m| Member {
                    machine: m["id"].as_str().unwrap_or_default().into(),
                    region: m["region"].as_str().unwrap_or_default().into(),
                    state: if m["state"] == "started" {
                        "alive"
                    } else {
                        "down"
                    }
                    .into(),
                    incarnation: crate::metering::unix_ms_of(
                        m["created_at"].as_str().unwrap_or_default(),
                    )
                    .unwrap_or(0),
                    meta: None,
                })
                .collect();
            let mut seen = self.seen.lock();
            for m in &live {
                if !seen.iter().any(|s| s.machine == m.machine) {
                    seen.push(m.clone());
                }
            }
            seen.iter()
                .map(|s| {
                    live.iter()
                        .find(|l| l.machine == s.machine)
                        .cloned()
                        .unwrap_or_else(|| Member {
                            state: "down".into(),
                            ..s.clone()
                        })
                })
                .collect()
        }
    }

    impl Cluster for FakeCluster {
        async fn state(&self) -> Result<State, ClusterError> {
            let members = self.members();
            let mut dbs = self.dbs.lock();
            let stuck = self.stuck.lock().clone();
            for d in dbs.iter_mut() {
                let reads = d.read_regions.clone();
                d.replicas
                    .retain(|c| reads.contains(&c.region) || Some(&c.node) == stuck.as_ref());
                for r in &reads {
                    if d.replicas.iter().any(|c| &c.region == r) {
                        continue;
                    }
                    if let Some(m) = members
                        .iter()
                        .find(|m| &m.region == r && m.state == "alive")
                    {
                        d.replicas.push(Copy {
                            node: m.machine.clone(),
                            region: r.clone(),
                            offset: d.offset,
                        });
                    }
                }
                let syncing = *self.syncing.lock();
                for c in &mut d.replicas {
                    c.offset = if syncing { Some(0) } else { d.offset };
                }
            }
            Ok(State {
                members,
                tenants: dbs.clone(),
            })
        }

        async fn drop_read_region(&self, tenant: u64, region: &str) -> Result<(), ClusterError> {
            for d in self.dbs.lock().iter_mut().filter(|d| d.id == tenant) {
                d.read_regions.retain(|r| r != region);
            }
            Ok(())
        }

        async fn add_read_region(&self, tenant: u64, region: &str) -> Result<(), ClusterError> {
            for d in self.dbs.lock().iter_mut().filter(|d| d.id == tenant) {
                if !d.read_regions.iter().any(|r| r == region) {
                    d.read_regions.push(region.into());
                }
            }
            Ok(())
        }

        /// The replica in `to` becomes the primary; the old primary
        /// region a read region.
        async fn move_primary(&self, tenant: u64, to: &str) -> Result<(), ClusterError> {
            let members = self.members();
            for d in self.dbs.lock().iter_mut().filter(|d| d.id == tenant) {
                let Some(i) = d.replicas.iter().position(|c| c.region == to) else {
                    return Err(ClusterError::Refused {
                        what: "move".into(),
                        status: 409,
                        message: format!("no replica in {to}"),
                    });
                };
                let new = d.replicas.remove(i);
                let old_region = std::mem::replace(&mut d.primary_region, to.into());
                d.read_regions.retain(|r| r != to);
                d.read_regions.push(old_region.clone());
                if let Some(m) = members.iter().find(|m| m.machine == d.primary) {
                    d.replicas.push(Copy {
                        node: m.machine.clone(),
                        region: old_region,
                        offset: d.offset,
                    });
                }
                d.primary = new.node;
            }
            Ok(())
        }
    }

    async fn world() -> (Arc<FakeMachines>, Runner<FlyInfra, FakeCluster>) {
        let fake = FakeMachines::new("anykv-data", "tok");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/v1", l.local_addr().expect("addr"));
        tokio::spawn(fake.clone().serve(l));
        let mut api = Machines::new(&base, "anykv-data", "tok");
        api.retry = Retry {
            attempts: 3,
            first: Duration::from_millis(2),
            max: Duration::from_millis(5),
            detach: Duration::from_secs(5),
        };
        // The app as deployed: one node in iad.
        let vol = api
            .create_volume(&NewVolume {
                name: "anykv_data".into(),
                region: "iad".into(),
                size_gb: 20,
                require_unique_zone: true,
            })
            .await
            .expect("volume");
        let first = api
            .create_machine(
                &NewMachine {
                    name: "anykv-iad-1".into(),
                    region: "iad".into(),
                    config: json!({
                        "image": "registry.fly.io/anykv-data:deployment-7",
                        "env": { "RUST_LOG": "info" },
                        "guest": { "cpu_kind": "shared", "cpus": 2, "memory_mb": 1024 },
                        "mounts": [{ "volume": vol.id, "path": "/data" }],
                        "restart": { "policy": "always" },
                    }),
                },
                "deploy",
            )
            .await
            .expect("machine");
        let cluster = FakeCluster {
            fly: fake.clone(),
            dbs: Mutex::new(vec![Database {
                id: 1,
                name: "shop".into(),
                primary_region: "iad".into(),
                read_regions: vec!["cdg".into()],
                primary: first.id.clone(),
                offset: Some(1000),
                replicas: Vec::new(),
            }]),
            stuck: Mutex::new(None),
            syncing: Mutex::new(false),
            seen: Mutex::new(Vec::new()),
        };
        let infra = FlyInfra {
            api,
            volume_gb: 10,
            stop_timeout: Duration::from_secs(5),
        };
        let mut r = Runner::new(infra, cluster);
        r.poll = Duration::from_millis(5);
        r.wait_limit = Duration::from_secs(5);
        (fake, r)
    }

    /// [`world`] with a node added in cdg (where the database reads).
    async fn world_with_cdg() -> (Arc<FakeMachines>, Runner<FlyInfra, FakeCluster>) {
        let (fake, r) = world().await;
        let add = Change::Add {
            region: "cdg".into(),
            count: 1,
        };
        r.run(&add, &mut |_| {}).await.expect("add");
        (fake, r)
    }

    fn in_region(list: &[serde_json::Value], region: &str) -> Vec<serde_json::Value> {
        list.iter()
            .filter(|x| x["region"] == region)
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn adding_a_region_makes_volumes_and_nodes_from_the_apps_config_and_resumes() {
        let (fake, r) = world().await;
        let change = Change::Add {
            region: "cdg".into(),
            count: 2,
        };
        let steps = r.plan(&change).await.expect("plan");
        assert_eq!(
            render(&steps),
            "  1. create a volume in cdg (unique zone)\n  2. create a node in cdg on the new volume\n  3. create a volume in cdg (unique zone)\n  4. create a node in cdg on the new volume\n  5. wait until 2 node(s) of cdg are members and their copies caught up\n"
        );
        // The first run stops at its first node: once the volume is made,
        // the API fails every try of the next call.
        let mut made = false;
        let dropped = r
            .run(&change, &mut |e| {
                if matches!(e, Event::Made(_)) && !made {
                    made = true;
                    fake.fail_next(&[500, 500, 500]);
                }
            })
            .await;
        assert!(dropped.is_err(), "the first run must stop: {dropped:?}");
        assert_eq!(in_region(&fake.volumes(), "cdg").len(), 1);
        assert_eq!(in_region(&fake.machines(), "cdg").len(), 0);
        // Run again: the volume made is used, one more is made, both nodes
        // join and the database's copy in cdg has caught up.
        let mut events = Vec::new();
        r.run(&change, &mut |e| events.push(e))
            .await
            .expect("second run");
        let vols = in_region(&fake.volumes(), "cdg");
        let nodes = in_region(&fake.machines(), "cdg");
        assert_eq!((vols.len(), nodes.len()), (2, 2));
        assert_ne!(vols[0]["zone"], vols[1]["zone"], "unique zones");
        for n in &nodes {
            assert_eq!(
                n["config"]["image"],
                "registry.fly.io/anykv-data:deployment-7"
            );
            assert_eq!(n["config"]["guest"]["memory_mb"], 1024);
            let mounted = n["config"]["mounts"][0]["volume"].as_str().expect("mount");
            assert!(vols.iter().any(|v| v["id"] == mounted), "{n}");
            assert_eq!(n["config"]["mounts"][0]["path"], "/data");
            // The rest of the config as the app's machine has it.
            assert_eq!(n["region"], "cdg", "{n}");
            assert_eq!(n["config"]["env"]["RUST_LOG"], "info", "{n}");
            assert_eq!(n["config"]["restart"]["policy"], "always", "{n}");
        }
        assert!(
            vols.iter().all(|v| v["size_gb"] == 20),
            "size copied: {vols:?}"
        );
        let posts: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|q| q.method == "POST" && q.path.ends_with("/volumes"))
            .collect();
        assert!(posts.iter().all(|p| p.body["require_unique_zone"] == true));
        // The report: both nodes, members, on the volumes made; the
        // database's copy on one of them at its primary's offset.
        let out = r.outcome(&change).await.expect("outcome");
        assert_eq!(out.nodes.len(), 2, "{out}");
        for (n, member) in &out.nodes {
            assert_eq!(member, "alive", "{out}");
            let made: Vec<&str> = vols.iter().filter_map(|v| v["id"].as_str()).collect();
            assert!(
                n.volume.as_deref().is_some_and(|v| made.contains(&v)),
                "{out}"
            );
        }
        assert!(out.spare_volumes.is_empty(), "{out}");
        assert_eq!(out.copies.len(), 1, "{out}");
        let c = &out.copies[0];
        assert_eq!((c.database.as_str(), c.role), ("shop", "replica"), "{out}");
        assert_eq!(
            (c.offset, c.primary_offset),
            (Some(1000), Some(1000)),
            "{out}"
        );
        assert_eq!(c.primary_region, "iad", "{out}");
        assert_eq!(out.primaries_elsewhere, [("iad".to_string(), 1)], "{out}");
        let text = out.to_string();
        assert!(text.starts_with("cdg: 2 data node(s)\n"), "{text}");
        assert!(text.contains(" replica "), "{text}");
        // A third run has nothing left to do but check.
        let steps = r.plan(&change).await.expect("plan");
        assert_eq!(
            render(&steps),
            "  1. wait until 2 node(s) of cdg are members and their copies caught up\n"
        );
    }

    /// A node that joined is not enough: the add waits until the copies
    /// the region is to hold have caught up with their primary.
    #[tokio::test]
    async fn an_added_region_is_done_only_once_its_copies_caught_up() {
        let (_fake, mut r) = world().await;
        *r.cluster.syncing.lock() = true;
        r.wait_limit = Duration::from_millis(300);
        let add = Change::Add {
            region: "cdg".into(),
            count: 1,
        };
        match r.run(&add, &mut |_| {}).await {
            Err(RunError::Timeout { now, .. }) => {
                assert!(now.contains("catching up in cdg: shop"), "{now}")
            }
            other => panic!("expected the wait to time out: {other:?}"),
        }
        // The full sync ends: the same command, run again, is done.
        *r.cluster.syncing.lock() = false;
        r.run(&add, &mut |_| {}).await.expect("caught up");
    }

    /// A removal of cdg stopped after destroying the node's machine,
    /// before its volume (Fly failed the last calls). The cluster still
    /// remembers the node, down; a router of cdg that went down and a
    /// stopped machine count for nothing. Adding cdg then refuses the
    /// volume, naming it and the node and saying to finish the removal;
    /// after the removal is run again, the add makes a new volume and
    /// node, and an add interrupted once its volume is made takes that
    /// volume when run again.
    #[tokio::test]
    async fn an_add_after_an_unfinished_removal_refuses_the_left_volume() {
        let (fake, r) = world_with_cdg().await;
        let remove = Change::Remove {
            region: "cdg".into(),
            move_primaries_to: None,
        };
        let result = r
            .run(&remove, &mut |e| {
                if let Event::Step {
                    step: Step::DestroyVolume { .. },
                    ..
                } = e
                {
                    fake.fail_next(&[500, 500, 500]);
                }
            })
            .await;
        assert!(result.is_err(), "the removal stops at the volume");
        let left = in_region(&fake.volumes(), "cdg");
        assert_eq!(left.len(), 1, "the volume is still there");
        assert!(in_region(&fake.machines(), "cdg").is_empty());
        let vol = left[0]["id"].as_str().expect("id").to_string();
        // A router of cdg, down, and a stopped iad machine.
        r.cluster.seen.lock().push(Member {
            machine: "router-cdg".into(),
            region: "cdg".into(),
            state: "down".into(),
            incarnation: u64::MAX,
            meta: Some(super::super::cluster::MemberMeta {
                roles: vec!["router".into()],
            }),
        });
        let add = Change::Add {
            region: "cdg".into(),
            count: 1,
        };
        let iad = in_region(&fake.machines(), "iad")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        r.infra
            .api
            .stop_machine(&iad, Duration::from_secs(1))
            .await
            .expect("stop");
        let departed = r.inventory().await.expect("inventory").departed;
        assert_eq!(departed.len(), 1, "only the destroyed node: {departed:?}");
        r.infra.api.start_machine(&iad).await.expect("start");
        match r.run(&add, &mut |_| {}).await {
            Err(RunError::Plan(PlanError::StaleVolumes {
                volumes, serving, ..
            })) => {
                assert_eq!(volumes, [vol]);
                assert!(serving.is_empty(), "{serving:?}");
            }
            other => panic!("expected the add to refuse the volume: {other:?}"),
        }
        assert!(
            in_region(&fake.machines(), "cdg").is_empty(),
            "no machine made"
        );
        // Finish the removal; then the add goes ahead.
        r.run(&remove, &mut |_| {}).await.expect("removal finished");
        assert!(in_region(&fake.volumes(), "cdg").is_empty());
        // Later (the departed node's start is more than the minute the
        // rule gives clocks in the past), an add interrupted as its node
        // is made takes its own volume when run again.
        for m in r.cluster.seen.lock().iter_mut() {
            m.incarnation = m.incarnation.saturating_sub(120_000);
        }
        let _ = r
            .run(&add, &mut |e| {
                if let Event::Made(_) = e {
                    fake.fail_next(&[500, 500, 500]);
                }
            })
            .await;
        assert_eq!(in_region(&fake.volumes(), "cdg").len(), 1);
        assert!(in_region(&fake.machines(), "cdg").is_empty());
        r.run(&add, &mut |_| {}).await.expect("the add resumed");
        assert_eq!(
            in_region(&fake.volumes(), "cdg").len(),
            1,
            "no second volume"
        );
        assert_eq!(in_region(&fake.machines(), "cdg").len(), 1);
    }

    /// The run looks again just before it destroys a volume: a machine
    /// made meanwhile that mounts it (a deploy racing the removal) stops
    /// the run, and the volume stays.
    #[tokio::test]
    async fn a_volume_mounted_again_during_a_removal_is_not_destroyed() {
        let (fake, r) = world_with_cdg().await;
        let remove = Change::Remove {
            region: "cdg".into(),
            move_primaries_to: None,
        };
        let vol = in_region(&fake.volumes(), "cdg")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let mut raced = None;
        let result = r
            .run(&remove, &mut |e| {
                if let Event::Step {
                    step: Step::DestroyVolume { .. },
                    ..
                } = e
                {
                    raced = fake.mount_elsewhere(&vol);
                }
            })
            .await;
        assert!(raced.is_some(), "the run came to the volume");
        match result {
            Err(RunError::Unsafe { volume, why }) => {
                assert_eq!(volume, vol);
                assert!(why.contains("mounts"), "{why}");
            }
            other => panic!("expected the run to stop: {other:?}"),
        }
        assert_eq!(in_region(&fake.volumes(), "cdg").len(), 1, "volume kept");
        assert!(
            !fake
                .requests()
                .iter()
                .any(|q| q.method == "DELETE" && q.path.contains("/volumes/")),
            "no destroy was sent"
        );
    }

    #[tokio::test]
    async fn removing_a_region_drains_it_then_destroys_machines_before_volumes() {
        let (fake, r) = world_with_cdg().await;
        let remove = Change::Remove {
            region: "cdg".into(),
            move_primaries_to: None,
        };
        // As on Fly, the volume shows its destroyed machine for a while
        // (and its destroy is refused meanwhile): the run waits it out.
        fake.lag_detach(2);
        r.run(&remove, &mut |_| {}).await.expect("remove");
        assert!(in_region(&fake.machines(), "cdg").is_empty());
        assert!(in_region(&fake.volumes(), "cdg").is_empty());
        assert_eq!(in_region(&fake.machines(), "iad").len(), 1, "iad untouched");
        let out = r.outcome(&remove).await.expect("outcome");
        assert!(out.nodes.is_empty() && out.copies.is_empty(), "{out}");
        assert_eq!(
            out.to_string(),
            "cdg: no data node\ncdg: no database has a copy here\ndatabases with their primary elsewhere: iad 1\n"
        );
        let reqs = fake.requests();
        let refused = reqs
            .iter()
            .filter(|q| q.method == "DELETE" && q.path.contains("/volumes/"))
            .count();
        assert_eq!(
            refused, 3,
            "two refusals while Fly lagged, then the destroy"
        );
        let at = |pred: &dyn Fn(&crate::machines::fake::Recorded) -> bool| {
            reqs.iter().position(pred).expect("request made")
        };
        let stop = at(&|q| q.method == "POST" && q.path.contains("/stop"));
        let destroy_machine = at(&|q| q.method == "DELETE" && q.path.contains("/machines/"));
        let destroy_volume = at(&|q| q.method == "DELETE" && q.path.contains("/volumes/"));
        assert!(stop < destroy_machine && destroy_machine < destroy_volume);
    }

    /// The last look before a volume is destroyed: refused while a
    /// machine mounts it, or while a database has a copy on any node of
    /// its region (whatever the plan thought when it began); allowed once
    /// neither holds.
    #[tokio::test]
    async fn a_volume_is_destroyed_only_when_nothing_mounts_it_and_its_region_holds_no_copy() {
        let (fake, r) = world_with_cdg().await;
        let mounted = in_region(&fake.volumes(), "cdg")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let spare = r
            .infra
            .api
            .create_volume(&NewVolume {
                name: "anykv_data".into(),
                region: "cdg".into(),
                size_gb: 10,
                require_unique_zone: true,
            })
            .await
            .expect("a spare volume")
            .id;
        match r.check_volume_free(&mounted).await {
            Err(RunError::Unsafe { why, .. }) => assert!(why.contains("mounts"), "{why}"),
            other => panic!("a mounted volume: {other:?}"),
        }
        // Unmounted, but the database reads in cdg: its copy is on the
        // region's node.
        match r.check_volume_free(&spare).await {
            Err(RunError::Unsafe { why, .. }) => assert!(why.contains("shop"), "{why}"),
            other => panic!("a copy in the region: {other:?}"),
        }
        r.cluster
            .drop_read_region(1, "cdg")
            .await
            .expect("drop cdg");
        r.check_volume_free(&spare)
            .await
            .expect("no copy left in cdg: free");
        assert_eq!(in_region(&fake.volumes(), "cdg").len(), 2, "only checked");
    }

    #[tokio::test]
    async fn a_region_with_a_copy_that_stays_keeps_its_volume() {
        let (fake, r) = world_with_cdg().await;
        let node = in_region(&fake.machines(), "cdg")[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        *r.cluster.stuck.lock() = Some(node);
        let mut r = r;
        r.wait_limit = Duration::from_millis(200);
        let remove = Change::Remove {
            region: "cdg".into(),
            move_primaries_to: None,
        };
        match r.run(&remove, &mut |_| {}).await {
            Err(RunError::Timeout { now, .. }) => assert!(now.contains("shop"), "{now}"),
            other => panic!("expected the drain to time out: {other:?}"),
        }
        assert_eq!(in_region(&fake.machines(), "cdg").len(), 1, "node kept");
        assert_eq!(in_region(&fake.volumes(), "cdg").len(), 1, "volume kept");
    }

    #[tokio::test]
    async fn removing_the_primary_region_moves_the_primary_first() {
        let (fake, r) = world_with_cdg().await;
        let remove = Change::Remove {
            region: "iad".into(),
            move_primaries_to: Some("cdg".into()),
        };
        let mut steps = Vec::new();
        r.run(&remove, &mut |e| {
            if let Event::Step { step, .. } = e {
                steps.push(step);
            }
        })
        .await
        .expect("remove");
        assert!(matches!(&steps[0], Step::MovePrimary { tenant: 1, to } if to == "cdg"));
        let cdg = in_region(&fake.machines(), "cdg");
        let db = r.cluster.dbs.lock()[0].clone();
        assert_eq!(db.primary, cdg[0]["id"].as_str().expect("id"));
        assert_eq!(db.primary_region, "cdg");
        assert!(db.read_regions.is_empty(), "{db:?}");
        assert!(in_region(&fake.machines(), "iad").is_empty());
        assert!(in_region(&fake.volumes(), "iad").is_empty());
    }

    /// A target region the database does not read in yet is made one
    /// first (the runner adds it, its replica catches up), then the
    /// primary goes there.
    #[tokio::test]
    async fn a_move_to_a_region_the_database_does_not_read_in_makes_it_one_first() {
        let (fake, r) = world_with_cdg().await;
        let add = Change::Add {
            region: "syd".into(),
            count: 1,
        };
        r.run(&add, &mut |_| {}).await.expect("add syd");
        let reads = r.cluster.dbs.lock()[0].read_regions.clone();
        assert!(!reads.iter().any(|x| x == "syd"), "{reads:?}");
        let remove = Change::Remove {
            region: "iad".into(),
            move_primaries_to: Some("syd".into()),
        };
        r.run(&remove, &mut |_| {}).await.expect("remove");
        let syd = in_region(&fake.machines(), "syd");
        let db = r.cluster.dbs.lock()[0].clone();
        assert_eq!(db.primary, syd[0]["id"].as_str().expect("id"));
        assert_eq!(db.primary_region, "syd");
        assert!(!db.read_regions.iter().any(|x| x == "iad"), "{db:?}");
        assert!(in_region(&fake.machines(), "iad").is_empty());
        assert!(in_region(&fake.volumes(), "iad").is_empty());
    }

    #[tokio::test]
    async fn a_primary_region_is_not_removed_without_somewhere_to_go() {
        let (_fake, r) = world().await;
        let remove = Change::Remove {
            region: "iad".into(),
            move_primaries_to: None,
        };
        match r.run(&remove, &mut |_| {}).await {
            Err(RunError::Plan(PlanError::PrimaryRegion { tenants, .. })) => {
                assert_eq!(tenants, vec!["shop".to_string()])
            }
            other => panic!("expected a refusal naming the database: {other:?}"),
        }
    }
}
