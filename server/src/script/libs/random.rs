//! `math.random` and `math.randomseed` as Redis 7.0 replaces them: one
//! process-wide `drand48`-style generator (Redis's `redisLrand48`),
//! started from drand48's default state and never reseeded between
//! scripts, so a script's random numbers depend on what ran before it
//! (its effects, not its calls, are what replicas and the log see).

use mlua::{Lua, Value, Variadic};
use parking_lot::Mutex;

use super::{arg_error, check_number, error};

/// The 48-bit state, as drand48 starts it (`0x1234ABCD330E`).
static STATE: Mutex<u64> = Mutex::new(0x1234_ABCD_330E);

const A: u64 = 0x5_DEEC_E66D;
const C: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;
/// Redis's `REDIS_LRAND48_MAX`.
const LRAND48_MAX: i64 = i32::MAX as i64;

/// Redis's `redisLrand48`: the next 31-bit number.
fn lrand48() -> i64 {
    let mut x = STATE.lock();
    *x = (x.wrapping_mul(A).wrapping_add(C)) & MASK;
    (*x >> 17) as i64
}

/// Redis's `redisSrand48`.
fn srand48(seed: i32) {
    *STATE.lock() = ((u64::from(seed as u32)) << 16) | 0x330E;
}

/// `luaL_checkint`: a number truncated to a C int.
fn check_int(lua: &Lua, args: &[Value], n: usize, f: &str) -> mlua::Result<i32> {
    Ok(check_number(lua, args, n, f)? as i64 as i32)
}

fn random(lua: &Lua, args: &[Value]) -> mlua::Result<f64> {
    let r = (lrand48() % LRAND48_MAX) as f64 / LRAND48_MAX as f64;
    match args.len() {
        0 => Ok(r),
        1 => {
            let u = check_int(lua, args, 1, "random")?;
            if u < 1 {
                return Err(arg_error(lua, 1, "random", "interval is empty"));
            }
            Ok((r * f64::from(u)).floor() + 1.0)
        }
        2 => {
            let l = check_int(lua, args, 1, "random")?;
            let u = check_int(lua, args, 2, "random")?;
            if l > u {
                return Err(arg_error(lua, 2, "random", "interval is empty"));
            }
            Ok((r * (f64::from(u) - f64::from(l) + 1.0)).floor() + f64::from(l))
        }
        _ => Err(error(lua, "wrong number of arguments")),
    }
}

/// Replaces `math.random` and `math.randomseed` in `lua`'s `math` table.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let math: mlua::Table = lua.globals().raw_get("math")?;
    math.raw_set(
        "random",
        lua.create_function(|lua, args: Variadic<Value>| random(lua, &args))?,
    )?;
    math.raw_set(
        "randomseed",
        lua.create_function(|lua, args: Variadic<Value>| {
            srand48(check_int(lua, &args, 1, "randomseed")?);
            Ok(())
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_drand48s() {
        // glibc's lrand48 after srand48(0) gives the same three.
        srand48(0);
        assert_eq!(
            [lrand48(), lrand48(), lrand48()],
            [366850414, 1610402240, 206956554]
        );
    }
}
