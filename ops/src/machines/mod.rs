//! The Fly Machines API (`https://api.machines.dev/v1`), as anykv's
//! region scaling uses it: volumes and machines of the app the data nodes
//! run as (docs/DEPLOY.md, Scaling regions).
//!
//! [`Machines`] is the client. Every call is bounded and retried the way
//! Fly's own tools retry: reads (list, get, wait) on a transport error,
//! 408, 429 and 5xx, with exponential backoff; a create that failed after
//! it may have reached Fly (a 5xx, a timeout) is reconciled before it is
//! sent again — the machine is looked up by the marker it was given in
//! its metadata, a volume by being a new unattached volume of that name in
//! that region — because Fly's creates take no idempotency key and a retry
//! could make a second one. A 429 is retried as it is (nothing was done).
//!
//! [`fake`] is Fly's side for tests: the same endpoints, the fields Fly
//! requires, its status codes and error bodies.

pub mod fake;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::fetch::{Answer, Client, FetchError};

/// Fly's public Machines API.
pub const API: &str = "https://api.machines.dev/v1";

/// The metadata key a created machine carries its request's marker in.
pub const MARKER: &str = "anykv_request";

/// Why a Machines API call failed.
#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    #[error("Machines API: {0}")]
    Http(#[from] FetchError),
    /// Fly answered with an error (its `error` or `message` field).
    #[error("Machines API answered HTTP {status}: {message}")]
    Api { status: u16, message: String },
    #[error("Machines API: unexpected answer: {0}")]
    Decode(String),
}

impl MachinesError {
    /// Worth another try: nothing says the request cannot succeed later.
    fn transient(&self) -> bool {
        match self {
            MachinesError::Http(_) => true,
            MachinesError::Api { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            MachinesError::Decode(_) => false,
        }
    }

    /// Fly surely did nothing (rate limited, or refused before acting). A
    /// 408 is not such a refusal: the request timed out and may have
    /// acted, so a create is looked for before it is sent again.
    fn not_done(&self) -> bool {
        matches!(self, MachinesError::Api { status, .. } if (400..500).contains(status) && *status != 408)
    }
}

/// A volume, as Fly describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Volume {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub state: String,
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub size_gb: u64,
    #[serde(default)]
    pub attached_machine_id: Option<String>,
    #[serde(default)]
    pub created_at: String,
}

/// A machine, as Fly describes it (its `config` kept whole: an update
/// must send it back whole).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: String,
    pub region: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: String,
    #[serde(default)]
    pub config: Value,
}

impl Machine {
    /// Destroyed, or being destroyed (Fly's transient state).
    pub fn gone(&self) -> bool {
        self.state == "destroyed" || self.state == "destroying"
    }

    /// The volume mounted at `path`, if any.
    pub fn volume_at(&self, path: &str) -> Option<&str> {
        self.config["mounts"]
            .as_array()?
            .iter()
            .find(|m| m["path"] == path)?["volume"]
            .as_str()
    }

    /// The image it runs (`config.image`), which new machines copy.
    pub fn image(&self) -> Option<&str> {
        self.config["image"].as_str()
    }
}

/// A volume to create.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub name: String,
    pub region: String,
    pub size_gb: u64,
    /// In another hardware zone than the app's other volumes of the name
    /// (Fly's default; a node's standby must not share its host's fate).
    pub require_unique_zone: bool,
}

/// A machine to create: `config` as Fly takes it (image, env, guest,
/// mounts, restart, services, metadata...).
#[derive(Debug, Clone)]
pub struct NewMachine {
    pub name: String,
    pub region: String,
    pub config: Value,
}

/// Retry policy: attempts and backoff between them.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
    /// How long a volume's destroy waits for Fly to see that its machine
    /// is gone (its `attached_machine_id` lags a destroy by a few seconds,
    /// and the destroy is refused with 412 meanwhile).
    pub detach: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
            detach: Duration::from_secs(60),
        }
    }
}

impl Retry {
    fn delay(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
    }
}

/// The Machines API of one app.
pub struct Machines {
    http: Client,
    base: String,
    app: String,
    auth: String,
    pub retry: Retry,
}

