//! CONFIG GET/SET/RESETSTAT/REWRITE over the server configuration.

use super::Ctx;

/// Settings a customer's database may not read: the operator's secrets,
/// and where and how the server keeps its files and sockets.
const HIDDEN_FROM_DATABASES: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "aclfile",
    "tenants-file",
    "dir",
    "dbfilename",
    "appenddirname",
    "appendfilename",
    "logfile",
    "pidfile",
    "unixsocket",
    "metrics-addr",
    "bind",
    "bind-source-addr",
];

pub fn get(ctx: &mut Ctx) {
    let pats: Vec<&[u8]> = ctx.args[2..].to_vec();
    let mut pairs = ctx.shared.config.read().get(&pats);
    if ctx.t.is_customer() {
        // A database sees its own plan's memory settings, and no secrets.
        // (Names come back as the client spelled them: compare ignoring case.)
        pairs.retain(|(k, _)| {
            !HIDDEN_FROM_DATABASES
                .iter()
                .any(|h| h.eq_ignore_ascii_case(k))
        });
        let (lim, _) = ctx.t.memory_limits(&ctx.set.evict);
        for (k, v) in pairs.iter_mut() {
            if k.eq_ignore_ascii_case("maxmemory") {
                *v = lim.maxmemory.to_string();
            } else if k.eq_ignore_ascii_case("maxmemory-policy") {
                *v = lim.policy.name().to_string();
            }
        }
    }
    ctx.out.map(pairs.len());
    for (k, v) in pairs {
        ctx.out.bulk(k.as_bytes());
        ctx.out.bulk(v.as_bytes());
    }
}

pub fn set(ctx: &mut Ctx) {
    if !ctx.args.len().is_multiple_of(2) {
        return ctx.syntax_error();
    }
    let pairs: Vec<(&[u8], &[u8])> = ctx.args[2..].chunks(2).map(|c| (c[0], c[1])).collect();
    let local = ctx.s.client_is_local();
    let r = ctx.shared.update_config(|c| c.set_from(&pairs, local));
    match r {
        Ok(()) => {
            // Settings with side effects outside the config itself.
            let (pass, backlog) = {
                let c = ctx.shared.config.read();
                (c.requirepass(), c.repl_backlog_size())
            };
            ctx.shared.acl.write(crate::tenant::TenantId::DEFAULT, |u| {
                u.set_requirepass(pass.as_deref())
            });
            ctx.t.log.set_backlog_cap(backlog);
            ctx.out.ok();
        }
        Err(e) => ctx.err(&e),
    }
}

pub fn resetstat(ctx: &mut Ctx) {
    // Keep the per-command slots: the dispatcher indexes them by command id.
    let slots = ctx.t.stats.commands.len();
    ctx.t.stats = Default::default();
    ctx.t.stats.commands.resize_with(slots, Default::default);
    // The server-wide counters are the operator's: a customer resets only
    // their own database's.
    if !ctx.t.is_customer() {
        ctx.shared.reset_stats();
    }
    ctx.out.ok();
}

pub fn rewrite(ctx: &mut Ctx) {
    if ctx.shared.config.read().config_file().is_none() {
        return ctx.err("The server is running without a config file");
    }
    let r = ctx.shared.config.read().rewrite();
    match r {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.err(&format!("Rewriting config file: {e}")),
    }
}

pub fn help(ctx: &mut Ctx) {
    super::command::reply_help(
        ctx,
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
        ],
    );
}

#[cfg(test)]
mod tests {
    use crate::client::{ClientInfo, Session};
    use crate::config::Config;
    use crate::dispatch::dispatch;
    use crate::resp::Reply;
    use crate::shared::Shared;
    use crate::tenant::{Tenant, TenantId};
    use std::rc::Rc;

    /// CONFIG RESETSTAT as the first command, and again later, must not
    /// break the per-command counters the dispatcher updates after it (it
    /// once crashed the server; found by the fuzzer).
    #[test]
    fn resetstat_keeps_command_stats_usable() {
        let shared = Shared::new(Config::default(), 1);
        let set = shared.settings();
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        let addr = "127.0.0.1:1".parse().unwrap();
        let info = Rc::new(ClientInfo::new(1, addr, addr, 0, 0));
        let mut s = Session::new(info, true);
        let mut out = Reply::new(2);
        for args in [
            &[&b"CONFIG"[..], b"RESETSTAT"][..],
            &[b"SET", b"k", b"v"],
            &[b"CONFIG", b"RESETSTAT"],
            &[b"GET", b"k"],
        ] {
            dispatch(&mut t, &mut s, &shared, &set, args, &mut out, 1);
        }
        assert_eq!(&out.buf[..], b"+OK\r\n+OK\r\n+OK\r\n$1\r\nv\r\n");
        // The second RESETSTAT counts itself after the reset, as in Redis; then GET.
        assert_eq!(t.stats.total_commands, 2);
    }
}
