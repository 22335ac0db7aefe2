//! The demo's live status: every node, its process, what gossip says of
//! it, its role for the demo database, how far its copy is behind and the
//! commands it serves — a table redrawn in place on a terminal, plain
//! lines (when something changed) otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::world::{http, World};

/// One node's row.
pub struct Row {
    pub name: String,
    pub region: String,
    pub pid: u32,
    pub running: bool,
    /// Gossip's state of it (alive, suspect, down), as another node sees it.
    pub gossip: String,
    pub role: String,
    pub offset: Option<u64>,
    pub behind: Option<u64>,
    pub lag_ms: Option<i64>,
    pub ops: Option<u64>,
}

/// The world as the demo sees it now.
pub struct Status {
    pub epoch: u64,
    pub rows: Vec<Row>,
}

impl Status {
    /// Reads the view of the first node that answers, and each copy's
    /// live figures (`/admin/tenants/{id}/live`).
    pub fn read(w: &mut World, id: u64) -> Status {
        let names: Vec<String> = w.file.nodes.iter().map(|n| n.name.clone()).collect();
        let running: BTreeMap<String, bool> =
            names.iter().map(|n| (n.clone(), w.running(n))).collect();
        let mut view = names
            .iter()
            .filter(|n| running.get(*n).copied().unwrap_or(false))
            .find_map(|n| w.cluster_view(n));
        // The primary's own view has its replicas' offsets and lag (a
        // node without a copy does not follow them).
        let primary = view.as_ref().and_then(|v| {
            v["tenants"].as_array()?.iter().find(|t| t["id"] == id)?["primary"]
                .as_str()
                .map(str::to_string)
        });
        if let Some(p) = primary.filter(|p| running.get(p).copied().unwrap_or(false)) {
            if let Some(v) = w.cluster_view(&p) {
                view = Some(v);
            }
        }
        let mut gossip = BTreeMap::new();
        let mut roles = BTreeMap::new();
        let mut epoch = 0;
        let mut primary_offset = None;
        if let Some(v) = &view {
            let me = v["me"].as_str().unwrap_or_default().to_string();
            gossip.insert(me, "alive".to_string());
            for m in v["members"].as_array().into_iter().flatten() {
                if let (Some(name), Some(state)) = (m["machine"].as_str(), m["state"].as_str()) {
                    gossip.insert(name.to_string(), state.to_string());
                }
            }
            if let Some(t) = v["tenants"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["id"] == id))
            {
                epoch = t["epoch"].as_u64().unwrap_or(0);
                primary_offset = t["offset"].as_u64();
                if let Some(p) = t["primary"].as_str() {
                    roles.insert(p.to_string(), ("primary".to_string(), None));
                }
                let standby = t["standby"].as_str().unwrap_or_default();
                let in_sync = t["in_sync"].as_str().unwrap_or_default();
                for r in t["replicas"].as_array().into_iter().flatten() {
                    let node = r["node"].as_str().unwrap_or_default();
                    let role = if node == standby && node == in_sync {
                        "standby"
                    } else if node == standby {
                        "standby…"
                    } else {
                        "replica"
                    };
                    roles.insert(node.to_string(), (role.to_string(), Some(r.clone())));
                }
            }
        }
        let token = w.admin_token().to_string();
        // Each copy's own figures: its offset and commands per second.
        let live: BTreeMap<String, serde_json::Value> = w
            .file
            .nodes
            .iter()
            .filter(|n| {
                running.get(&n.name).copied().unwrap_or(false) && roles.contains_key(&n.name)
            })
            .filter_map(|n| {
                let (code, body) = http(
                    n.http,
                    "GET",
                    &format!("/admin/tenants/{id}/live"),
                    &token,
                    "",
                )?;
                let v = serde_json::from_str(&body).ok()?;
                (code == 200).then(|| (n.name.clone(), v))
            })
            .collect();
        let primary_offset = roles
            .iter()
            .find(|(_, (role, _))| role == "primary")
            .and_then(|(name, _)| live.get(name))
            .and_then(|l| l["offset"].as_u64())
            .or(primary_offset);
        let rows = w
            .file
            .nodes
            .iter()
            .map(|n| {
                let up = running.get(&n.name).copied().unwrap_or(false);
                let (role, replica) = roles
                    .get(&n.name)
                    .cloned()
                    .unwrap_or_else(|| ("-".to_string(), None));
                let live = live.get(&n.name);
                // A replica's offset as the cluster view has it (what it
                // processed of the primary's stream); the primary's own.
                let offset = match &replica {
                    Some(r) => r["offset"].as_u64(),
                    None if role == "primary" => primary_offset,
                    None => None,
                };
                Row {
                    name: n.name.clone(),
                    region: n.region.clone(),
                    pid: n.pid,
                    running: up,
                    gossip: gossip
                        .get(&n.name)
                        .cloned()
                        .unwrap_or_else(|| "?".to_string()),
                    behind: match (primary_offset, replica.as_ref().and(offset)) {
                        (Some(p), Some(o)) => Some(p.saturating_sub(o)),
                        _ => None,
                    },
                    lag_ms: replica.as_ref().and_then(|r| r["lag_ms"].as_i64()),
                    offset,
                    ops: live.and_then(|l| l["ops_per_sec"].as_u64()),
                    role,
                }
            })
            .collect();
        Status { epoch, rows }
    }

    /// Roles and states (and whether the offsets are known yet): what a
    /// plain log reports when it changes.
    pub fn shape(&self) -> String {
        self.rows
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}:{}:{};",
                    r.name,
                    r.running,
                    r.gossip,
                    r.role,
                    r.offset.is_some()
                )
            })
            .collect::<String>()
            + &self.epoch.to_string()
    }

    /// The table: under 80 columns, so a terminal redraws it in place
    /// without wrapping.
    pub fn table(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let mut out = format!(
            "{:<4} {:<6} {:>7} {:<14} {:<8} {:>10} {:>8} {:>7} {:>6}\n",
            "NODE", "REGION", "PID", "PROCESS/GOSSIP", "ROLE", "OFFSET", "BEHIND", "LAG", "OPS/S"
        );
        for r in &self.rows {
            let state = format!("{}/{}", if r.running { "up" } else { "exited" }, r.gossip);
            out.push_str(&format!(
                "{:<4} {:<6} {:>7} {:<14} {:<8} {:>10} {:>8} {:>7} {:>6}\n",
                r.name,
                r.region,
                r.pid,
                state,
                r.role,
                opt(r.offset),
                r.behind.map_or("-".to_string(), |b| format!("{b} B")),
                r.lag_ms.map_or("-".to_string(), |l| format!("{l} ms")),
                opt(r.ops),
            ));
        }
        out.push_str(&format!(
            "demo database: epoch {} (standby… = still syncing; - = no copy on that node)\n",
            self.epoch
        ));
        out
    }
}

/// Where the status goes: redrawn in place on a terminal; otherwise
/// printed when the roles or states change, and every 30 s.
pub struct Screen {
    terminal: bool,
    lines: usize,
    last_shape: String,
    last_print: Option<Instant>,
}

impl Screen {
    pub fn new(terminal: bool) -> Screen {
        Screen {
            terminal,
            lines: 0,
            last_shape: String::new(),
            last_print: None,
        }
    }

    pub fn show(&mut self, s: &Status) {
        let text = s.table();
        let mut out = std::io::stdout().lock();
        if self.terminal {
            if self.lines > 0 {
                // Up to the table's first line, and clear to the end.
                let _ = write!(out, "\x1b[{}A\x1b[J", self.lines);
            }
            let _ = write!(out, "{text}");
            self.lines = text.lines().count();
        } else {
            let shape = s.shape();
            let due = self
                .last_print
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
            if shape != self.last_shape || due {
                let _ = writeln!(out, "{text}");
                self.last_shape = shape;
                self.last_print = Some(Instant::now());
            }
        }
        let _ = out.flush();
    }
}
