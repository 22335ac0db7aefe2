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

/// `anykv cluster failover <db>`: asks a node for a database's planned
/// failover (`POST /admin/tenants/{db}/failover`) and says how it went.
pub fn failover(addr: SocketAddr, db: u64, token: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = format!("/admin/tenants/{db}/failover");
    let (code, body) = rt.block_on(crate::http::request(addr, "POST", &path, Some(token), ""))?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{addr} answered HTTP {code} with something else than JSON"))?;
    if code != 200 {
        anyhow::bail!(
            "database {db} did not fail over (HTTP {code}): {}",
            json["error"].as_str().unwrap_or(body.trim())
        );
    }
    println!(
        "database {db}: {} -> {} at epoch {} in {} ms",
        json["from"].as_str().unwrap_or("?"),
        json["primary"].as_str().unwrap_or("?"),
        json["epoch"],
        json["ms"]
    );
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
