//! Single sign-on and the dashboard in a real browser (Debian's headless
//! `chromium`, driven over WebDriver by `chromedriver`; `scripts/test.sh`
//! installs both when missing): two iad nodes, `anykv sidecar` with Fly's
//! OAuth client set, and the fake Fly (`anykv_ops::fakefly`) for the OAuth
//! endpoints and the webhooks.
//!
//! Checked: an admin of an organization signs in through the fake OAuth
//! from a database's SSO link, lands on that database, sees the token
//! hidden, reveals it (the REDIS_URL provisioning answered), changes the
//! plan (the sidecar's GET and Fly's webhook say so); the list shows only
//! the databases of the user's organizations, another organization's
//! database answers 404; a form with a wrong CSRF token, or a POST from
//! another origin, or with no session, is refused; a `member` sees the
//! databases read-only, has no reveal or plan form, and a POST of theirs
//! is refused; a callback that this browser did not start is refused;
//! signing out ends the session. Token rotation: both tokens log in, the
//! retired one stops (and its open connection is closed); a second
//! rotation's old token is retired by the sidecar itself once the app's
//! last connection on it closed and the new token is in use (not while
//! that connection stays open, however idle). The database's
//! page shows its usage (the test's own commands, in this month's
//! commands and cost charts), its live figures (its keys, in a frame that
//! refreshes itself), its copies (primary, standby) and the round trips
//! between its regions; the key browser lists keys
//! with type, TTL and value and narrows by pattern, for admins only; a
//! revoked Fly token is refused at the next admin action.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anykv_bench::world::World;
use anykv_ops::fakefly::{FakeFly, User};
use common::Killed;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const ADMIN: &str = "dashboard-admin-token-0123456789";
const SECRET: &str = "the-secret-fly-signs-with";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const WEBHOOK_SECRET: &str = "the-secret-webhooks-are-signed-with";
const CLIENT_ID: &str = "anykv-oauth-client";
const CLIENT_SECRET: &str = "anykv-oauth-secret";
const SIDECAR: &str = "127.0.64.100:23580";
const FLY: &str = "127.0.64.101:23590";
const DRIVER_PORT: u16 = 23595;
/// The sidecar's `--retire-idle-secs`.
const RETIRE_IDLE_SECS: u64 = 3;

fn base() -> String {
    format!("http://{SIDECAR}")
}

fn users() -> Vec<User> {
    let user = |id: &str, orgs: &[(&str, &str)]| User {
        id: id.into(),
        email: format!("{id}@customer.fly.io"),
        organizations: orgs
            .iter()
            .map(|(o, r)| (o.to_string(), r.to_string()))
            .collect(),
    };
    vec![
        user("alice", &[("org_a", "admin")]),
        user("bob", &[("org_a", "member")]),
    ]
}

async fn provision(http: &anykv_ops::fetch::Client, id: &str, name: &str, org: &str) -> String {
    let (status, v) = anykv_ops::fakefly::call_signed(
        http,
        SECRET.as_bytes(),
        "POST",
        &base(),
        "/extensions",
        Some(json!({
            "id": id, "name": name, "organization_id": org,
            "organization_name": org, "organization_email": format!("admins@{org}.example"),
            "user_id": "alice", "user_email": "alice@customer.fly.io", "user_role": "admin",
            "primary_region": "iad", "read_regions": [], "ip_address": "fdaa:0:1::3",
        })),
    )
    .await
    .expect("the sidecar answers");
    assert_eq!(status, 200, "{v}");
    v["config"]["REDIS_URL"]
        .as_str()
        .expect("REDIS_URL")
        .to_string()
}

/// The element `css` on the current page (the failure names the page).
async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let at = c.current_url().await;
            let page = c.source().await.unwrap_or_default();
            panic!("no {css} on {at:?}: {e}\n{page}")
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    element(c, css).await.text().await.expect("text")
}

/// The text of `css` once the page has one (a navigation a script
/// started ends on its own time).
async fn until(c: &Client, css: &str) -> String {
    for _ in 0..100 {
        if let Some(e) = c.find_all(Locator::Css(css)).await.expect("find").first() {
            return e.text().await.expect("text");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {css} on {:?}", c.current_url().await)
}

async fn has(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css))
        .await
        .expect("find")
        .is_empty()
}

