//! `anykv cluster …`: the cluster for people and operators.

use anyhow::Context;
use anykv_gossip::ClusterView;
use std::net::SocketAddr;
use std::path::Path;

/// `anykv cluster status`: asks a node's HTTP port for its view.
pub fn status(addr: SocketAddr, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = rt.block_on(crate::http::get_body(addr, "/cluster"))?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).context("the node answered something else than JSON")?;
    let view: ClusterView = serde_json::from_value(json.clone())
        .context("the node answered something else than a view")?;
    print!("{}", view.table());
    if let Some(t) = json.get("tenants") {
        let tenants: Vec<anykv_gossip::catalog::TenantView> =
            serde_json::from_value(t.clone()).context("malformed tenants in the view")?;
        println!();
        print!("{}", anykv_gossip::catalog::tenants_table(&tenants));
    }
    Ok(())
}

/// POSTs an admin call to a node; its JSON answer when 200, else an
/// error with the node's reason.
fn admin_post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, text) = rt.block_on(crate::http::request(addr, "POST", path, Some(token), body))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{addr} answered HTTP {code} with something else than JSON"))?;
    if code != 200 {
        anyhow::bail!(
            "HTTP {code}: {}",
            json["error"].as_str().unwrap_or(text.trim())
        );
    }
    Ok(json)
}

/// `anykv cluster failover <db>`: asks a node for a database's planned
/// failover (`POST /admin/tenants/{db}/failover`) and says how it went.
pub fn failover(addr: SocketAddr, db: u64, token: &str) -> anyhow::Result<()> {
    let path = format!("/admin/tenants/{db}/failover");
    let json = admin_post(addr, &path, token, "")
        .with_context(|| format!("database {db} did not fail over"))?;
    println!(
        "database {db}: {} -> {} at epoch {} in {} ms",
        json["from"].as_str().unwrap_or("?"),
        json["primary"].as_str().unwrap_or("?"),
        json["epoch"],
        json["ms"]
    );
    Ok(())
}

/// `anykv cluster promote <db> --to <node> --force`: the operator's forced
/// promotion (`POST /admin/tenants/{db}/promote`); prints what may have
/// been lost.
pub fn promote(
    addr: SocketAddr,
    db: u64,
    to: &str,
    force: bool,
    token: &str,
) -> anyhow::Result<()> {
    if !force {
        anyhow::bail!(
            "a forced promotion may lose acknowledged writes; add --force to go on (for a database whose primary is alive, `anykv cluster failover {db}` loses nothing)"
        );
    }
    let path = format!("/admin/tenants/{db}/promote");
    let body = serde_json::json!({ "to": to, "force": true }).to_string();
    let json = admin_post(addr, &path, token, &body)
        .with_context(|| format!("database {db} was not promoted"))?;
    println!(
        "database {db}: {} is the primary at epoch {} (was {})",
        json["primary"].as_str().unwrap_or("?"),
        json["epoch"],
        json["old_primary"].as_str().unwrap_or("?")
    );
    let writes = json["lost_writes_estimate"]
        .as_u64()
        .map_or("unknown".to_string(), |w| format!("about {w}"));
    println!(
        "may be lost: at least {} bytes of the stream ({writes} writes) that the old primary (offset {}) and standby (offset {}) last reported beyond {}'s offset {}; more if they wrote after reporting",
        json["lost_bytes_at_least"],
        json["old_primary_offset"],
        json["standby_offset"],
        json["primary"].as_str().unwrap_or("?"),
        json["offset"]
    );
    println!("{}", json["note"].as_str().unwrap_or_default());
    Ok(())
}

/// `anykv cluster keygen`: a cluster CA and a gossip key, as files to load
/// into the app's secrets.
pub fn keygen(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = anykv_gossip::tls::ClusterCa::generate()?;
    let key: String = {
        use rand::Rng;
        let mut b = [0u8; 32];
        rand::rng().fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let write = |name: &str, text: &str, private: bool| -> anyhow::Result<()> {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("creating {} (refusing to overwrite)", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        println!("wrote {}", path.display());
        Ok(())
    };
    write("cluster-ca.pem", &ca.cert_pem, false)?;
    write("cluster-ca.key", &ca.key_pem, true)?;
    write("gossip.key", &format!("{key}\n"), true)?;
    Ok(())
}