impl Machines {
    /// `base`: [`API`], or a fake's. `token`: `FLY_API_TOKEN` (a macaroon
    /// given as `FlyV1 ...` is sent as it is, any other as a bearer token).
    pub fn new(base: &str, app: &str, token: &str) -> Machines {
        let auth = if token.starts_with("FlyV1 ") {
            token.to_string()
        } else {
            format!("Bearer {token}")
        };
        Machines {
            http: Client::new(Duration::from_secs(30)),
            base: base.trim_end_matches('/').to_string(),
            app: app.to_string(),
            auth,
            retry: Retry::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/apps/{}/{}", self.base, self.app, path)
    }

    /// One request; an error answer as [`MachinesError::Api`].
    async fn once(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, MachinesError> {
        let url = self.url(path);
        let mut headers = vec![("authorization", self.auth.as_str())];
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let answer = self.http.send(method, &url, &headers, bytes).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["error"]
                    .as_str()
                    .or_else(|| v["message"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.trim().to_string());
        Err(MachinesError::Api {
            status: answer.status,
            message,
        })
    }

    /// A request that changes nothing, or may safely be repeated: retried
    /// while the failure is transient.
    async fn retried(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, MachinesError> {
        let mut attempt = 0;
        loop {
            match self.once(method, path, body).await {
                Err(e) if e.transient() && attempt + 1 < self.retry.attempts => {
                    tracing::debug!(method, path, "Machines API: {e}; retrying");
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, MachinesError> {
        serde_json::from_slice(&a.body).map_err(|e| MachinesError::Decode(e.to_string()))
    }

    pub async fn list_volumes(&self) -> Result<Vec<Volume>, MachinesError> {
        let a = self.retried("GET", "volumes", None).await?;
        Self::decode(&a)
    }

    pub async fn list_machines(&self) -> Result<Vec<Machine>, MachinesError> {
        let a = self.retried("GET", "machines", None).await?;
        Self::decode(&a)
    }

    pub async fn get_machine(&self, id: &str) -> Result<Machine, MachinesError> {
        let a = self.retried("GET", &format!("machines/{id}"), None).await?;
        Self::decode(&a)
    }

    /// Creates a volume. After a failure that may have created it, a new
    /// unattached volume of the name in the region (one not there before)
    /// is taken as this one rather than making another.
    pub async fn create_volume(&self, v: &NewVolume) -> Result<Volume, MachinesError> {
        let before: Vec<String> = self
            .list_volumes()
            .await?
            .into_iter()
            .map(|v| v.id)
            .collect();
        let body = json!({
            "name": v.name,
            "region": v.region,
            "size_gb": v.size_gb,
            "require_unique_zone": v.require_unique_zone,
        });
        self.create("volumes", &body, || async {
            let now = self.list_volumes().await?;
            Ok(now.into_iter().find(|x| {
                x.name == v.name
                    && x.region == v.region
                    && x.attached_machine_id.as_deref().is_none_or(str::is_empty)
                    && !before.contains(&x.id)
            }))
        })
        .await
    }

    /// Creates a machine, marked with `marker` in its metadata so that a
    /// failure that may have created it is resolved by looking for it.
    pub async fn create_machine(
        &self,
        m: &NewMachine,
        marker: &str,
    ) -> Result<Machine, MachinesError> {
        let mut config = m.config.clone();
        if !config["metadata"].is_object() {
            config["metadata"] = json!({});
        }
        config["metadata"][MARKER] = json!(marker);
        let body = json!({ "name": m.name, "region": m.region, "config": config });
        self.create("machines", &body, || async {
            let now = self.list_machines().await?;
            Ok(now
                .into_iter()
                .find(|x| x.config["metadata"][MARKER] == marker))
        })
        .await
    }

    /// POSTs `body` to `path`; after a failure that may have acted, asks
    /// `existing` whether the thing was made before trying again.
    async fn create<T, F, Fut>(
        &self,
        path: &str,
        body: &Value,
        existing: F,
    ) -> Result<T, MachinesError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, MachinesError>>,
    {
        let mut attempt = 0;
        loop {
            match self.once("POST", path, Some(body)).await {
                Ok(a) => return Self::decode(&a),
                Err(e) if e.transient() && attempt + 1 < self.retry.attempts => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                    if !e.not_done() {
                        if let Some(made) = existing().await? {
                            tracing::info!(
                                path,
                                "Machines API: the create that failed ({e}) was done"
                            );
                            return Ok(made);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a stopped machine.
    pub async fn start_machine(&self, id: &str) -> Result<(), MachinesError> {
        self.retried("POST", &format!("machines/{id}/start"), None)
            .await
            .map(drop)
    }

    /// Stops a machine (SIGTERM: an anykv node hands its primaries over
    /// first), giving it `timeout` before Fly kills it.
    pub async fn stop_machine(&self, id: &str, timeout: Duration) -> Result<(), MachinesError> {
        let body = json!({ "signal": "SIGTERM", "timeout": format!("{}s", timeout.as_secs()) });
        self.retried("POST", &format!("machines/{id}/stop"), Some(&body))
            .await
            .map(drop)
    }

    /// Waits until machine `id` is in `state` (`started`, `stopped`,
    /// `destroyed`), up to `limit`: Fly's wait answers within 60 s (408
    /// when the state did not come), so it is asked again until then.
    pub async fn wait_machine(
        &self,
        id: &str,
        instance_id: &str,
        state: &str,
        limit: Duration,
    ) -> Result<(), MachinesError> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let secs = left.as_secs().clamp(1, 60);
            let path = format!(
                "machines/{id}/wait?state={state}&timeout={secs}&instance_id={instance_id}"
            );
            match self.once("GET", &path, None).await {
                Ok(_) => return Ok(()),
                Err(e) if e.transient() && tokio::time::Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Destroys machine `id` (`force`: even while it runs). Gone already
    /// counts as done.
    pub async fn destroy_machine(&self, id: &str, force: bool) -> Result<(), MachinesError> {
        let path = format!("machines/{id}{}", if force { "?force=true" } else { "" });
        match self.retried("DELETE", &path, None).await {
            Err(MachinesError::Api { status: 404, .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Destroys volume `id`. Gone already counts as done. Fly refuses
    /// (412) while a machine has it mounted: then, if that machine still
    /// exists, the refusal is the answer (a volume in use is never
    /// destroyed); if it is destroyed, Fly has not caught up with it yet
    /// (`attached_machine_id` lags a destroy) and the destroy is asked
    /// again, every second for up to [`Retry::detach`].
    pub async fn destroy_volume(&self, id: &str) -> Result<(), MachinesError> {
        let path = format!("volumes/{id}");
        let deadline = tokio::time::Instant::now() + self.retry.detach;
        loop {
            let refused = match self.retried("DELETE", &path, None).await {
                Err(MachinesError::Api { status: 404, .. }) | Ok(_) => return Ok(()),
                Err(e @ MachinesError::Api { status: 412, .. }) => e,
                Err(e) => return Err(e),
            };
            let attached = match self.retried("GET", &path, None).await {
                Err(MachinesError::Api { status: 404, .. }) => return Ok(()),
                a => Self::decode::<Volume>(&a?)?.attached_machine_id,
            };
            let machine_gone = match attached.filter(|m| !m.is_empty()) {
                None => true,
                Some(m) => match self.get_machine(&m).await {
                    Err(MachinesError::Api { status: 404, .. }) => true,
                    Ok(m) => m.gone(),
                    Err(e) => return Err(e),
                },
            };
            if !machine_gone || tokio::time::Instant::now() >= deadline {
                return Err(refused);
            }
            tracing::debug!(
                volume = id,
                "its machine is destroyed but Fly still has it mounted; asking again"
            );
            let pause =
                (self.retry.detach / 20).clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMachines;
    use super::*;
    use std::sync::Arc;

    const APP: &str = "anykv-test";

    async fn start() -> (Arc<FakeMachines>, Machines, String) {
        start_with("fly-token").await
    }

    /// [`start`] with the app's token `token`.
    async fn start_with(token: &str) -> (Arc<FakeMachines>, Machines, String) {
        let fake = FakeMachines::new(APP, token);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/v1", l.local_addr().expect("addr"));
        tokio::spawn(fake.clone().serve(l));
        let mut api = Machines::new(&base, APP, token);
        api.retry = Retry {
            attempts: 6,
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
            detach: Duration::from_millis(50),
        };
        (fake, api, base)
    }

    fn data_volume(region: &str) -> NewVolume {
        NewVolume {
            name: "anykv_data".into(),
            region: region.into(),
            size_gb: 10,
            require_unique_zone: true,
        }
    }

    fn node(region: &str, volume: &str) -> NewMachine {
        NewMachine {
            name: format!("anykv-{region}"),
            region: region.into(),
            config: json!({
                "image": "registry.fly.io/anykv:deployment-1",
                "env": { "RUST_LOG": "info" },
                "guest": { "cpu_kind": "shared", "cpus": 2, "memory_mb": 1024 },
                "mounts": [{ "volume": volume, "path": "/data" }],
                "restart": { "policy": "always" },
            }),
        }
    }

    #[tokio::test]
    async fn a_node_is_made_and_unmade_with_the_requests_fly_documents() {
        let (fake, api, _) = start().await;
        let vol = api
            .create_volume(&data_volume("cdg"))
            .await
            .expect("volume");
        let other = api
            .create_volume(&data_volume("cdg"))
            .await
            .expect("volume");
        assert_ne!(vol.zone, other.zone, "unique zones");
        let m = api
            .create_machine(&node("cdg", &vol.id), "plan-1/cdg/1")
            .await
            .expect("machine");
        assert_eq!(m.volume_at("/data"), Some(vol.id.as_str()));
        assert_eq!(m.image(), Some("registry.fly.io/anykv:deployment-1"));
        assert_eq!(m.state, "started");
        let reqs = fake.requests();
        let post = |suffix: &str| {
            reqs.iter()
                .find(|r| r.method == "POST" && r.path.ends_with(suffix))
                .unwrap_or_else(|| panic!("no POST {suffix}: {reqs:?}"))
                .body
                .clone()
        };
        assert_eq!(
            post("/volumes"),
            json!({ "name": "anykv_data", "region": "cdg", "size_gb": 10, "require_unique_zone": true })
        );
        let created = post("/machines");
        assert_eq!(created["region"], "cdg");
        assert_eq!(
            created["config"]["mounts"],
            json!([{ "volume": vol.id, "path": "/data" }])
        );
        assert_eq!(created["config"]["restart"]["policy"], "always");
        assert_eq!(created["config"]["env"]["RUST_LOG"], "info");
        assert_eq!(created["config"]["metadata"][MARKER], "plan-1/cdg/1");
        // A mounted volume is not destroyed (Fly refuses): the machine
        // goes first, stopped.
        match api.destroy_volume(&vol.id).await {
            Err(MachinesError::Api {
                status: 412,
                message,
            }) => {
                assert!(message.contains("bound to machine"), "{message}")
            }
            other => panic!("destroying a mounted volume: {other:?}"),
        }
        assert!(matches!(
            api.destroy_machine(&m.id, false).await,
            Err(MachinesError::Api { status: 412, .. })
        ));
        api.stop_machine(&m.id, Duration::from_secs(10))
            .await
            .expect("stop");
        api.wait_machine(&m.id, &m.instance_id, "stopped", Duration::from_secs(5))
            .await
            .expect("stopped");
        api.destroy_machine(&m.id, false).await.expect("destroy");
        api.destroy_volume(&vol.id).await.expect("volume destroyed");
        // Again: gone counts as done.
        api.destroy_machine(&m.id, false).await.expect("again");
        api.destroy_volume(&vol.id).await.expect("again");
        assert!(fake.machines().is_empty());
        assert_eq!(fake.volumes().len(), 1);
        let stop = reqs_after(&fake, "/stop");
        assert_eq!(stop["signal"], "SIGTERM");
    }

    fn reqs_after(fake: &FakeMachines, suffix: &str) -> Value {
        fake.requests()
            .into_iter()
            .find(|r| r.path.ends_with(suffix))
            .map(|r| r.body)
            .unwrap_or(Value::Null)
    }

    /// The fake refuses what Fly refuses, with Fly's status codes and
    /// error bodies, and makes nothing then: the tests above pass because
    /// the client sends what Fly requires, not because the fake takes
    /// anything.
    #[tokio::test]
    async fn the_fake_refuses_what_fly_refuses() {
        let (fake, api, base) = start().await;
        let api = &api;
        let status = |r: Result<Answer, MachinesError>| match r {
            Err(MachinesError::Api { status, message }) => {
                assert!(!message.is_empty(), "Fly says why");
                status
            }
            other => panic!("not refused: {other:?}"),
        };
        let vol = |body: Value| async move { api.once("POST", "volumes", Some(&body)).await };
        assert_eq!(status(vol(json!({"region": "iad"})).await), 400, "no name");
        assert_eq!(
            status(vol(json!({"name": "anykv_data"})).await),
            400,
            "no region"
        );
        assert_eq!(
            status(vol(json!({"name": "anykv_data", "region": "iad", "size_gb": 0})).await),
            422
        );
        assert!(fake.volumes().is_empty(), "nothing made");
        let v = api
            .create_volume(&data_volume("iad"))
            .await
            .expect("volume");
        let mut good = json!({"name": "n", "region": "iad", "config": node("iad", &v.id).config});
        let machine = |body: Value| async move { api.once("POST", "machines", Some(&body)).await };
        let mut no_image = good.clone();
        no_image["config"]["image"] = Value::Null;
        assert_eq!(status(machine(no_image).await), 400);
        let mut bad_policy = good.clone();
        bad_policy["config"]["restart"]["policy"] = json!("sometimes");
        assert_eq!(status(machine(bad_policy).await), 400);
        let mut elsewhere = good.clone();
        elsewhere["region"] = json!("cdg");
        assert_eq!(
            status(machine(elsewhere).await),
            400,
            "a volume of another region"
        );
        let mut no_path = good.clone();
        no_path["config"]["mounts"][0]["path"] = Value::Null;
        assert_eq!(status(machine(no_path).await), 400);
        let mut missing = good.clone();
        missing["config"]["mounts"][0]["volume"] = json!("vol_nosuch");
        assert_eq!(status(machine(missing).await), 404);
        assert!(fake.machines().is_empty(), "nothing made");
        // The volume mounted: a second machine on it, and its destroy, are
        // refused (412) until its machine is gone.
        api.once("POST", "machines", Some(&good))
            .await
            .expect("a machine");
        good["name"] = json!("n2");
        assert_eq!(status(machine(good).await), 412);
        assert_eq!(
            status(api.once("DELETE", &format!("volumes/{}", v.id), None).await),
            412
        );
        assert_eq!(fake.machines().len(), 1);
        assert_eq!(fake.volumes().len(), 1);
        // No token, no answer.
        let stranger = Machines::new(&base, APP, "");
        assert!(matches!(
            stranger.list_machines().await,
            Err(MachinesError::Api { status: 401, .. })
        ));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_a_lost_create_is_made_once() {
        let (fake, api, base) = start().await;
        fake.fail_next(&[503, 429, 502]);
        assert!(api
            .list_machines()
            .await
            .expect("list after retries")
            .is_empty());
        // The answer of a create is lost: one machine, found by its marker.
        let vol = api
            .create_volume(&data_volume("iad"))
            .await
            .expect("volume");
        fake.fail_after_acting(&[503]);
        let m = api
            .create_machine(&node("iad", &vol.id), "plan-2/iad/1")
            .await
            .expect("machine");
        assert_eq!(fake.machines().len(), 1, "made once");
        assert_eq!(fake.machines()[0]["id"], m.id.as_str());
        // A create refused with 429 is simply sent again.
        let vol2 = api
            .create_volume(&data_volume("iad"))
            .await
            .expect("volume");
        fake.fail_next(&[429]);
        api.create_machine(&node("iad", &vol2.id), "plan-2/iad/2")
            .await
            .expect("machine after 429");
        assert_eq!(fake.machines().len(), 2);
        // A volume create whose answer was lost: the new volume is it.
        fake.fail_after_acting(&[500]);
        let vol3 = api
            .create_volume(&data_volume("iad"))
            .await
            .expect("volume");
        assert_eq!(fake.volumes().len(), 3, "made once");
        assert!(fake.volumes().iter().any(|v| v["id"] == vol3.id.as_str()));
        // A create that timed out (408) after Fly made the machine: found,
        // not made twice.
        fake.fail_after_acting(&[408]);
        let m408 = api
            .create_machine(&node("iad", &vol3.id), "plan-2/iad/3")
            .await
            .expect("machine after 408");
        assert_eq!(fake.machines().len(), 3, "made once");
        assert!(fake.machines().iter().any(|x| x["id"] == m408.id.as_str()));
        // Not transient: said at once.
        let stranger = Machines::new(&base, APP, "wrong-token");
        assert!(matches!(
            stranger.list_volumes().await,
            Err(MachinesError::Api { status: 401, .. })
        ));
        // Retries end.
        let before = fake.requests().len();
        fake.fail_next(&[503; 10]);
        assert!(matches!(
            api.list_volumes().await,
            Err(MachinesError::Api { status: 503, .. })
        ));
        assert_eq!(fake.requests().len() - before, api.retry.attempts as usize);
    }

    /// A macaroon (`FlyV1 ...`, what `fly tokens create` prints) is sent as
    /// the Authorization header as it is, not as a bearer token.
    #[tokio::test]
    async fn a_macaroon_is_sent_as_it_is() {
        // (The fake, as Fly, refuses a macaroon sent as a bearer token.)
        let (_fake, api, _) = start_with("FlyV1 fm2_lJPECAAAAAAAAA").await;
        assert!(api.list_machines().await.expect("listed").is_empty());
    }

    /// Right after a machine's destroy Fly may still show its volume
    /// mounted and refuse the volume's destroy (412): asked again until it
    /// catches up. A volume a live machine mounts is refused at once.
    #[tokio::test]
    async fn a_volume_is_destroyed_once_fly_sees_its_machine_gone() {
        let (fake, mut api, _) = start().await;
        api.retry.detach = Duration::from_secs(10);
        let vol = api
            .create_volume(&data_volume("cdg"))
            .await
            .expect("volume");
        let m = api
            .create_machine(&node("cdg", &vol.id), "plan-1/cdg/1")
            .await
            .expect("machine");
        // Mounted by a live machine: refused, without waiting.
        let started = std::time::Instant::now();
        assert!(matches!(
            api.destroy_volume(&vol.id).await,
            Err(MachinesError::Api { status: 412, .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(fake.volumes().len(), 1);
        // Destroyed, but Fly shows the volume mounted for three more asks.
        fake.lag_detach(3);
        api.destroy_machine(&m.id, true)
            .await
            .expect("destroy machine");
        let before = fake.requests().len();
        api.destroy_volume(&vol.id)
            .await
            .expect("destroyed once Fly caught up");
        assert!(fake.volumes().is_empty());
        let deletes = fake.requests()[before..]
            .iter()
            .filter(|r| r.method == "DELETE" && r.path.ends_with(&vol.id))
            .count();
        assert_eq!(deletes, 4, "three refusals, then the destroy");
        // A lag longer than the wait: the refusal is the answer.
        api.retry.detach = Duration::from_millis(30);
        let vol = api
            .create_volume(&data_volume("cdg"))
            .await
            .expect("volume");
        let m = api
            .create_machine(&node("cdg", &vol.id), "plan-1/cdg/2")
            .await
            .expect("machine");
        fake.lag_detach(1000);
        api.destroy_machine(&m.id, true)
            .await
            .expect("destroy machine");
        assert!(matches!(
            api.destroy_volume(&vol.id).await,
            Err(MachinesError::Api { status: 412, .. })
        ));
        assert_eq!(fake.volumes().len(), 1);
    }
}