/// Clicks `css` and waits for the page it leads to (the old page's
/// document goes stale), so that what is read next is the new page's.
async fn click(c: &Client, css: &str) {
    let old = element(c, "html").await;
    element(c, css).await.click().await.expect("click");
    for _ in 0..200 {
        if old.tag_name().await.is_err() {
            // The new page's document, once it is complete.
            for _ in 0..200 {
                let ready = c.execute("return document.readyState", vec![]).await.ok();
                if ready.as_ref().and_then(|v| v.as_str()) == Some("complete") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "clicking {css} led nowhere: still on {:?}",
        c.current_url().await
    )
}

/// Signs in as `user` from `entry` (an SSO link) through the fake Fly's
/// authorize page.
async fn sign_in(c: &Client, entry: &str, user: &str) {
    c.goto(&format!("{}{entry}", base())).await.expect("goto");
    let at = c.current_url().await.expect("url");
    assert!(
        at.as_str()
            .starts_with(&format!("http://{FLY}/oauth/authorize?")),
        "{at}"
    );
    click(c, &format!("#as-{user}")).await;
}

/// The session cookie the browser holds (HttpOnly: not visible to
/// scripts, but to WebDriver).
async fn session_cookie(c: &Client) -> String {
    let cookies = c.get_all_cookies().await.expect("cookies");
    let s = cookies
        .iter()
        .find(|k| k.name() == "anykv_session")
        .expect("a session cookie");
    assert_eq!(s.http_only(), Some(true));
    assert_eq!(s.secure(), Some(true));
    format!("anykv_session={}", s.value())
}

/// A raw form POST to the sidecar: (status, page).
async fn post_form(
    http: &anykv_ops::fetch::Client,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    form: &str,
) -> (u16, String) {
    let mut h = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", cookie),
    ];
    if let Some(o) = origin {
        h.push(("origin", o));
    }
    let a = http
        .send(
            "POST",
            &format!("{}{path}", base()),
            &h,
            form.as_bytes().to_vec(),
        )
        .await
        .expect("an answer");
    (a.status, String::from_utf8_lossy(&a.body).into_owned())
}

#[test]
fn sign_in_through_fly_and_use_the_dashboard_in_a_browser() {
    for bin in ["chromium", "chromedriver"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{bin} is not installed: scripts/test.sh installs it (apt-get install chromium chromium-driver)"
        );
    }
    // Two iad nodes: a database's writes wait for its standby (durability
    // `region`).
    let spec = common::world_spec("dashboard", 64, 23500, &[("iad", 2)], ADMIN, &[]);
    // Usage records every 200 ms, pulled every second: the usage chart
    // shows the test's own commands.
    let fast = vec!["--meter-interval-ms".to_string(), "200".to_string()];
    let fast = std::collections::BTreeMap::from([
        ("n1".to_string(), fast.clone()),
        ("n2".to_string(), fast),
    ]);
    let w = World::start_with(&spec, &fast).expect("the world starts");
    w.wait_members(2, Duration::from_secs(60))
        .expect("both nodes alive");
    let node = w.node("n1").expect("n1").clone();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fly = Arc::new(FakeFly::new(
        CLIENT_ID,
        CLIENT_SECRET,
        WEBHOOK_SECRET.as_bytes(),
        users(),
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(FLY))
        .expect("the fake Fly's port");
    rt.spawn(fly.clone().serve(listener));

    let data = spec.dir.join("sidecar");
    let _sidecar = Killed(
        Command::new(env!("CARGO_BIN_EXE_anykv"))
            .args(["sidecar", "--listen", SIDECAR, "--meter-pull-secs", "1"])
            .args(["--retire-idle-secs", &RETIRE_IDLE_SECS.to_string()])
            .arg("--data")
            .arg(&data)
            .args(["--cluster-admin", &node.http.to_string()])
            .args(["--redis-url-host", &node.resp.ip().to_string()])
            .args(["--redis-port", &node.resp.port().to_string()])
            .args(["--fly-api-base", &format!("http://{FLY}")])
            .env("ANYKV_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("ANYKV_EXT_SECRET", SECRET)
            .env("ANYKV_TOKEN_KEY", KEY)
            .env("ANYKV_ADMIN_TOKEN", ADMIN)
            .env("ANYKV_OAUTH_CLIENT_ID", CLIENT_ID)
            .env("ANYKV_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anykv sidecar starts"),
    );
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    common::wait_for(
        "the sidecar and chromedriver to listen",
        Duration::from_secs(20),
        || {
            TcpStream::connect(SIDECAR).is_ok()
                && TcpStream::connect(("127.0.0.1", DRIVER_PORT)).is_ok()
        },
    );

    rt.block_on(async {
        let http = anykv_ops::fetch::Client::new(Duration::from_secs(10));
        let shop_url = provision(&http, "ext_a1", "Shop", "org_a").await;
        provision(&http, "ext_a2", "Cache", "org_a").await;
        provision(&http, "ext_b1", "Elsewhere", "org_b").await;

        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]}),
        );
        let c = ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("a browser session");
        // The browser quits (closing the session) even when a check
        // fails: the checks run in a task whose panic is caught here.
        let checks = tokio::spawn({
            let c = c.clone();
            let fly = fly.clone();
            let resp = node.resp;
            async move { browse(&c, &http, &fly, &shop_url, resp).await }
        });
        let outcome = checks.await;
        c.close().await.ok();
        if let Err(e) = outcome {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("the browser checks did not finish: {e}");
        }
    });
    drop(w);
    let _ = std::fs::remove_dir_all(&spec.dir);
}

