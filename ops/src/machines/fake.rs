//! A fake Fly Machines API, written from Fly's documentation
//! (fly.io/docs/machines/api/): volumes and machines of one app, behind a
//! bearer token, with the fields Fly requires, its status codes and its
//! error bodies (`{"error": "..."}`). Machines change state at once (a
//! create boots it unless `skip_launch`; stop stops it), so `wait` answers
//! at once too, or 408 as Fly does when the state did not come.
//!
//! For tests of the client and of region scaling: every request is
//! recorded ([`FakeMachines::requests`]); [`FakeMachines::fail_next`]
//! answers the next requests with an error status without acting (as a
//! rate limit or an overloaded API does), and
//! [`FakeMachines::fail_after_acting`] acts and then answers an error (a
//! create whose answer was lost), which only reconciliation handles.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// Hardware zones of every region (a unique-zone volume takes a free one).
const ZONES: &[&str] = &["a1b2", "c3d4", "e5f6"];

/// Fly's region codes (`fly platform regions`): a volume or machine
/// elsewhere is refused, as Fly refuses one (the wording is the fake's).
pub const REGIONS: &[&str] = &[
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl",
    "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx",
    "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
];

/// The time now as Fly writes it (`2026-12-06T10:31:08.123Z`).
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (secs, ms) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let t = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{ms:03}Z",
        crate::metering::day_of(secs),
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Refuses a region Fly does not have.
fn unknown_region(region: &str) -> Option<Response> {
    (!REGIONS.contains(&region)).then(|| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("region {region:?} is not a Fly region"),
        )
    })
}

/// A request the fake received: method, path (with query) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    volumes: BTreeMap<String, Value>,
    machines: BTreeMap<String, Value>,
    next_id: u64,
    requests: Vec<Recorded>,
    fail: VecDeque<u16>,
    fail_after: VecDeque<u16>,
    /// Machine destroys whose volumes still show them attached for this
    /// many of their destroys (see [`FakeMachines::lag_detach`]).
    detach_lag: u32,
    /// Volumes still shown attached to a destroyed machine: refusals left.
    stale: BTreeMap<String, u32>,
}

