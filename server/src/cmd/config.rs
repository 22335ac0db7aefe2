//! CONFIG GET/SET/RESETSTAT/REWRITE over the server configuration.

use super::Ctx;

pub fn get(ctx: &mut Ctx) {
    let pats: Vec<&[u8]> = ctx.args[2..].to_vec();
    let pairs = ctx.shared.config.read().get(&pats);
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
    let local = ctx.s.info.addr.ip().is_loopback();
    let r = ctx.shared.update_config(|c| c.set_from(&pairs, local));
    match r {
        Ok(()) => {
            // Settings with side effects outside the config itself.
            let (pass, backlog) = {
                let c = ctx.shared.config.read();
                let backlog = c
                    .value("repl-backlog-size")
                    .and_then(|v| v.parse::<usize>().ok());
                (c.requirepass(), backlog)
            };
            ctx.shared.users.write().set_requirepass(pass.as_deref());
            if let Some(b) = backlog {
                ctx.t.log.set_backlog_cap(b);
            }
            ctx.out.ok();
        }
        Err(e) => ctx.err(&e),
    }
}

pub fn resetstat(ctx: &mut Ctx) {
    ctx.t.stats = Default::default();
    ctx.shared.reset_stats();
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
