//! The plan's machines on Fly: the data nodes are the app's machines
//! that mount a volume at `/data`; new ones copy an existing node's
//! config (image, env, guest size, services, checks, metrics), so they
//! run what the app runs now.

use std::time::Duration;

use serde_json::json;

use super::run::{Infra, RunError};
use super::{Node, Vol};
use crate::machines::{Machine, Machines, MachinesError, NewMachine, NewVolume};

/// Where a data node mounts its volume (fly.toml's `[[mounts]]`).
pub const DATA_PATH: &str = "/data";
/// The data nodes' volume name (fly.toml's `source`).
pub const VOLUME_NAME: &str = "anykv_data";

/// Fly's Machines API as the plan's [`Infra`].
pub struct FlyInfra {
    pub api: Machines,
    /// Size of a new volume when no existing one gives it.
    pub volume_gb: u64,
    /// How long a stopping node gets to hand its primaries over
    /// (fly.toml's `kill_timeout`).
    pub stop_timeout: Duration,
}

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infra(e.to_string())
}

impl FlyInfra {
    /// The app's machines that are not destroyed (nor being destroyed).
    async fn live_machines(&self) -> Result<Vec<Machine>, RunError> {
        Ok(self
            .api
            .list_machines()
            .await
            .map_err(infra)?
            .into_iter()
            .filter(|m| !m.gone())
            .collect())
    }

    async fn data_machines(&self) -> Result<Vec<Machine>, RunError> {
        let mut machines = self.live_machines().await?;
        machines.retain(|m| m.volume_at(DATA_PATH).is_some());
        Ok(machines)
    }
}

impl Infra for FlyInfra {
    async fn inventory(&self) -> Result<(Vec<Node>, Vec<Vol>), RunError> {
        let live = self.live_machines().await?;
        let machines: Vec<&Machine> = live
            .iter()
            .filter(|m| m.volume_at(DATA_PATH).is_some())
            .collect();
        let nodes = machines
            .iter()
            .map(|m| Node {
                id: m.id.clone(),
                region: m.region.clone(),
                volume: m.volume_at(DATA_PATH).map(str::to_string),
                state: m.state.clone(),
            })
            .collect();
        let volumes = self
            .api
            .list_volumes()
            .await
            .map_err(infra)?
            .into_iter()
            .filter(|v| {
                v.name == VOLUME_NAME && v.state != "destroyed" && v.state != "pending_destroy"
            })
            .map(|v| Vol {
                created_ms: crate::metering::unix_ms_of(&v.created_at),
                id: v.id,
                region: v.region,
                // Fly's `attached_machine_id` lags a machine's destroy by
                // a few seconds: a machine that is gone mounts nothing.
                attached: v
                    .attached_machine_id
                    .filter(|m| live.iter().any(|x| &x.id == m)),
            })
            .collect();
        Ok((nodes, volumes))
    }

    async fn create_volume(&self, region: &str) -> Result<String, RunError> {
        let size_gb = self
            .api
            .list_volumes()
            .await
            .map_err(infra)?
            .iter()
            .filter(|v| v.name == VOLUME_NAME)
            .map(|v| v.size_gb)
            .max()
            .unwrap_or(self.volume_gb);
        let v = self
            .api
            .create_volume(&NewVolume {
                name: VOLUME_NAME.into(),
                region: region.into(),
                size_gb,
                require_unique_zone: true,
            })
            .await
            .map_err(|e| match e {
                // Refused as asked (not a limit or an outage): a region
                // Fly does not have, or one the organization may not use.
                MachinesError::Api { status, message }
                    if (400..500).contains(&status) && status != 408 && status != 429 =>
                {
                    infra(format!(
                        "Fly refused a volume in {region} (HTTP {status}: {message}); is {region} a Fly region? `fly platform regions` lists them"
                    ))
                }
                e => infra(e),
            })?;
        Ok(v.id)
    }

    async fn create_node(&self, region: &str, volume: &str) -> Result<String, RunError> {
        let machines = self.data_machines().await?;
        // A node of the region if there is one, else any: its config is
        // what the app runs now.
        let Some(template) = machines
            .iter()
            .find(|m| m.region == region)
            .or_else(|| machines.first())
        else {
            return Err(RunError::Infra(
                "the app has no data node to copy the config of; deploy it first (fly deploy)"
                    .into(),
            ));
        };
        let mut config = template.config.clone();
        config["mounts"] = json!([{ "volume": volume, "path": DATA_PATH }]);
        if let Some(meta) = config["metadata"].as_object_mut() {
            meta.remove(crate::machines::MARKER);
        }
        // The volume names the machine and marks its create: one machine
        // per volume, even when a create is retried.
        let m = self
            .api
            .create_machine(
                &NewMachine {
                    name: format!("anykv-{region}-{}", volume.trim_start_matches("vol_")),
                    region: region.into(),
                    config,
                },
                volume,
            )
            .await
            .map_err(infra)?;
        Ok(m.id)
    }

    async fn start_node(&self, node: &str) -> Result<(), RunError> {
        self.api.start_machine(node).await.map_err(infra)
    }

    async fn stop_node(&self, node: &str) -> Result<(), RunError> {
        let m = self.api.get_machine(node).await.map_err(infra)?;
        if m.state == "stopped" || m.state == "destroyed" {
            return Ok(());
        }
        self.api
            .stop_machine(node, self.stop_timeout)
            .await
            .map_err(infra)?;
        self.api
            .wait_machine(
                node,
                &m.instance_id,
                "stopped",
                self.stop_timeout + Duration::from_secs(30),
            )
            .await
            .map_err(infra)
    }

    async fn destroy_node(&self, node: &str) -> Result<(), RunError> {
        self.api.destroy_machine(node, false).await.map_err(infra)
    }

    async fn destroy_volume(&self, volume: &str) -> Result<(), RunError> {
        self.api.destroy_volume(volume).await.map_err(infra)
    }
}