/// The fake API of app `app`, taking token `token`.
pub struct FakeMachines {
    app: String,
    token: String,
    inner: Mutex<Inner>,
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

impl FakeMachines {
    pub fn new(app: &str, token: &str) -> Arc<FakeMachines> {
        Arc::new(FakeMachines {
            app: app.to_string(),
            token: token.to_string(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Serves the API on `listener` (its base URL is
    /// `http://<addr>/v1`).
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, router(self)).await
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// The next requests are answered with these statuses, doing nothing.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.lock().fail.extend(statuses);
    }

    /// The next requests act, then are answered with these statuses.
    pub fn fail_after_acting(&self, statuses: &[u16]) {
        self.inner.lock().fail_after.extend(statuses);
    }

    /// From now on a destroyed machine's volume still shows it attached for
    /// its next `n` destroy requests (refused with 412, as Fly does until
    /// it catches up with the machine's destroy).
    pub fn lag_detach(&self, n: u32) {
        self.inner.lock().detach_lag = n;
    }

    /// The app's machines that are not destroyed.
    pub fn machines(&self) -> Vec<Value> {
        self.inner.lock().machines.values().cloned().collect()
    }

    /// The app's volumes that are not destroyed.
    pub fn volumes(&self) -> Vec<Value> {
        self.inner.lock().volumes.values().cloned().collect()
    }

    /// A machine another client made in `volume`'s region, mounting it
    /// (as `fly deploy` or a person would): its id.
    pub fn mount_elsewhere(&self, volume: &str) -> Option<String> {
        let mut g = self.inner.lock();
        let region = g.volumes.get(volume)?["region"].clone();
        let id = new_id(&mut g, "");
        let m = json!({
            "id": id, "name": format!("machine-{id}"), "state": "started",
            "region": region,
            "config": { "mounts": [{ "volume": volume, "path": "/data" }] },
        });
        if let Some(v) = g.volumes.get_mut(volume) {
            v["attached_machine_id"] = json!(id);
        }
        g.machines.insert(id.clone(), m);
        Some(id)
    }
}

/// Every path under `/v1/apps/{app}` (Fly's), answered by [`handle`].
pub fn router(fake: Arc<FakeMachines>) -> Router {
    Router::new().fallback(handle).with_state(fake)
}

/// One request: recorded, its token and app checked, an injected failure
/// answered, then routed by method and path.
async fn handle(
    State(fake): State<Arc<FakeMachines>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let q = |k: &str| query.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let (app, rest) = match parts.as_slice() {
        ["v1", "apps", app, rest @ ..] => (*app, rest),
        // (What Go's router answers for a path it does not know.)
        _ => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    };
    if let Some(r) = admit(&fake, &method, &uri, &headers, app, &body) {
        return r;
    }
    // A create's body: JSON, or 400.
    let with_json = |f: fn(&FakeMachines, &Value) -> Response| match serde_json::from_slice(&body) {
        Ok(v) => f(&fake, &v),
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    };
    let m = method.as_str();
    match (m, rest) {
        ("GET", ["volumes"]) => Json(fake.volumes()).into_response(),
        ("POST", ["volumes"]) => with_json(create_volume),
        ("GET", ["volumes", id]) => match fake.inner.lock().volumes.get(*id) {
            Some(v) => Json(v.clone()).into_response(),
            None => not_found("volume", id),
        },
        ("DELETE", ["volumes", id]) => delete_volume(&fake, id),
        ("GET", ["machines"]) => {
            let region = q("region");
            let list: Vec<Value> = fake
                .machines()
                .into_iter()
                .filter(|m| region.is_none_or(|r| m["region"] == r))
                .collect();
            Json(list).into_response()
        }
        ("POST", ["machines"]) => with_json(create_machine),
        ("GET", ["machines", id]) => match fake.inner.lock().machines.get(*id) {
            Some(v) => Json(v.clone()).into_response(),
            None => not_found("machine", id),
        },
        ("DELETE", ["machines", id]) => {
            let force = q("force").or(q("kill")) == Some("true");
            delete_machine(&fake, id, force)
        }
        ("POST", ["machines", id, "stop"]) => set_state(&fake, id, "stopped"),
        ("POST", ["machines", id, "start"]) => set_state(&fake, id, "started"),
        ("GET", ["machines", id, "wait"]) => wait(
            &fake,
            id,
            q("state").unwrap_or("started"),
            q("instance_id").unwrap_or_default(),
        ),
        _ => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    }
}

/// What every request goes through first: the record, the token, the
/// app, injected failures. `Some`: the answer already.
fn admit(
    fake: &FakeMachines,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    app: &str,
    body: &[u8],
) -> Option<Response> {
    let mut g = fake.inner.lock();
    g.requests.push(Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string()),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // A bearer token, or a macaroon (`FlyV1 ...`) sent as it is, as
    // Fly's tools send one (not as a bearer token).
    let good = if fake.token.starts_with("FlyV1 ") {
        auth == fake.token
    } else {
        auth == format!("Bearer {}", fake.token)
    };
    if !good {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "The API key used was missing or invalid",
        ));
    }
    if app != fake.app {
        return Some(error(StatusCode::NOT_FOUND, "app not found"));
    }
    let s = g.fail.pop_front()?;
    let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(error(status, "injected failure"))
}

fn not_found(what: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("{what} {id} not found"))
}

/// The answer of a request that acted: `ok`, or an injected failure.
fn answer(fake: &FakeMachines, ok: Response) -> Response {
    match fake.inner.lock().fail_after.pop_front() {
        Some(s) => error(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected failure after acting",
        ),
        None => ok,
    }
}

fn new_id(g: &mut Inner, prefix: &str) -> String {
    g.next_id += 1;
    format!("{prefix}{:014x}", 0x5eed_0000 + g.next_id)
}

fn create_volume(fake: &FakeMachines, req: &Value) -> Response {
    let (Some(name), Some(region)) = (req["name"].as_str(), req["region"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "name and region are required");
    };
    if let Some(refused) = unknown_region(region) {
        return refused;
    }
    let size = req["size_gb"].as_u64().unwrap_or(3);
    if size == 0 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "size_gb must be at least 1",
        );
    }
    let unique = req["require_unique_zone"].as_bool().unwrap_or(true);
    let mut g = fake.inner.lock();
    let taken: Vec<&str> = g
        .volumes
        .values()
        .filter(|v| v["name"] == name && v["region"] == region)
        .filter_map(|v| v["zone"].as_str())
        .collect();
    let Some(zone) = ZONES
        .iter()
        .find(|z| !unique || !taken.contains(z))
        .copied()
    else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "insufficient resources to create volume in a unique zone",
                "status": "volume_placement_capacity",
            })),
        )
            .into_response();
    };
    let id = new_id(&mut g, "vol_");
    let v = json!({
        "id": id, "name": name, "state": "created", "size_gb": size,
        "region": region, "zone": zone, "encrypted": true,
        "attached_machine_id": null, "attached_alloc_id": null,
        "created_at": now_rfc3339(), "fstype": "ext4",
    });
    g.volumes.insert(id, v.clone());
    drop(g);
    answer(fake, Json(v).into_response())
}

fn delete_volume(fake: &FakeMachines, id: &str) -> Response {
    let mut g = fake.inner.lock();
    match g.stale.get_mut(id) {
        Some(0) => {
            g.stale.remove(id);
            if let Some(v) = g.volumes.get_mut(id) {
                v["attached_machine_id"] = Value::Null;
            }
        }
        Some(n) => *n -= 1,
        None => {}
    }
    let Some(v) = g.volumes.get(id) else {
        return not_found("volume", id);
    };
    if let Some(m) = v["attached_machine_id"].as_str() {
        return error(
            StatusCode::PRECONDITION_FAILED,
            &format!("failed_precondition: volume is currently bound to machine: {m}"),
        );
    }
    let mut v = g.volumes.remove(id).unwrap_or_default();
    v["state"] = json!("destroyed");
    drop(g);
    answer(fake, Json(v).into_response())
}