/// Whether `token` logs in to the database on `resp`.
async fn logs_in(resp: std::net::SocketAddr, token: &str) -> bool {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        common::login_ready(resp, "default", &token, |c| {
            c.cmd(&["PING"]).ok() == Some(common::Value::Simple(b"PONG".to_vec()))
        })
        .is_some()
    })
    .await
    .expect("a login attempt")
}

fn token_in(url: &str) -> String {
    url.strip_prefix("redis://default:")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("no token in {url}"))
}

async fn browse(
    c: &Client,
    http: &anykv_ops::fetch::Client,
    fly: &FakeFly,
    shop_url: &str,
    resp: std::net::SocketAddr,
) {
    // A callback this browser did not start: refused.
    c.goto(&format!("{}/oauth/callback?code=x&state=y", base()))
        .await
        .expect("goto");
    assert!(text(c, "#error")
        .await
        .contains("expired or was not started here"));

    // Alice, an admin of org_a, from the Shop database's SSO link.
    sign_in(c, "/extensions/ext_a1/sso", "alice").await;
    assert_eq!(
        c.current_url().await.expect("url").as_str(),
        format!("{}/dashboard/databases/ext_a1", base())
    );
    assert_eq!(text(c, "h1").await, "Shop");
    assert_eq!(text(c, "#role").await, "admin");
    assert_eq!(text(c, "#who").await, "alice@customer.fly.io");
    let hidden = text(c, "#redis-url").await;
    let token = shop_url
        .strip_prefix("redis://default:")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t)
        .expect("a token in the URL");
    assert!(
        hidden.contains("********") && !hidden.contains(token),
        "{hidden}"
    );
    click(c, "#reveal").await;
    assert_eq!(text(c, "#redis-url").await, shop_url);

    // The plan: changed from the page, as Fly's PATCH would.
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    assert_eq!(text(c, "#plan").await, "payg");
    c.find(Locator::Css("#plan-choice"))
        .await
        .expect("the plan form")
        .select_by_value("pro")
        .await
        .expect("choose pro");
    click(c, "#change-plan").await;
    assert_eq!(text(c, "#notice").await, "Plan changed.");
    assert_eq!(text(c, "#plan").await, "pro");
    let (status, v) = anykv_ops::fakefly::call_signed(
        http,
        SECRET.as_bytes(),
        "GET",
        &base(),
        "/extensions/ext_a1",
        None,
    )
    .await
    .expect("GET");
    assert_eq!((status, v["plan"].as_str()), (200, Some("pro")), "{v}");
    common::wait_for("Fly to hear of the plan", Duration::from_secs(10), || {
        fly.webhooks.lock().iter().any(|h| {
            h["action"] == "resource.updated"
                && h["resource"]["id"] == "ext_a1"
                && h["resource"]["plan"] == "pro"
        })
    });

    // Token rotation: a second token, shown at once, works beside the
    // first; retiring the first leaves only the new one.
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    click(c, "#rotate").await;
    assert_eq!(text(c, "#redis-url").await, shop_url);
    let new_url = text(c, "#next-redis-url").await;
    let (old_token, new_token) = (token_in(shop_url), token_in(&new_url));
    assert_ne!(old_token, new_token);
    assert!(logs_in(resp, &old_token).await && logs_in(resp, &new_token).await);
    assert!(has(c, "#retire").await && !has(c, "#rotate").await);
    // A connection already open with the old token is closed when it is
    // retired (not only new logins refused).
    let open_conn = {
        let t = old_token.clone();
        tokio::task::spawn_blocking(move || {
            common::login_ready(resp, "default", &t, |_| true).expect("a login with the old token")
        })
        .await
        .expect("login")
    };
    click(c, "#retire").await;
    assert!(text(c, "#notice").await.contains("old token is retired"));
    assert!(!has(c, "#next-redis-url").await);
    assert!(
        !logs_in(resp, &old_token).await,
        "the retired token still logs in"
    );
    // (Each PING answered before it closed is a command of the database.)
    let (closed, answered) = tokio::task::spawn_blocking(move || {
        let mut conn = open_conn;
        let t0 = std::time::Instant::now();
        let mut answered = 0u64;
        while t0.elapsed() < Duration::from_secs(5) {
            if !matches!(conn.cmd(&["PING"]), Ok(common::Value::Simple(_))) {
                return (true, answered);
            }
            answered += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        (false, answered)
    })
    .await
    .expect("the check");
    assert!(closed, "a connection with the retired token stayed open");
    assert!(logs_in(resp, &new_token).await);
    click(c, "#reveal").await;
    assert_eq!(text(c, "#redis-url").await, new_url);

    // Usage: the PINGs above (three logins that worked, and what the
    // connection closed at retirement answered) reach the page's totals
    // and today's bar of the chart.
    let want = 3 + answered;
    let mut shown = 0;
    for _ in 0..60 {
        c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
            .await
            .expect("goto");
        shown = text(c, "#usage-commands")
            .await
            .parse::<u64>()
            .expect("a count");
        if shown >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(shown, want, "the dashboard's command count");
    // A bar per day of this month so far, today's last, in both charts.
    let today = anykv_ops::metering::day_of(anykv_ops::unix_now());
    let day_of_month: usize = today[8..].parse().expect("a day");
    let bars = c
        .find_all(Locator::Css("#usage-chart rect.day"))
        .await
        .expect("bars");
    assert_eq!(bars.len(), day_of_month);
    let last = bars.last().expect("today's bar");
    assert_eq!(
        last.attr("data-day").await.expect("attr").as_deref(),
        Some(today.as_str())
    );
    assert_eq!(
        last.attr("data-commands").await.expect("attr"),
        Some(want.to_string())
    );
    let costs = c
        .find_all(Locator::Css("#cost-chart rect.day"))
        .await
        .expect("bars");
    assert_eq!(costs.len(), day_of_month);
    let cost: u64 = costs
        .last()
        .expect("today's cost")
        .attr("data-micro-cents")
        .await
        .expect("attr")
        .and_then(|v| v.parse().ok())
        .expect("a cost");
    // At least the commands' price (the plan is pro by now: its prices
    // are pay-as-you-go's, docs/METERING.md).
    assert!(
        u128::from(cost) >= u128::from(want) * anykv_ops::metering::prices::COMMAND,
        "today's cost {cost} µ¢ for {want} commands"
    );

    // Live figures and copies: INFO on the primary with the database's
    // token, the cluster view's copies.
    {
        let t = new_token.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = common::login_ready(resp, "default", &t, |_| true).expect("a login");
            for args in [
                vec!["SET", "user:1", "alice"],
                vec!["SET", "user:2", "bob", "EX", "100"],
                vec!["RPUSH", "queue", "job"],
            ] {
                let r = w.cmd(&args);
                assert!(
                    !matches!(r, Ok(common::Value::Error(_)) | Err(_)),
                    "{args:?}: {r:?}"
                );
            }
        })
        .await
        .expect("writes");
    }
    // The page frames them, refreshed every few seconds; read here from
    // the frame's own page (read within its refresh interval).
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    let frame = element(c, "#live-frame").await;
    assert_eq!(
        frame.attr("src").await.expect("attr"),
        Some(format!("{}/dashboard/databases/ext_a1/live", base()))
    );
    frame.enter_frame().await.expect("the live frame");
    assert_eq!(text(c, "#live-keys").await, "3", "in the frame");
    c.enter_parent_frame().await.expect("back to the page");
    c.goto(&format!("{}/dashboard/databases/ext_a1/live", base()))
        .await
        .expect("goto");
    let refresh = c
        .find(Locator::Css("meta[http-equiv=refresh]"))
        .await
        .expect("the live page refreshes itself")
        .attr("content")
        .await
        .expect("attr");
    assert_eq!(refresh.as_deref(), Some("5"));
    assert_eq!(text(c, "#live-keys").await, "3");
    let mem = text(c, "#live-memory").await;
    assert!(
        mem.ends_with(['B', 'K', 'M', 'G']),
        "memory as INFO shows it: {mem}"
    );
    assert!(text(c, "#live-ops").await.parse::<u64>().is_ok());
    let mut roles = Vec::new();
    for r in c
        .find_all(Locator::Css("#copies tbody tr td:nth-child(3)"))
        .await
        .expect("copies")
    {
        roles.push(r.text().await.expect("text"));
    }
    assert_eq!(roles, ["primary", "standby"]);
    // Round trips between its regions (one here: iad, its nodes' own).
    let rtt = text(c, "#region-rtt tr[data-region=iad] td[data-to=iad]").await;
    assert!(
        rtt.parse::<f64>().is_ok_and(|ms| ms >= 0.0),
        "iad to iad round trip: {rtt:?}"
    );

    // The key browser (admins): every key with its type and TTL, a
    // string's value; a pattern narrows it.
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    click(c, "#browse-keys").await;
    let mut rows = Vec::new();
    for r in c
        .find_all(Locator::Css("#keys tbody tr"))
        .await
        .expect("rows")
    {
        let cells = r.find_all(Locator::Css("td")).await.expect("cells");
        let mut row = Vec::new();
        for cell in cells {
            row.push(cell.text().await.expect("text"));
        }
        rows.push(row);
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][..2], ["queue".to_string(), "list".to_string()]);
    assert_eq!(rows[1], ["user:1", "string", "none", "alice"]);
    assert_eq!(rows[2][..2], ["user:2".to_string(), "string".to_string()]);
    assert!(
        rows[2][2]
            .parse::<u64>()
            .is_ok_and(|ms| ms > 0 && ms <= 100_000),
        "{rows:?}"
    );
    let m = element(c, "#key-match").await;
    m.clear().await.expect("clear");
    m.send_keys("user:*").await.expect("type");
    click(c, "#key-search").await;
    assert_eq!(
        c.find_all(Locator::Css("#keys tbody tr"))
            .await
            .expect("rows")
            .len(),
        2
    );

    // The sidecar retires an old token by itself once the app switched: a
    // second rotation; while a connection on the old token stays open
    // (idle), the old token stays valid well past --retire-idle-secs; once
    // that connection closes, the new token being in use, it is retired
    // without anyone asking.
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    click(c, "#rotate").await;
    let third = token_in(&text(c, "#next-redis-url").await);
    assert!(
        text(c, "#rotating").await.contains("retired by itself"),
        "the page says the old token goes by itself"
    );
    let idle_conn = {
        let t = new_token.clone();
        tokio::task::spawn_blocking(move || {
            common::login_ready(resp, "default", &t, |_| true).expect("a login with the old token")
        })
        .await
        .expect("login")
    };
    assert!(logs_in(resp, &third).await, "the new token works");
    tokio::time::sleep(Duration::from_secs(RETIRE_IDLE_SECS + 3)).await;
    // (Not a refresh: that would send the rotation's POST again.)
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    assert!(
        has(c, "#next-redis-url").await,
        "the old token was retired under an open connection"
    );
    let idle_conn = tokio::task::spawn_blocking(move || {
        let mut conn = idle_conn;
        assert_eq!(
            conn.cmd(&["PING"]).ok(),
            Some(common::Value::Simple(b"PONG".to_vec())),
            "the old token's connection stayed open all along"
        );
        conn
    })
    .await
    .expect("ping");
    drop(idle_conn);
    let mut retired = false;
    for _ in 0..80 {
        // (Not a refresh: that would send the rotation's POST again.)
        c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
            .await
            .expect("goto");
        if !has(c, "#next-redis-url").await {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(retired, "the old token was not retired once unused");
    assert!(
        !logs_in(resp, &new_token).await,
        "the retired token still logs in"
    );
    assert!(logs_in(resp, &third).await);

    // The list: org_a's two databases, not org_b's.
    c.goto(&format!("{}/dashboard", base()))
        .await
        .expect("goto");
    let rows = c
        .find_all(Locator::Css("#databases tbody tr"))
        .await
        .expect("rows");
    let mut ids = Vec::new();
    for r in rows {
        ids.push(r.attr("data-id").await.expect("attr").unwrap_or_default());
    }
    assert_eq!(ids, vec!["ext_a2".to_string(), "ext_a1".to_string()]);
    c.goto(&format!("{}/dashboard/databases/ext_b1", base()))
        .await
        .expect("goto");
    assert_eq!(text(c, "#error").await, "No such database.");

    // CSRF: a form of the page's own with a wrong token, then POSTs
    // outside the browser with the session's cookie: from another origin,
    // without a token, without a session.
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    c.execute(
        "const f = document.querySelector('form[action$=\"/plan\"]');
         f.querySelector('input[name=csrf]').value = 'forged';
         f.submit();",
        vec![],
    )
    .await
    .expect("script");
    let refused = until(c, "#error").await;
    assert!(refused.contains("CSRF check failed"), "{refused}");
    c.goto(&format!("{}/dashboard/databases/ext_a1", base()))
        .await
        .expect("goto");
    assert_eq!(text(c, "#plan").await, "pro");
    let csrf = c
        .find(Locator::Css("input[name=csrf]"))
        .await
        .expect("a form")
        .attr("value")
        .await
        .expect("attr")
        .expect("a csrf token");
    let cookie = session_cookie(c).await;
    let path = "/dashboard/databases/ext_a1/plan";
    let good = format!("csrf={csrf}&plan=free");
    let (s, page) = post_form(http, path, &cookie, Some("http://evil.example"), &good).await;
    assert_eq!(s, 403, "{page}");
    let (s, _) = post_form(http, path, &cookie, None, "plan=free").await;
    assert_eq!(s, 403);
    let (s, _) = post_form(http, path, "anykv_session=forged.sig", None, &good).await;
    assert_eq!(s, 403);
    // The same request with the page's own origin and token goes through.
    let (s, _) = post_form(http, path, &cookie, Some(&base()), &good).await;
    assert_eq!(s, 303);
    c.refresh().await.expect("refresh");
    assert_eq!(text(c, "#plan").await, "free");

    // Fly no longer vouches for Alice (her token revoked): her next admin
    // action is refused and ends the session.
    fly.revoke("alice");
    let (s, page) = post_form(http, path, &cookie, Some(&base()), &good).await;
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("no longer valid"), "{page}");
    let (s, _) = post_form(http, path, &cookie, Some(&base()), &good).await;
    assert_eq!(s, 403);

    // Signing out ends the session: the cookie no longer opens a page.
    click(c, "#logout").await;
    assert!(c
        .current_url()
        .await
        .expect("url")
        .as_str()
        .ends_with("/signed-out"));
    let (s, _) = post_form(
        http,
        "/dashboard/databases/ext_a1/reveal",
        &cookie,
        None,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(s, 403);

    // Bob, a member of org_a: read-only.
    c.delete_all_cookies().await.expect("cookies");
    sign_in(c, "/sso", "bob").await;
    assert_eq!(
        c.current_url().await.expect("url").as_str(),
        format!("{}/dashboard", base())
    );
    assert_eq!(
        c.find_all(Locator::Css("#databases tbody tr"))
            .await
            .expect("rows")
            .len(),
        2
    );
    c.goto(&format!("{}/dashboard/databases/ext_a2", base()))
        .await
        .expect("goto");
    assert_eq!(text(c, "#role").await, "member");
    assert!(has(c, "#read-only").await);
    assert!(!has(c, "#reveal").await && !has(c, "#change-plan").await);
    assert!(text(c, "#redis-url").await.contains("********"));
    let csrf = c
        .find(Locator::Css("#logout"))
        .await
        .expect("sign out")
        .find(Locator::XPath("./preceding-sibling::input[@name='csrf']"))
        .await
        .expect("the form's token")
        .attr("value")
        .await
        .expect("attr")
        .expect("a csrf token");
    let cookie = session_cookie(c).await;
    for (path, form) in [
        ("/dashboard/databases/ext_a2/reveal", format!("csrf={csrf}")),
        (
            "/dashboard/databases/ext_a2/plan",
            format!("csrf={csrf}&plan=pro"),
        ),
    ] {
        let (s, page) = post_form(http, path, &cookie, Some(&base()), &form).await;
        assert_eq!(s, 403, "{path}");
        assert!(page.contains("Only an admin"), "{page}");
    }
    // Nor can a member browse keys.
    c.goto(&format!("{}/dashboard/databases/ext_a2/keys", base()))
        .await
        .expect("goto");
    assert!(text(c, "#error").await.contains("Only an admin"));
    assert!(!has(c, "#keys").await);
}