fn create_machine(fake: &FakeMachines, req: &Value) -> Response {
    let config = &req["config"];
    if !config["image"].is_string() {
        return error(StatusCode::BAD_REQUEST, "config.image is required");
    }
    let Some(region) = req["region"].as_str() else {
        // (Fly picks one near the caller; a data node must be placed.)
        return error(StatusCode::BAD_REQUEST, "region is required");
    };
    if let Some(refused) = unknown_region(region) {
        return refused;
    }
    if let Some(p) = config["restart"]["policy"].as_str() {
        if !["no", "always", "on-failure"].contains(&p) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid restart policy {p}"),
            );
        }
    }
    let mut g = fake.inner.lock();
    let mounts = config["mounts"].as_array().cloned().unwrap_or_default();
    if mounts.len() > 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "a machine mounts one volume at most",
        );
    }
    for m in &mounts {
        let (Some(vol), Some(_path)) = (m["volume"].as_str(), m["path"].as_str()) else {
            return error(StatusCode::BAD_REQUEST, "a mount needs volume and path");
        };
        match g.volumes.get(vol) {
            None => return not_found("volume", vol),
            Some(v) if v["region"] != region => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("volume {vol} is in another region"),
                )
            }
            Some(v) if !v["attached_machine_id"].is_null() => {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    &format!("volume {vol} is already in use by another machine"),
                )
            }
            Some(_) => {}
        }
    }
    let id = new_id(&mut g, "");
    let ip = format!("fdaa:0:1:a7b:{:x}::2", g.next_id);
    let skip = req["skip_launch"].as_bool().unwrap_or(false);
    let m = json!({
        "id": id,
        "name": req["name"].as_str().map_or_else(|| format!("machine-{id}"), str::to_string),
        "state": if skip { "stopped" } else { "started" },
        "region": region,
        "instance_id": format!("01J{}", id.to_uppercase()),
        "private_ip": ip,
        "config": config,
        "image_ref": { "registry": "registry.fly.io", "repository": fake.app, "tag": "latest" },
        "created_at": now_rfc3339(),
        "updated_at": now_rfc3339(),
    });
    for mnt in &mounts {
        if let Some(v) = mnt["volume"].as_str().and_then(|v| g.volumes.get_mut(v)) {
            v["attached_machine_id"] = json!(id);
        }
    }
    g.machines.insert(id, m.clone());
    drop(g);
    answer(fake, Json(m).into_response())
}

/// Stop (`stopped`: `{"ok":true}`) or start (`started`: the previous
/// state), at once.
fn set_state(fake: &FakeMachines, id: &str, to: &str) -> Response {
    let mut g = fake.inner.lock();
    let Some(m) = g.machines.get_mut(id) else {
        return not_found("machine", id);
    };
    let previous = std::mem::replace(&mut m["state"], json!(to));
    drop(g);
    let ok = if to == "started" {
        json!({ "previous_state": previous, "migrated": false, "new_host": "" })
    } else {
        json!({ "ok": true })
    };
    answer(fake, Json(ok).into_response())
}

fn wait(fake: &FakeMachines, id: &str, want: &str, instance_id: &str) -> Response {
    if !["started", "stopped", "suspended", "destroyed"].contains(&want) {
        return error(StatusCode::BAD_REQUEST, &format!("invalid state {want}"));
    }
    if want == "stopped" && instance_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "instance_id is required to wait for stopped",
        );
    }
    let state = match fake.inner.lock().machines.get(id) {
        Some(m) => m["state"].as_str().unwrap_or_default().to_string(),
        None if want == "destroyed" => "destroyed".into(),
        None => return not_found("machine", id),
    };
    if state == want {
        Json(json!({ "ok": true })).into_response()
    } else {
        error(
            StatusCode::REQUEST_TIMEOUT,
            "deadline_exceeded: timeout waiting for state",
        )
    }
}

fn delete_machine(fake: &FakeMachines, id: &str, force: bool) -> Response {
    let mut g = fake.inner.lock();
    let Some(m) = g.machines.get(id) else {
        return not_found("machine", id);
    };
    if m["state"] == "started" && !force {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition: unable to destroy machine, not currently stopped or suspended",
        );
    }
    g.machines.remove(id);
    let lag = g.detach_lag;
    let mut stale = Vec::new();
    for (vid, v) in g.volumes.iter_mut() {
        if v["attached_machine_id"] == id {
            if lag > 0 {
                stale.push(vid.clone());
            } else {
                v["attached_machine_id"] = Value::Null;
            }
        }
    }
    for vid in stale {
        g.stale.insert(vid, lag);
    }
    drop(g);
    answer(fake, Json(json!({ "ok": true })).into_response())
}
