//! The command table: one row per command, shared by the store (dispatch,
//! arity, auth), the router (route class, tenant scope) and `COMMAND`.

use hashbrown::HashMap;
use std::sync::OnceLock;

use super::{
    acl, bitmap, blocking, client, command, config, connection, debug, dump, function, hyperloglog,
    info, keys, latency, lolwut, memory, migrate, multi, pubsub, replication, script, server,
    string, Ctx,
};

pub type Handler = fn(&mut Ctx);

/// How the router treats a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Served by any replica that has the caller's last write.
    Read,
    /// Must run on the tenant's primary.
    Write,
    /// Connection-local state (PING, SELECT, AUTH, CLIENT SETNAME...).
    Connection,
    /// Server administration.
    Admin,
    /// Pins the connection to the primary (subscriptions).
    PubSub,
    /// Pins the connection to the primary (blocking pops).
    Blocking,
}

/// What a tenant (a customer's connection) may do with the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Runs normally inside the tenant's keyspace.
    Allowed,
    /// Runs, but sees only the caller's tenant (INFO, CLIENT LIST, FLUSHALL...).
    OwnTenant,
    /// Refused for tenants (SHUTDOWN, DEBUG, CONFIG SET of server settings...).
    Denied,
}

pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    /// Redis's command flags, space separated, as COMMAND reports them.
    pub flags: &'static str,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// ACL categories, space separated (`@read @string @fast`).
    pub acl: &'static str,
    pub route: Route,
    pub scope: Scope,
    /// Non-deterministic: its log entry records the outcome, not the call.
    pub nondeterministic: bool,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
    pub subs: &'static [CommandSpec],
}

impl CommandSpec {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.split(' ').any(|x| x == f)
    }
    pub fn is_write(&self) -> bool {
        self.route == Route::Write
    }
}

macro_rules! cmd {
    ($name:expr, $arity:expr, $flags:expr, $f:expr, $l:expr, $s:expr, $acl:expr, $route:ident, $scope:ident, $group:expr, $since:expr, $summary:expr, $h:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            acl: $acl,
            route: Route::$route,
            scope: Scope::$scope,
            nondeterministic: false,
            group: $group,
            since: $since,
            summary: $summary,
            handler: $h,
            subs: &[],
        }
    };
}

macro_rules! container {
    ($name:expr, $acl:expr, $route:ident, $scope:ident, $group:expr, $since:expr, $summary:expr, $subs:expr) => {
        CommandSpec {
            name: $name,
            arity: -2,
            flags: "",
            first_key: 0,
            last_key: 0,
            step: 0,
            acl: $acl,
            route: Route::$route,
            scope: Scope::$scope,
            nondeterministic: false,
            group: $group,
            since: $since,
            summary: $summary,
            handler: command::container_help,
            subs: $subs,
        }
    };
}

const RW: &str = "@write @string @slow";
const RF: &str = "@read @string @fast";
const WF: &str = "@write @string @fast";
const KW: &str = "@keyspace @write @fast";
const KR: &str = "@keyspace @read @fast";

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    // ---- strings ----
    cmd!("get", 2, "readonly fast", 1, 1, 1, RF, Read, Allowed, "string", "1.0.0", "Get the value of a key", string::get),
    cmd!("set", -3, "write denyoom", 1, 1, 1, RW, Write, Allowed, "string", "1.0.0", "Set the string value of a key", string::set),
    cmd!("setnx", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Set the value of a key, only if the key does not exist", string::setnx),
    cmd!("setex", 4, "write denyoom", 1, 1, 1, RW, Write, Allowed, "string", "2.0.0", "Set the value and expiration of a key", string::setex),
    cmd!("psetex", 4, "write denyoom", 1, 1, 1, RW, Write, Allowed, "string", "2.6.0", "Set the value and expiration in milliseconds of a key", string::psetex),
    cmd!("getex", -2, "write fast", 1, 1, 1, WF, Write, Allowed, "string", "6.2.0", "Get the value of a key and optionally set its expiration", string::getex),
    cmd!("getdel", 2, "write fast", 1, 1, 1, WF, Write, Allowed, "string", "6.2.0", "Get the value of a key and delete the key", string::getdel),
    cmd!("getset", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Set the string value of a key and return its old value", string::getset),
    cmd!("mget", -2, "readonly fast", 1, -1, 1, RF, Read, Allowed, "string", "1.0.0", "Get the values of all the given keys", string::mget),
    cmd!("mset", -3, "write denyoom", 1, -1, 2, RW, Write, Allowed, "string", "1.0.1", "Set multiple keys to multiple values", string::mset),
    cmd!("msetnx", -3, "write denyoom", 1, -1, 2, RW, Write, Allowed, "string", "1.0.1", "Set multiple keys to multiple values, only if none of the keys exist", string::msetnx),
    cmd!("append", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "2.0.0", "Append a value to a key", string::append),
    cmd!("strlen", 2, "readonly fast", 1, 1, 1, RF, Read, Allowed, "string", "2.2.0", "Get the length of the value stored in a key", string::strlen),
    cmd!("getrange", 4, "readonly", 1, 1, 1, "@read @string @slow", Read, Allowed, "string", "2.4.0", "Get a substring of the string stored at a key", string::getrange),
    cmd!("substr", 4, "readonly", 1, 1, 1, "@read @string @slow", Read, Allowed, "string", "1.0.0", "Get a substring of the string stored at a key", string::getrange),
    cmd!("setrange", 4, "write denyoom", 1, 1, 1, RW, Write, Allowed, "string", "2.2.0", "Overwrite part of a string at key starting at the specified offset", string::setrange),
    cmd!("pfadd", -2, "write denyoom fast", 1, 1, 1, "@write @hyperloglog @fast", Write, Allowed, "hyperloglog", "2.8.9", "Adds the specified elements to the specified HyperLogLog.", hyperloglog::pfadd),
    cmd!("pfcount", -2, "readonly may_replicate", 1, -1, 1, "@read @hyperloglog @slow", Read, Allowed, "hyperloglog", "2.8.9", "Return the approximated cardinality of the set(s) observed by the HyperLogLog at key(s).", hyperloglog::pfcount),
    cmd!("pfmerge", -2, "write denyoom", 1, -1, 1, "@write @hyperloglog @slow", Write, Allowed, "hyperloglog", "2.8.9", "Merge N different HyperLogLogs into a single one.", hyperloglog::pfmerge),
    cmd!("pfselftest", 1, "admin", 0, 0, 0, "@hyperloglog @admin @slow @dangerous", Admin, Denied, "hyperloglog", "2.8.9", "An internal command for testing HyperLogLog values", hyperloglog::pfselftest),
    cmd!("pfdebug", 3, "write denyoom admin", 2, 2, 1, "@write @hyperloglog @admin @slow @dangerous", Write, Allowed, "hyperloglog", "2.8.9", "Internal commands for debugging HyperLogLog values", hyperloglog::pfdebug),
    cmd!("setbit", 4, "write denyoom", 1, 1, 1, "@write @bitmap @slow", Write, Allowed, "bitmap", "2.2.0", "Sets or clears the bit at offset in the string value stored at key", bitmap::setbit),
    cmd!("getbit", 3, "readonly fast", 1, 1, 1, "@read @bitmap @fast", Read, Allowed, "bitmap", "2.2.0", "Returns the bit value at offset in the string value stored at key", bitmap::getbit),
    cmd!("bitcount", -2, "readonly", 1, 1, 1, "@read @bitmap @slow", Read, Allowed, "bitmap", "2.6.0", "Count set bits in a string", bitmap::bitcount),
    cmd!("bitpos", -3, "readonly", 1, 1, 1, "@read @bitmap @slow", Read, Allowed, "bitmap", "2.8.7", "Find first bit set or clear in a string", bitmap::bitpos),
    cmd!("bitop", -4, "write denyoom", 2, -1, 1, "@write @bitmap @slow", Write, Allowed, "bitmap", "2.6.0", "Perform bitwise operations between strings", bitmap::bitop),
    cmd!("bitfield", -2, "write denyoom", 1, 1, 1, "@write @bitmap @slow", Write, Allowed, "bitmap", "3.2.0", "Perform arbitrary bitfield integer operations on strings", bitmap::bitfield),
    cmd!("bitfield_ro", -2, "readonly fast", 1, 1, 1, "@read @bitmap @fast", Read, Allowed, "bitmap", "6.0.0", "Perform arbitrary bitfield integer operations on strings. Read-only variant of BITFIELD", bitmap::bitfield_ro),
    cmd!("incr", 2, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Increment the integer value of a key by one", string::incr),
    cmd!("decr", 2, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Decrement the integer value of a key by one", string::decr),
    cmd!("incrby", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Increment the integer value of a key by the given amount", string::incrby),
    cmd!("decrby", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "1.0.0", "Decrement the integer value of a key by the given number", string::decrby),
    cmd!("incrbyfloat", 3, "write denyoom fast", 1, 1, 1, WF, Write, Allowed, "string", "2.6.0", "Increment the float value of a key by the given amount", string::incrbyfloat),
    cmd!("lcs", -3, "readonly", 1, 2, 1, "@read @string @slow", Read, Allowed, "string", "7.0.0", "Find longest common substring", string::lcs),
    // ---- keys (generic) ----
    cmd!("del", -2, "write", 1, -1, 1, "@keyspace @write @slow", Write, Allowed, "generic", "1.0.0", "Delete a key", keys::del),
    cmd!("unlink", -2, "write fast", 1, -1, 1, KW, Write, Allowed, "generic", "4.0.0", "Delete a key asynchronously in another thread", keys::del),
    cmd!("exists", -2, "readonly fast", 1, -1, 1, KR, Read, Allowed, "generic", "1.0.0", "Determine if a key exists", keys::exists),
    cmd!("type", 2, "readonly fast", 1, 1, 1, KR, Read, Allowed, "generic", "1.0.0", "Determine the type stored at key", keys::type_),
    cmd!("expire", -3, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "1.0.0", "Set a key's time to live in seconds", keys::expire),
    cmd!("pexpire", -3, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "2.6.0", "Set a key's time to live in milliseconds", keys::pexpire),
    cmd!("expireat", -3, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "1.2.0", "Set the expiration for a key as a UNIX timestamp", keys::expireat),
    cmd!("pexpireat", -3, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "2.6.0", "Set the expiration for a key as a UNIX timestamp specified in milliseconds", keys::pexpireat),
    cmd!("ttl", 2, "readonly fast", 1, 1, 1, KR, Read, Allowed, "generic", "1.0.0", "Get the time to live for a key in seconds", keys::ttl),
    cmd!("pttl", 2, "readonly fast", 1, 1, 1, KR, Read, Allowed, "generic", "2.6.0", "Get the time to live for a key in milliseconds", keys::pttl),
    cmd!("expiretime", 2, "readonly fast", 1, 1, 1, KR, Read, Allowed, "generic", "7.0.0", "Get the expiration Unix timestamp for a key", keys::expiretime),
    cmd!("pexpiretime", 2, "readonly fast", 1, 1, 1, KR, Read, Allowed, "generic", "7.0.0", "Get the expiration Unix timestamp for a key in milliseconds", keys::pexpiretime),
    cmd!("persist", 2, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "2.2.0", "Remove the expiration from a key", keys::persist),
    cmd!("keys", 2, "readonly", 0, 0, 0, "@keyspace @read @slow @dangerous", Read, Allowed, "generic", "1.0.0", "Find all keys matching the given pattern", keys::keys),
    cmd!("scan", -2, "readonly", 0, 0, 0, "@keyspace @read @slow", Read, Allowed, "generic", "2.8.0", "Incrementally iterate the keys space", keys::scan),
    cmd!("randomkey", 1, "readonly", 0, 0, 0, "@keyspace @read @slow", Read, Allowed, "generic", "1.0.0", "Return a random key from the keyspace", keys::randomkey),
    cmd!("rename", 3, "write", 1, 2, 1, "@keyspace @write @slow", Write, Allowed, "generic", "1.0.0", "Rename a key", keys::rename),
    cmd!("renamenx", 3, "write fast", 1, 2, 1, KW, Write, Allowed, "generic", "1.0.0", "Rename a key, only if the new key does not exist", keys::renamenx),
    cmd!("copy", -3, "write denyoom", 1, 2, 1, "@keyspace @write @slow", Write, Allowed, "generic", "6.2.0", "Copy a key", keys::copy),
    cmd!("dump", 2, "readonly", 1, 1, 1, "@keyspace @read @slow", Read, Allowed, "generic", "2.6.0", "Return a serialized version of the value stored at the specified key.", dump::dump),
    cmd!("restore", -4, "write denyoom", 1, 1, 1, "@keyspace @write @slow @dangerous", Write, Allowed, "generic", "2.6.0", "Create a key using the provided serialized value, previously obtained using DUMP.", dump::restore),
    // A customer's database may not open connections elsewhere (cmd/migrate.rs).
    cmd!("migrate", -6, "write movablekeys", 3, 3, 1, "@keyspace @write @slow @dangerous", Write, Denied, "generic", "2.6.0", "Atomically transfer a key from a Redis instance to another one.", migrate::migrate),
    cmd!("move", 3, "write fast", 1, 1, 1, KW, Write, Allowed, "generic", "1.0.0", "Move a key to another database", keys::move_),
    cmd!("touch", -2, "readonly fast", 1, -1, 1, KR, Read, Allowed, "generic", "3.2.1", "Alters the last access time of a key(s). Returns the number of existing keys specified.", keys::touch),
    cmd!("dbsize", 1, "readonly fast", 0, 0, 0, KR, Read, Allowed, "server", "1.0.0", "Return the number of keys in the selected database", server::dbsize),
    cmd!("flushdb", -1, "write", 0, 0, 0, "@keyspace @write @slow @dangerous", Write, Allowed, "server", "1.0.0", "Remove all keys from the current database", server::flushdb),
    cmd!("flushall", -1, "write", 0, 0, 0, "@keyspace @write @slow @dangerous", Write, OwnTenant, "server", "1.0.0", "Remove all keys from all databases", server::flushall),
    cmd!("swapdb", 3, "write fast", 0, 0, 0, "@keyspace @write @fast @dangerous", Write, Allowed, "server", "4.0.0", "Swaps two Redis databases", server::swapdb),
    cmd!("select", 2, "loading stale fast", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "1.0.0", "Change the selected database for the current connection", connection::select),
    container!("object", "@slow", Read, Allowed, "generic", "2.2.3", "A container for object introspection commands", OBJECT_SUBS),
    // ---- connection ----
    cmd!("ping", -1, "fast", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "1.0.0", "Ping the server", connection::ping),
    cmd!("echo", 2, "fast loading stale", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "1.0.0", "Echo the given string", connection::echo),
    cmd!("quit", -1, "noscript loading stale fast no_auth allow_busy", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "1.0.0", "Close the connection", connection::quit),
    cmd!("reset", 1, "noscript loading stale fast no_auth allow_busy", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "6.2.0", "Reset the connection", connection::reset),
    cmd!("auth", -2, "noscript loading stale fast no_auth allow_busy", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "1.0.0", "Authenticate to the server", connection::auth),
    cmd!("hello", -1, "noscript loading stale fast no_auth allow_busy", 0, 0, 0, "@fast @connection", Connection, Allowed, "connection", "6.0.0", "Handshake with Redis", connection::hello),
    container!("client", "@slow", Connection, OwnTenant, "connection", "2.4.0", "A container for client connection commands", CLIENT_SUBS),
    container!("acl", "@slow", Admin, OwnTenant, "server", "6.0.0", "A container for Access List Control commands", ACL_SUBS),
    // ---- server ----
    container!("config", "@slow", Admin, OwnTenant, "server", "2.0.0", "A container for server configuration commands", CONFIG_SUBS),
    CommandSpec {
        arity: -1,
        flags: "loading stale",
        handler: command::all,
        ..container!("command", "@slow @connection", Connection, Allowed, "server", "2.8.13", "Get array of Redis command details", COMMAND_SUBS)
    },
    cmd!("info", -1, "loading stale", 0, 0, 0, "@slow @dangerous", Admin, OwnTenant, "server", "1.0.0", "Get information and statistics about the server", info::info),
    cmd!("time", 1, "loading stale fast", 0, 0, 0, "@fast", Read, Allowed, "server", "2.6.0", "Return the current server time", server::time),
    cmd!("lastsave", 1, "loading stale fast", 0, 0, 0, "@fast @admin @dangerous", Admin, OwnTenant, "server", "1.0.0", "Get the UNIX time stamp of the last successful save to disk", server::lastsave),
    cmd!("save", 1, "admin noscript no_async_loading no_multi", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "Synchronously save the dataset to disk", server::save),
    cmd!("bgsave", -1, "admin noscript no_async_loading", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "Asynchronously save the dataset to disk", server::bgsave),
    cmd!("bgrewriteaof", 1, "admin noscript no_async_loading", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "Asynchronously rewrite the append-only file", server::bgrewriteaof),
    cmd!("debug", -2, "admin noscript loading stale protected", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "A container for debugging commands", debug::debug),
    cmd!("shutdown", -1, "admin noscript loading stale no_multi allow_busy", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "Synchronously save the dataset to disk and then shut down the server", server::shutdown),
    cmd!("monitor", 1, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "1.0.0", "Listen for all requests received by the server in real time", server::monitor),
    cmd!("psync", -3, "admin noscript no_async_loading no_multi", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "2.8.0", "An internal command used in replication", replication::psync),
    cmd!("sync", 1, "admin noscript no_async_loading no_multi", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "An internal command used in replication", replication::sync),
    cmd!("replconf", -1, "admin noscript loading stale allow_busy", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "3.0.0", "An internal command for configuring the replication stream", replication::replconf),
    cmd!("failover", -1, "admin noscript stale", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "6.2.0", "Start a coordinated failover between this server and one of its replicas.", replication::failover),
    cmd!("replicaof", 3, "admin noscript stale no_async_loading", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "5.0.0", "Make the server a replica of another instance, or promote it as master", replication::replicaof),
    cmd!("slaveof", 3, "admin noscript stale no_async_loading", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "1.0.0", "Make the server a replica of another instance, or promote it as master", replication::replicaof),
    cmd!("role", 1, "noscript loading stale fast", 0, 0, 0, "@admin @fast @dangerous", Admin, OwnTenant, "server", "2.8.12", "Returns the replication role", replication::role),
    cmd!("wait", 3, "noscript", 0, 0, 0, "@slow @connection", Write, Allowed, "generic", "3.0.0", "Wait for the synchronous replication of all the write commands sent in the context of the current connection", server::wait),
    container!("slowlog", "@slow", Admin, OwnTenant, "server", "2.2.12", "A container for slow log commands", SLOWLOG_SUBS),
    cmd!("eval", -3, "noscript stale skip_monitor may_replicate no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Write, Allowed, "scripting", "2.6.0", "Execute a Lua script server side", crate::script::eval::eval),
    cmd!("evalsha", -3, "noscript stale skip_monitor may_replicate no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Write, Allowed, "scripting", "2.6.0", "Execute a Lua script server side", crate::script::eval::evalsha),
    cmd!("eval_ro", -3, "readonly noscript stale skip_monitor no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Read, Allowed, "scripting", "7.0.0", "Execute a read-only Lua script server side", crate::script::eval::eval_ro),
    cmd!("evalsha_ro", -3, "readonly noscript stale skip_monitor no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Read, Allowed, "scripting", "7.0.0", "Execute a read-only Lua script server side", crate::script::eval::evalsha_ro),
    container!("script", "@slow", Admin, Allowed, "scripting", "2.6.0", "A container for Lua scripts management commands", SCRIPT_SUBS),
    cmd!("fcall", -3, "noscript stale skip_monitor may_replicate no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Write, Allowed, "scripting", "7.0.0", "Invoke a function", function::fcall),
    cmd!("fcall_ro", -3, "readonly noscript stale skip_monitor no_mandatory_keys movablekeys", 0, 0, 0, "@slow @scripting", Read, Allowed, "scripting", "7.0.0", "Invoke a read-only function", function::fcall_ro),
    container!("function", "@slow", Admin, Allowed, "scripting", "7.0.0", "A container for function commands", FUNCTION_SUBS),
    container!("latency", "@slow", Admin, OwnTenant, "server", "2.8.13", "A container for latency diagnostics commands", LATENCY_SUBS),
    cmd!("lolwut", -1, "readonly fast", 0, 0, 0, "@read @fast", Read, Allowed, "server", "5.0.0", "Display some computer art and the Redis version", lolwut::lolwut),
    container!("memory", "@slow", Admin, OwnTenant, "server", "4.0.0", "A container for memory diagnostics commands", MEMORY_SUBS),
    // ---- lists ----
    cmd!("lpush", -3, "write denyoom fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "1.0.0", "Prepend one or multiple elements to a list", super::list::lpush),
    cmd!("rpush", -3, "write denyoom fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "1.0.0", "Append one or multiple elements to a list", super::list::rpush),
    cmd!("lpushx", -3, "write denyoom fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "2.2.0", "Prepend an element to a list, only if the list exists", super::list::lpushx),
    cmd!("rpushx", -3, "write denyoom fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "2.2.0", "Append an element to a list, only if the list exists", super::list::rpushx),
    cmd!("lpop", -2, "write fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "1.0.0", "Remove and get the first elements in a list", super::list::lpop),
    cmd!("rpop", -2, "write fast", 1, 1, 1, "@write @list @fast", Write, Allowed, "list", "1.0.0", "Remove and get the last elements in a list", super::list::rpop),
    cmd!("llen", 2, "readonly fast", 1, 1, 1, "@read @list @fast", Read, Allowed, "list", "1.0.0", "Get the length of a list", super::list::llen),
    cmd!("lrange", 4, "readonly", 1, 1, 1, "@read @list @slow", Read, Allowed, "list", "1.0.0", "Get a range of elements from a list", super::list::lrange),
    cmd!("lindex", 3, "readonly", 1, 1, 1, "@read @list @slow", Read, Allowed, "list", "1.0.0", "Get an element from a list by its index", super::list::lindex),
    cmd!("lset", 4, "write denyoom", 1, 1, 1, "@write @list @slow", Write, Allowed, "list", "1.0.0", "Set the value of an element in a list by its index", super::list::lset),
    cmd!("linsert", 5, "write denyoom", 1, 1, 1, "@write @list @slow", Write, Allowed, "list", "2.2.0", "Insert an element before or after another element in a list", super::list::linsert),
    cmd!("lrem", 4, "write", 1, 1, 1, "@write @list @slow", Write, Allowed, "list", "1.0.0", "Remove elements from a list", super::list::lrem),
    cmd!("ltrim", 4, "write", 1, 1, 1, "@write @list @slow", Write, Allowed, "list", "1.0.0", "Trim a list to the specified range", super::list::ltrim),
    cmd!("lpos", -3, "readonly", 1, 1, 1, "@read @list @slow", Read, Allowed, "list", "6.0.6", "Return the index of matching elements on a list", super::list::lpos),
    cmd!("lmove", 5, "write denyoom", 1, 2, 1, "@write @list @slow", Write, Allowed, "list", "6.2.0", "Pop an element from a list, push it to another list and return it", super::list::lmove),
    cmd!("rpoplpush", 3, "write denyoom", 1, 2, 1, "@write @list @slow", Write, Allowed, "list", "1.2.0", "Remove the last element in a list, prepend it to another list and return it", super::list::rpoplpush),
    cmd!("lmpop", -4, "write movablekeys", 0, 0, 0, "@write @list @slow", Write, Allowed, "list", "7.0.0", "Pop elements from a list", super::list::lmpop),
    // ---- hashes ----
    cmd!("hset", -4, "write denyoom fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.0.0", "Set the string value of a hash field", super::hash::hset),
    cmd!("hsetnx", 4, "write denyoom fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.0.0", "Set the value of a hash field, only if the field does not exist", super::hash::hsetnx),
    cmd!("hget", 3, "readonly fast", 1, 1, 1, "@read @hash @fast", Read, Allowed, "hash", "2.0.0", "Get the value of a hash field", super::hash::hget),
    cmd!("hmget", -3, "readonly fast", 1, 1, 1, "@read @hash @fast", Read, Allowed, "hash", "2.0.0", "Get the values of all the given hash fields", super::hash::hmget),
    cmd!("hmset", -4, "write denyoom fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.0.0", "Set multiple hash fields to multiple values", super::hash::hset),
    cmd!("hdel", -3, "write fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.0.0", "Delete one or more hash fields", super::hash::hdel),
    cmd!("hlen", 2, "readonly fast", 1, 1, 1, "@read @hash @fast", Read, Allowed, "hash", "2.0.0", "Get the number of fields in a hash", super::hash::hlen),
    cmd!("hstrlen", 3, "readonly fast", 1, 1, 1, "@read @hash @fast", Read, Allowed, "hash", "3.2.0", "Get the length of the value of a hash field", super::hash::hstrlen),
    cmd!("hexists", 3, "readonly fast", 1, 1, 1, "@read @hash @fast", Read, Allowed, "hash", "2.0.0", "Determine if a hash field exists", super::hash::hexists),
    cmd!("hkeys", 2, "readonly", 1, 1, 1, "@read @hash @slow", Read, Allowed, "hash", "2.0.0", "Get all the fields in a hash", super::hash::hkeys),
    cmd!("hvals", 2, "readonly", 1, 1, 1, "@read @hash @slow", Read, Allowed, "hash", "2.0.0", "Get all the values in a hash", super::hash::hvals),
    cmd!("hgetall", 2, "readonly", 1, 1, 1, "@read @hash @slow", Read, Allowed, "hash", "2.0.0", "Get all the fields and values in a hash", super::hash::hgetall),
    cmd!("hincrby", 4, "write denyoom fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.0.0", "Increment the integer value of a hash field by the given number", super::hash::hincrby),
    cmd!("hincrbyfloat", 4, "write denyoom fast", 1, 1, 1, "@write @hash @fast", Write, Allowed, "hash", "2.6.0", "Increment the float value of a hash field by the given amount", super::hash::hincrbyfloat),
    cmd!("hrandfield", -2, "readonly", 1, 1, 1, "@read @hash @slow", Read, Allowed, "hash", "6.2.0", "Get one or multiple random fields from a hash", super::hash::hrandfield),
    cmd!("hscan", -3, "readonly", 1, 1, 1, "@read @hash @slow", Read, Allowed, "hash", "2.8.0", "Incrementally iterate hash fields and associated values", super::hash::hscan),
    // ---- sets ----
    cmd!("sadd", -3, "write denyoom fast", 1, 1, 1, "@write @set @fast", Write, Allowed, "set", "1.0.0", "Add one or more members to a set", super::set::sadd),
    cmd!("srem", -3, "write fast", 1, 1, 1, "@write @set @fast", Write, Allowed, "set", "1.0.0", "Remove one or more members from a set", super::set::srem),
    cmd!("smembers", 2, "readonly", 1, 1, 1, "@read @set @slow", Read, Allowed, "set", "1.0.0", "Get all the members in a set", super::set::smembers),
    cmd!("sismember", 3, "readonly fast", 1, 1, 1, "@read @set @fast", Read, Allowed, "set", "1.0.0", "Determine if a given value is a member of a set", super::set::sismember),
    cmd!("smismember", -3, "readonly fast", 1, 1, 1, "@read @set @fast", Read, Allowed, "set", "6.2.0", "Returns the membership associated with the given elements for a set", super::set::smismember),
    cmd!("scard", 2, "readonly fast", 1, 1, 1, "@read @set @fast", Read, Allowed, "set", "1.0.0", "Get the number of members in a set", super::set::scard),
    CommandSpec {
        nondeterministic: true,
        ..cmd!("spop", -2, "write fast", 1, 1, 1, "@write @set @fast", Write, Allowed, "set", "1.0.0", "Remove and return one or multiple random members from a set", super::set::spop)
    },
    cmd!("srandmember", -2, "readonly", 1, 1, 1, "@read @set @slow", Read, Allowed, "set", "1.0.0", "Get one or multiple random members from a set", super::set::srandmember),
    cmd!("smove", 4, "write fast", 1, 2, 1, "@write @set @fast", Write, Allowed, "set", "1.0.0", "Move a member from one set to another", super::set::smove),
    cmd!("sinter", -2, "readonly", 1, -1, 1, "@read @set @slow", Read, Allowed, "set", "1.0.0", "Intersect multiple sets", super::set::sinter),
    cmd!("sintercard", -3, "readonly movablekeys", 0, 0, 0, "@read @set @slow", Read, Allowed, "set", "7.0.0", "Intersect multiple sets and return the cardinality of the result", super::set::sintercard),
    cmd!("sunion", -2, "readonly", 1, -1, 1, "@read @set @slow", Read, Allowed, "set", "1.0.0", "Add multiple sets", super::set::sunion),
    cmd!("sdiff", -2, "readonly", 1, -1, 1, "@read @set @slow", Read, Allowed, "set", "1.0.0", "Subtract multiple sets", super::set::sdiff),
    cmd!("sinterstore", -3, "write denyoom", 1, -1, 1, "@write @set @slow", Write, Allowed, "set", "1.0.0", "Intersect multiple sets and store the resulting set in a key", super::set::sinterstore),
    cmd!("sunionstore", -3, "write denyoom", 1, -1, 1, "@write @set @slow", Write, Allowed, "set", "1.0.0", "Add multiple sets and store the resulting set in a key", super::set::sunionstore),
    cmd!("sdiffstore", -3, "write denyoom", 1, -1, 1, "@write @set @slow", Write, Allowed, "set", "1.0.0", "Subtract multiple sets and store the resulting set in a key", super::set::sdiffstore),
    cmd!("sscan", -3, "readonly", 1, 1, 1, "@read @set @slow", Read, Allowed, "set", "2.8.0", "Incrementally iterate Set elements", super::set::sscan),
    // ---- sorted sets ----
    cmd!("geoadd", -5, "write denyoom", 1, 1, 1, "@write @geo @slow", Write, Allowed, "geo", "3.2.0", "Add one or more geospatial items in the geospatial index represented using a sorted set", super::geo::geoadd),
    cmd!("geodist", -4, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "3.2.0", "Returns the distance between two members of a geospatial index", super::geo::geodist),
    cmd!("geohash", -2, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "3.2.0", "Returns members of a geospatial index as standard geohash strings", super::geo::geohash),
    cmd!("geopos", -2, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "3.2.0", "Returns longitude and latitude of members of a geospatial index", super::geo::geopos),
    cmd!("georadius", -6, "write denyoom movablekeys", 1, 1, 1, "@write @geo @slow", Write, Allowed, "geo", "3.2.0", "Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a point", super::geo::georadius),
    cmd!("georadius_ro", -6, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "3.2.10", "A read-only variant for GEORADIUS", super::geo::georadius_ro),
    cmd!("georadiusbymember", -5, "write denyoom movablekeys", 1, 1, 1, "@write @geo @slow", Write, Allowed, "geo", "3.2.0", "Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a member", super::geo::georadiusbymember),
    cmd!("georadiusbymember_ro", -5, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "3.2.10", "A read-only variant for GEORADIUSBYMEMBER", super::geo::georadiusbymember_ro),
    cmd!("geosearch", -7, "readonly", 1, 1, 1, "@read @geo @slow", Read, Allowed, "geo", "6.2.0", "Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle.", super::geo::geosearch),
    cmd!("geosearchstore", -8, "write denyoom", 1, 2, 1, "@write @geo @slow", Write, Allowed, "geo", "6.2.0", "Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle, and store the result in another key.", super::geo::geosearchstore),
    cmd!("zadd", -4, "write denyoom fast", 1, 1, 1, "@write @sortedset @fast", Write, Allowed, "sorted-set", "1.2.0", "Add one or more members to a sorted set, or update its score if it already exists", super::zset::zadd),
    cmd!("zincrby", 4, "write denyoom fast", 1, 1, 1, "@write @sortedset @fast", Write, Allowed, "sorted-set", "1.2.0", "Increment the score of a member in a sorted set", super::zset::zincrby),
    cmd!("zrem", -3, "write fast", 1, 1, 1, "@write @sortedset @fast", Write, Allowed, "sorted-set", "1.2.0", "Remove one or more members from a sorted set", super::zset::zrem),
    cmd!("xadd", -5, "write denyoom fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "5.0.0", "Appends a new entry to a stream", super::stream::xadd),
    cmd!("xlen", 2, "readonly fast", 1, 1, 1, "@read @stream @fast", Read, Allowed, "stream", "5.0.0", "Return the number of entries in a stream", super::stream::xlen),
    cmd!("xrange", -4, "readonly", 1, 1, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "Return a range of elements in a stream, with IDs matching the specified IDs interval", super::stream::xrange),
    cmd!("xrevrange", -4, "readonly", 1, 1, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "Return a range of elements in a stream, with IDs matching the specified IDs interval, in reverse order (from greater to smaller IDs) compared to XRANGE", super::stream::xrevrange),
    cmd!("xdel", -3, "write fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "5.0.0", "Removes the specified entries from the stream. Returns the number of items actually deleted, that may be different from the number of IDs passed in case certain IDs do not exist.", super::stream::xdel),
    cmd!("xtrim", -4, "write", 1, 1, 1, "@write @stream @slow", Write, Allowed, "stream", "5.0.0", "Trims the stream to (approximately if '~' is passed) a certain size", super::stream::xtrim),
    cmd!("xsetid", -3, "write denyoom fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "5.0.0", "An internal command for replicating stream values", super::stream::xsetid),
    cmd!("xread", -4, "readonly blocking movablekeys", 0, 0, 0, "@read @stream @slow @blocking", Read, Allowed, "stream", "5.0.0", "Return never seen elements in multiple streams, with IDs greater than the ones reported by the caller for each stream. Can block.", super::stream::xread),
    cmd!("xreadgroup", -7, "write blocking movablekeys", 0, 0, 0, "@write @stream @slow @blocking", Write, Allowed, "stream", "5.0.0", "Return new entries from a stream using a consumer group, or access the history of the pending entries for a given consumer. Can block.", super::stream::group::xreadgroup),
    cmd!("xack", -4, "write fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "5.0.0", "Marks a pending message as correctly processed, effectively removing it from the pending entries list of the consumer group. Return value of the command is the number of messages successfully acknowledged, that is, the IDs we were actually able to resolve in the PEL.", super::stream::group::xack),
    cmd!("xpending", -3, "readonly", 1, 1, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "Return information and entries from a stream consumer group pending entries list, that are messages fetched but never acknowledged.", super::stream::group::xpending),
    cmd!("xclaim", -6, "write fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "5.0.0", "Changes (or acquires) ownership of a message in a consumer group, as if the message was delivered to the specified consumer.", super::stream::group::xclaim),
    cmd!("xautoclaim", -6, "write fast", 1, 1, 1, "@write @stream @fast", Write, Allowed, "stream", "6.2.0", "Changes (or acquires) ownership of messages in a consumer group, as if the messages were delivered to the specified consumer.", super::stream::group::xautoclaim),
    container!("xgroup", "@slow", Write, Allowed, "stream", "5.0.0", "A container for consumer groups commands", XGROUP_SUBS),
    container!("xinfo", "@slow", Read, Allowed, "stream", "5.0.0", "A container for stream introspection commands", XINFO_SUBS),
    cmd!("zcard", 2, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "1.2.0", "Get the number of members in a sorted set", super::zset::zcard),
    cmd!("zcount", 4, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "2.0.0", "Count the members in a sorted set with scores within the given values", super::zset::zcount),
    cmd!("zlexcount", 4, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "2.8.9", "Count the number of members in a sorted set between a given lexicographical range", super::zset::zlexcount),
    cmd!("zscore", 3, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "1.2.0", "Get the score associated with the given member in a sorted set", super::zset::zscore),
    cmd!("zmscore", -3, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "6.2.0", "Get the score associated with the given members in a sorted set", super::zset::zmscore),
    cmd!("zrank", 3, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "2.0.0", "Determine the index of a member in a sorted set", super::zset::zrank),
    cmd!("zrevrank", 3, "readonly fast", 1, 1, 1, "@read @sortedset @fast", Read, Allowed, "sorted-set", "2.0.0", "Determine the index of a member in a sorted set, with scores ordered from high to low", super::zset::zrevrank),
    cmd!("zrange", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "1.2.0", "Return a range of members in a sorted set", super::zset::zrange),
    cmd!("zrangestore", -5, "write denyoom", 1, 2, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "6.2.0", "Store a range of members from sorted set into another key", super::zset::zrangestore),
    cmd!("zrevrange", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "1.2.0", "Return a range of members in a sorted set, by index, with scores ordered from high to low", super::zset::zrevrange),
    cmd!("zrangebyscore", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "1.0.5", "Return a range of members in a sorted set, by score", super::zset::zrangebyscore),
    cmd!("zrevrangebyscore", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "2.2.0", "Return a range of members in a sorted set, by score, with scores ordered from high to low", super::zset::zrevrangebyscore),
    cmd!("zrangebylex", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "2.8.9", "Return a range of members in a sorted set, by lexicographical range", super::zset::zrangebylex),
    cmd!("zrevrangebylex", -4, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "2.8.9", "Return a range of members in a sorted set, by lexicographical range, ordered from higher to lower strings.", super::zset::zrevrangebylex),
    cmd!("zremrangebyrank", 4, "write", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "2.0.0", "Remove all members in a sorted set within the given indexes", super::zset::zremrangebyrank),
    cmd!("zremrangebyscore", 4, "write", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "1.2.0", "Remove all members in a sorted set within the given scores", super::zset::zremrangebyscore),
    cmd!("zremrangebylex", 4, "write", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "2.8.9", "Remove all members in a sorted set between the given lexicographical range", super::zset::zremrangebylex),
    cmd!("zpopmin", -2, "write fast", 1, 1, 1, "@write @sortedset @fast", Write, Allowed, "sorted-set", "5.0.0", "Remove and return members with the lowest scores in a sorted set", super::zset::zpopmin),
    cmd!("zpopmax", -2, "write fast", 1, 1, 1, "@write @sortedset @fast", Write, Allowed, "sorted-set", "5.0.0", "Remove and return members with the highest scores in a sorted set", super::zset::zpopmax),
    cmd!("zmpop", -4, "write movablekeys", 0, 0, 0, "@write @sortedset @slow", Write, Allowed, "sorted-set", "7.0.0", "Remove and return members with scores in a sorted set", super::zset::zmpop),
    cmd!("zrandmember", -2, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "6.2.0", "Get one or multiple random elements from a sorted set", super::zset::zrandmember),
    cmd!("zunion", -3, "readonly movablekeys", 0, 0, 0, "@read @sortedset @slow", Read, Allowed, "sorted-set", "6.2.0", "Add multiple sorted sets", super::zset::zunion),
    cmd!("zinter", -3, "readonly movablekeys", 0, 0, 0, "@read @sortedset @slow", Read, Allowed, "sorted-set", "6.2.0", "Intersect multiple sorted sets", super::zset::zinter),
    cmd!("zdiff", -3, "readonly movablekeys", 0, 0, 0, "@read @sortedset @slow", Read, Allowed, "sorted-set", "6.2.0", "Subtract multiple sorted sets", super::zset::zdiff),
    cmd!("zunionstore", -4, "write denyoom movablekeys", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "2.0.0", "Add multiple sorted sets and store the resulting sorted set in a new key", super::zset::zunionstore),
    cmd!("zinterstore", -4, "write denyoom movablekeys", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "2.0.0", "Intersect multiple sorted sets and store the resulting sorted set in a new key", super::zset::zinterstore),
    cmd!("zdiffstore", -4, "write denyoom movablekeys", 1, 1, 1, "@write @sortedset @slow", Write, Allowed, "sorted-set", "6.2.0", "Subtract multiple sorted sets and store the resulting sorted set in a new key", super::zset::zdiffstore),
    cmd!("zintercard", -3, "readonly movablekeys", 0, 0, 0, "@read @sortedset @slow", Read, Allowed, "sorted-set", "7.0.0", "Intersect multiple sorted sets and return the cardinality of the result", super::zset::zintercard),
    cmd!("zscan", -3, "readonly", 1, 1, 1, "@read @sortedset @slow", Read, Allowed, "sorted-set", "2.8.0", "Incrementally iterate sorted sets elements and associated scores", super::zset::zscan),
    // ---- sort ----
    cmd!("sort", -2, "write denyoom movablekeys", 1, 1, 1, "@write @set @sortedset @list @slow @dangerous", Write, Allowed, "generic", "1.0.0", "Sort the elements in a list, set or sorted set", super::sort::sort),
    cmd!("sort_ro", -2, "readonly movablekeys", 1, 1, 1, "@read @set @sortedset @list @slow @dangerous", Read, Allowed, "generic", "7.0.0", "Sort the elements in a list, set or sorted set. Read-only variant of SORT.", super::sort::sort_ro),
    // ---- blocking ----
    cmd!("blpop", -3, "write noscript blocking", 1, -2, 1, "@write @list @slow @blocking", Blocking, Allowed, "list", "2.0.0", "Remove and get the first element in a list, or block until one is available", blocking::blpop),
    cmd!("brpop", -3, "write noscript blocking", 1, -2, 1, "@write @list @slow @blocking", Blocking, Allowed, "list", "2.0.0", "Remove and get the last element in a list, or block until one is available", blocking::brpop),
    cmd!("brpoplpush", 4, "write denyoom noscript blocking", 1, 2, 1, "@write @list @slow @blocking", Blocking, Allowed, "list", "2.2.0", "Pop an element from a list, push it to another list and return it; or block until one is available", blocking::brpoplpush),
    cmd!("blmove", 6, "write denyoom noscript blocking", 1, 2, 1, "@write @list @slow @blocking", Blocking, Allowed, "list", "6.2.0", "Pop an element from a list, push it to another list and return it; or block until one is available", blocking::blmove),
    cmd!("blmpop", -5, "write blocking movablekeys", 0, 0, 0, "@write @list @slow @blocking", Blocking, Allowed, "list", "7.0.0", "Pop elements from a list, or block until one is available", blocking::blmpop),
    cmd!("bzpopmin", -3, "write noscript blocking fast", 1, -2, 1, "@write @sortedset @fast @blocking", Blocking, Allowed, "sorted_set", "5.0.0", "Remove and return the member with the lowest score from one or more sorted sets, or block until one is available", blocking::bzpopmin),
    cmd!("bzpopmax", -3, "write noscript blocking fast", 1, -2, 1, "@write @sortedset @fast @blocking", Blocking, Allowed, "sorted_set", "5.0.0", "Remove and return the member with the highest score from one or more sorted sets, or block until one is available", blocking::bzpopmax),
    cmd!("bzmpop", -5, "write blocking movablekeys", 0, 0, 0, "@write @sortedset @slow @blocking", Blocking, Allowed, "sorted_set", "7.0.0", "Remove and return members with scores in a sorted set or block until one is available", blocking::bzmpop),
    // ---- transactions ----
    cmd!("multi", 1, "noscript loading stale fast allow_busy", 0, 0, 0, "@fast @transaction", Write, Allowed, "transactions", "1.2.0", "Mark the start of a transaction block", multi::multi),
    cmd!("exec", 1, "noscript loading stale skip_slowlog", 0, 0, 0, "@slow @transaction", Write, Allowed, "transactions", "1.2.0", "Execute all commands issued after MULTI", multi::exec),
    cmd!("discard", 1, "noscript loading stale fast allow_busy", 0, 0, 0, "@fast @transaction", Write, Allowed, "transactions", "2.0.0", "Discard all commands issued after MULTI", multi::discard),
    cmd!("watch", -2, "noscript loading stale fast allow_busy", 1, -1, 1, "@fast @transaction", Write, Allowed, "transactions", "2.2.0", "Watch the given keys to determine execution of the MULTI/EXEC block", multi::watch),
    cmd!("unwatch", 1, "noscript loading stale fast allow_busy", 0, 0, 0, "@fast @transaction", Write, Allowed, "transactions", "2.2.0", "Forget about all watched keys", multi::unwatch),
    // ---- pub/sub ----
    cmd!("subscribe", -2, "pubsub noscript loading stale", 0, 0, 0, "@pubsub @slow", PubSub, Allowed, "pubsub", "2.0.0", "Listen for messages published to the given channels", pubsub::subscribe),
    cmd!("unsubscribe", -1, "pubsub noscript loading stale", 0, 0, 0, "@pubsub @slow", PubSub, Allowed, "pubsub", "2.0.0", "Stop listening for messages posted to the given channels", pubsub::unsubscribe),
    cmd!("psubscribe", -2, "pubsub noscript loading stale", 0, 0, 0, "@pubsub @slow", PubSub, Allowed, "pubsub", "2.0.0", "Listen for messages published to channels matching the given patterns", pubsub::psubscribe),
    cmd!("punsubscribe", -1, "pubsub noscript loading stale", 0, 0, 0, "@pubsub @slow", PubSub, Allowed, "pubsub", "2.0.0", "Stop listening for messages posted to channels matching the given patterns", pubsub::punsubscribe),
    cmd!("publish", 3, "pubsub loading stale fast may_replicate", 0, 0, 0, "@pubsub @fast", PubSub, Allowed, "pubsub", "2.0.0", "Post a message to a channel", pubsub::publish),
    cmd!("ssubscribe", -2, "pubsub noscript loading stale", 1, -1, 1, "@pubsub @slow", PubSub, Allowed, "pubsub", "7.0.0", "Listen for messages published to the given shard channels", pubsub::ssubscribe),
    cmd!("sunsubscribe", -1, "pubsub noscript loading stale", 1, -1, 1, "@pubsub @slow", PubSub, Allowed, "pubsub", "7.0.0", "Stop listening for messages posted to the given shard channels", pubsub::sunsubscribe),
    cmd!("spublish", 3, "pubsub loading stale fast may_replicate", 1, 1, 1, "@pubsub @fast", PubSub, Allowed, "pubsub", "7.0.0", "Post a message to a shard channel", pubsub::spublish),
    container!("pubsub", "@slow", PubSub, OwnTenant, "pubsub", "2.8.0", "A container for Pub/Sub commands", PUBSUB_SUBS),
];

#[rustfmt::skip]
static PUBSUB_SUBS: &[CommandSpec] = &[
    cmd!("channels", -2, "pubsub loading stale", 0, 0, 0, "@pubsub @slow", PubSub, OwnTenant, "pubsub", "2.8.0", "List active channels", pubsub::pubsub_channels),
    cmd!("numsub", -2, "pubsub loading stale", 0, 0, 0, "@pubsub @slow", PubSub, OwnTenant, "pubsub", "2.8.0", "Get the count of subscribers for channels", pubsub::pubsub_numsub),
    cmd!("numpat", 2, "pubsub loading stale", 0, 0, 0, "@pubsub @slow", PubSub, OwnTenant, "pubsub", "2.8.0", "Get the count of unique patterns pattern subscriptions", pubsub::pubsub_numpat),
    cmd!("shardchannels", -2, "pubsub loading stale", 0, 0, 0, "@pubsub @slow", PubSub, OwnTenant, "pubsub", "7.0.0", "List active shard channels", pubsub::pubsub_shardchannels),
    cmd!("shardnumsub", -2, "pubsub loading stale", 0, 0, 0, "@pubsub @slow", PubSub, OwnTenant, "pubsub", "7.0.0", "Get the count of subscribers for shard channels", pubsub::pubsub_shardnumsub),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", PubSub, Allowed, "pubsub", "6.2.0", "Show helpful text about the different subcommands", pubsub::pubsub_help),
];

#[rustfmt::skip]
static XGROUP_SUBS: &[CommandSpec] = &[
    cmd!("create", -5, "write denyoom", 2, 2, 1, "@write @stream @slow", Write, Allowed, "stream", "5.0.0", "Create a consumer group.", super::stream::group::xgroup_create),
    cmd!("createconsumer", 5, "write denyoom", 2, 2, 1, "@write @stream @slow", Write, Allowed, "stream", "6.2.0", "Create a consumer in a consumer group.", super::stream::group::xgroup_createconsumer),
    cmd!("delconsumer", 5, "write", 2, 2, 1, "@write @stream @slow", Write, Allowed, "stream", "5.0.0", "Delete a consumer from a consumer group.", super::stream::group::xgroup_delconsumer),
    cmd!("destroy", 4, "write", 2, 2, 1, "@write @stream @slow", Write, Allowed, "stream", "5.0.0", "Destroy a consumer group.", super::stream::group::xgroup_destroy),
    cmd!("setid", -5, "write", 2, 2, 1, "@write @stream @slow", Write, Allowed, "stream", "5.0.0", "Set a consumer group to an arbitrary last delivered ID value.", super::stream::group::xgroup_setid),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@stream @slow", Read, Allowed, "stream", "5.0.0", "Show helpful text about the different subcommands", super::stream::group::xgroup_help),
];

#[rustfmt::skip]
static XINFO_SUBS: &[CommandSpec] = &[
    cmd!("consumers", 4, "readonly", 2, 2, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "List the consumers in a consumer group", super::stream::info::xinfo_consumers),
    cmd!("groups", 3, "readonly", 2, 2, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "List the consumer groups of a stream", super::stream::info::xinfo_groups),
    cmd!("stream", -3, "readonly", 2, 2, 1, "@read @stream @slow", Read, Allowed, "stream", "5.0.0", "Get information about a stream", super::stream::info::xinfo_stream),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@stream @slow", Read, Allowed, "stream", "5.0.0", "Show helpful text about the different subcommands", super::stream::info::xinfo_help),
];

#[rustfmt::skip]
static OBJECT_SUBS: &[CommandSpec] = &[
    cmd!("encoding", 3, "readonly", 2, 2, 1, "@keyspace @read @slow", Read, Allowed, "generic", "2.2.3", "Inspect the internal encoding of a Redis object", keys::object_encoding),
    cmd!("freq", 3, "readonly", 2, 2, 1, "@keyspace @read @slow", Read, Allowed, "generic", "4.0.0", "Get the logarithmic access frequency counter of a Redis object", keys::object_freq),
    cmd!("idletime", 3, "readonly", 2, 2, 1, "@keyspace @read @slow", Read, Allowed, "generic", "2.2.3", "Get the time since a Redis object was last accessed", keys::object_idletime),
    cmd!("refcount", 3, "readonly", 2, 2, 1, "@keyspace @read @slow", Read, Allowed, "generic", "2.2.3", "Get the number of references to the value of the key", keys::object_refcount),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@keyspace @slow", Read, Allowed, "generic", "6.2.0", "Show helpful text about the different subcommands", keys::object_help),
];

#[rustfmt::skip]
static CLIENT_SUBS: &[CommandSpec] = &[
    cmd!("tracking", -3, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "6.0.0", "Enable or disable server assisted client side caching support", client::tracking),
    cmd!("caching", 3, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "6.0.0", "Instruct the server about tracking or not keys in the next request", client::caching),
    cmd!("getredir", 2, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "6.0.0", "Get tracking notifications redirection client ID if any", client::getredir),
    cmd!("trackinginfo", 2, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "6.2.0", "Return information about server assisted client side caching for the current connection", client::trackinginfo),
    cmd!("id", 2, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "5.0.0", "Returns the client ID for the current connection", client::id),
    cmd!("setname", 3, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "2.6.9", "Set the current connection name", client::setname),
    cmd!("getname", 2, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "2.6.9", "Get the current connection name", client::getname),
    cmd!("list", -2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, OwnTenant, "connection", "2.4.0", "Get the list of client connections", client::list),
    cmd!("info", 2, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "6.2.0", "Returns information about the current client connection.", client::info),
    cmd!("kill", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, OwnTenant, "connection", "2.4.0", "Kill the connection of a client", client::kill),
    cmd!("pause", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, OwnTenant, "connection", "2.9.50", "Stop processing commands from clients for some time", client::pause),
    cmd!("unpause", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, OwnTenant, "connection", "6.2.0", "Resume processing of clients that were paused", client::unpause),
    cmd!("no-evict", 3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, Allowed, "connection", "7.0.0", "Set client eviction mode for the current connection", client::no_evict),
    cmd!("reply", 3, "noscript loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "3.2.0", "Instruct the server whether to reply to commands", client::reply),
    cmd!("unblock", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous @connection", Connection, OwnTenant, "connection", "5.0.0", "Unblock a client blocked in a blocking command from a different connection", blocking::client_unblock),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "connection", "5.0.0", "Show helpful text about the different subcommands", client::help),
];

#[rustfmt::skip]
static ACL_SUBS: &[CommandSpec] = &[
    cmd!("cat", -2, "noscript loading stale", 0, 0, 0, "@slow", Connection, Allowed, "server", "6.0.0", "List the ACL categories or the commands inside a category", acl::cat),
    cmd!("deluser", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "Remove the specified ACL users and the associated rules", acl::deluser),
    cmd!("dryrun", -4, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "7.0.0", "Returns whether the user can execute the given command without executing the command.", acl::dryrun),
    cmd!("genpass", -2, "noscript loading stale", 0, 0, 0, "@slow", Connection, Allowed, "server", "6.0.0", "Generate a pseudorandom secure password to use for ACL users", acl::genpass),
    cmd!("getuser", 3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "Get the rules for a specific ACL user", acl::getuser),
    cmd!("list", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "List the current ACL rules in ACL config file format", acl::list),
    cmd!("load", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "Reload the ACLs from the configured ACL file", acl::load),
    cmd!("log", -2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "List latest events denied because of ACLs in place", acl::acl_log),
    cmd!("save", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "Save the current ACL rules in the configured ACL file", acl::save),
    cmd!("setuser", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "Modify or create the rules for a specific ACL user", acl::setuser),
    cmd!("users", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "6.0.0", "List the username of all the configured ACL rules", acl::users),
    cmd!("whoami", 2, "noscript loading stale", 0, 0, 0, "@slow", Connection, Allowed, "server", "6.0.0", "Return the name of the user associated to the current connection", acl::whoami),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", Connection, Allowed, "server", "6.0.0", "Show helpful text about the different subcommands", acl::help),
];

#[rustfmt::skip]
static CONFIG_SUBS: &[CommandSpec] = &[
    cmd!("get", -3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.0.0", "Get the values of configuration parameters", config::get),
    cmd!("set", -4, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "2.0.0", "Set configuration parameters to the given values", config::set),
    cmd!("resetstat", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.0.0", "Reset the stats returned by INFO", config::resetstat),
    cmd!("rewrite", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, Denied, "server", "2.8.0", "Rewrite the configuration file with the in memory configuration", config::rewrite),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", Admin, Allowed, "server", "5.0.0", "Show helpful text about the different subcommands", config::help),
];

#[rustfmt::skip]
static COMMAND_SUBS: &[CommandSpec] = &[
    cmd!("count", 2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "2.8.13", "Get total number of Redis commands", command::count),
    cmd!("info", -2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "2.8.13", "Get array of specific Redis command details, or all when no argument is given.", command::info),
    cmd!("docs", -2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "7.0.0", "Get array of specific Redis command documentation", command::docs),
    cmd!("list", -2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "7.0.0", "Get an array of Redis command names", command::list),
    cmd!("getkeys", -4, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "2.8.13", "Extract keys given a full Redis command", command::getkeys),
    cmd!("getkeysandflags", -4, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "7.0.0", "Extract keys and access flags given a full Redis command", command::getkeysandflags),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow @connection", Connection, Allowed, "server", "5.0.0", "Show helpful text about the different subcommands", command::help),
];

#[rustfmt::skip]
static SCRIPT_SUBS: &[CommandSpec] = &[
    cmd!("debug", 3, "noscript", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "3.2.0", "Set the debug mode for executed scripts.", script::debug),
    cmd!("exists", -3, "noscript", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "2.6.0", "Determine if server-side Lua scripts exist in the script cache", script::exists),
    cmd!("flush", -2, "noscript", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "2.6.0", "Remove all server-side Lua scripts from the script cache", script::flush),
    cmd!("kill", 2, "noscript allow_busy", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "2.6.0", "Terminate a server-side Lua script during execution", script::kill),
    cmd!("load", 3, "noscript stale", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "2.6.0", "Load a server-side Lua script to the script cache", script::load),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "5.0.0", "Show helpful text about the different subcommands", script::help),
];

#[rustfmt::skip]
static FUNCTION_SUBS: &[CommandSpec] = &[
    cmd!("delete", 3, "noscript write", 0, 0, 0, "@write @slow @scripting", Write, Allowed, "scripting", "7.0.0", "Delete a function by name", function::delete),
    cmd!("dump", 2, "noscript", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "7.0.0", "Dump all functions into a serialized binary payload", function::dump),
    cmd!("flush", -2, "noscript write", 0, 0, 0, "@write @slow @scripting", Write, Allowed, "scripting", "7.0.0", "Deleting all functions", function::flush),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "7.0.0", "Show helpful text about the different subcommands", function::help),
    cmd!("kill", 2, "noscript allow_busy", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "7.0.0", "Kill the function currently in execution.", function::kill),
    cmd!("list", -2, "noscript", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "7.0.0", "List information about all the functions", function::list),
    cmd!("load", -3, "noscript write denyoom", 0, 0, 0, "@write @slow @scripting", Write, Allowed, "scripting", "7.0.0", "Create a function with the given arguments (name, code, description)", function::load),
    cmd!("restore", -3, "noscript write denyoom", 0, 0, 0, "@write @slow @scripting", Write, Allowed, "scripting", "7.0.0", "Restore all the functions on the given payload", function::restore),
    cmd!("stats", 2, "noscript allow_busy", 0, 0, 0, "@slow @scripting", Admin, Allowed, "scripting", "7.0.0", "Return information about the function currently running (name, description, duration)", function::stats),
];

#[rustfmt::skip]
static MEMORY_SUBS: &[CommandSpec] = &[
    cmd!("doctor", 2, "", 0, 0, 0, "@slow", Admin, OwnTenant, "server", "4.0.0", "Outputs memory problems report", memory::doctor),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", Admin, OwnTenant, "server", "4.0.0", "Show helpful text about the different subcommands", memory::help),
    cmd!("malloc-stats", 2, "", 0, 0, 0, "@slow", Admin, OwnTenant, "server", "4.0.0", "Show allocator internal stats", memory::malloc_stats),
    cmd!("purge", 2, "", 0, 0, 0, "@slow", Admin, OwnTenant, "server", "4.0.0", "Ask the allocator to release memory", memory::purge),
    cmd!("stats", 2, "", 0, 0, 0, "@slow", Admin, OwnTenant, "server", "4.0.0", "Show memory usage details", memory::stats),
    cmd!("usage", -3, "readonly", 2, 2, 1, "@read @slow", Read, Allowed, "server", "4.0.0", "Estimate the memory usage of a key", memory::usage),
];

#[rustfmt::skip]
static SLOWLOG_SUBS: &[CommandSpec] = &[
    cmd!("get", -2, "admin loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.2.12", "Get the slow log's entries", server::slowlog_get),
    cmd!("len", 2, "admin loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.2.12", "Get the slow log's length", server::slowlog_len),
    cmd!("reset", 2, "admin loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.2.12", "Clear all entries from the slow log", server::slowlog_reset),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", Admin, Allowed, "server", "6.2.0", "Show helpful text about the different subcommands", server::slowlog_help),
];

#[rustfmt::skip]
static LATENCY_SUBS: &[CommandSpec] = &[
    cmd!("latest", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.8.13", "Return the latest latency samples for all events", latency::latest),
    cmd!("history", 3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.8.13", "Return timestamp-latency samples for the event", latency::history),
    cmd!("reset", -2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.8.13", "Reset latency data for one or more events", latency::reset),
    cmd!("graph", 3, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.8.13", "Return a latency graph for the event", latency::graph),
    cmd!("doctor", 2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "2.8.13", "Return a human readable latency analysis report", latency::doctor),
    cmd!("histogram", -2, "admin noscript loading stale", 0, 0, 0, "@admin @slow @dangerous", Admin, OwnTenant, "server", "7.0.0", "Return the cumulative distribution of latencies of a subset of commands or all commands", latency::histogram),
    cmd!("help", 2, "loading stale", 0, 0, 0, "@slow", Admin, Allowed, "server", "2.8.13", "Show helpful text about the different subcommands", latency::help),
];

/// A command with its position in the flattened registry.
pub struct Registered {
    pub id: usize,
    pub spec: &'static CommandSpec,
    /// `get`, or `client|list` for subcommands (Redis's "fullname").
    pub fullname: String,
    pub parent: Option<usize>,
    /// Flags the dispatcher checks on every call, decoded once.
    pub no_auth: bool,
    pub protected: bool,
    pub admin: bool,
    pub fast: bool,
    pub no_multi: bool,
    /// Refused inside scripts.
    pub noscript: bool,
    pub denyoom: bool,
    pub write: bool,
    /// Redis's `readonly` flag: reads the keyspace.
    pub read: bool,
    /// `write` or `may_replicate`: what CLIENT PAUSE WRITE holds back
    /// (Redis 7.0's `is_may_replicate_command`), since either can move the
    /// replication offset.
    pub may_replicate: bool,
}

impl Registered {
    /// EVAL, EVALSHA and FCALL: whether they write is known only once
    /// they run, so routing and the primary's checks count them as writes.
    pub fn runs_script(&self) -> bool {
        matches!(self.fullname.as_str(), "eval" | "evalsha" | "fcall")
    }

    fn new(id: usize, spec: &'static CommandSpec, fullname: String, parent: Option<usize>) -> Self {
        Registered {
            id,
            spec,
            fullname,
            parent,
            no_auth: spec.has_flag("no_auth"),
            protected: spec.has_flag("protected"),
            admin: spec.has_flag("admin"),
            fast: spec.has_flag("fast"),
            no_multi: spec.has_flag("no_multi"),
            noscript: spec.has_flag("noscript"),
            denyoom: spec.has_flag("denyoom"),
            write: spec.has_flag("write"),
            read: spec.has_flag("readonly"),
            may_replicate: spec.has_flag("write") || spec.has_flag("may_replicate"),
        }
    }
}

pub struct Registry {
    pub all: Vec<Registered>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    fn build() -> Registry {
        let mut all = Vec::new();
        let mut by_name = HashMap::new();
        for spec in COMMANDS {
            let id = all.len();
            by_name.insert(spec.name, id);
            all.push(Registered::new(id, spec, spec.name.to_string(), None));
            for sub in spec.subs {
                let sid = all.len();
                all.push(Registered::new(
                    sid,
                    sub,
                    format!("{}|{}", spec.name, sub.name),
                    Some(id),
                ));
            }
        }
        Registry { all, by_name }
    }

    pub fn top_level(&self) -> impl Iterator<Item = &Registered> {
        self.all.iter().filter(|r| r.parent.is_none())
    }

    pub fn subcommands(&self, id: usize) -> impl Iterator<Item = &Registered> {
        self.all.iter().filter(move |r| r.parent == Some(id))
    }

    pub fn by_name(&self, name: &[u8]) -> Option<&Registered> {
        let mut buf = [0u8; 32];
        if name.len() > buf.len() {
            return None;
        }
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let lower = std::str::from_utf8(&buf[..name.len()]).ok()?;
        self.by_name.get(lower).map(|&i| &self.all[i])
    }

    /// `client|list` style lookup (COMMAND INFO accepts it).
    pub fn by_fullname(&self, name: &[u8]) -> Option<&Registered> {
        let s = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        match s.split_once('|') {
            None => self.by_name(s.as_bytes()),
            Some((p, sub)) => {
                let parent = self.by_name(p.as_bytes())?;
                self.subcommands(parent.id).find(|r| r.spec.name == sub)
            }
        }
    }
}

pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::build)
}

/// Result of resolving a request's command.
pub enum Lookup {
    Found(&'static Registered),
    /// Unknown command name.
    Unknown,
    /// Known container, unknown subcommand.
    UnknownSub,
}

/// Resolves `args[0]` (and `args[1]` for containers) as Redis's
/// `lookupCommand` does: a container with no subcommand argument resolves
/// to the container itself, so its arity check fires.
pub fn lookup(args: &[&[u8]]) -> Lookup {
    let reg = registry();
    let Some(r) = reg.by_name(args[0]) else {
        return Lookup::Unknown;
    };
    if r.spec.subs.is_empty() || args.len() < 2 {
        return Lookup::Found(r);
    }
    let sub = args[1];
    for s in reg.subcommands(r.id) {
        if s.spec.name.as_bytes().eq_ignore_ascii_case(sub) {
            return Lookup::Found(s);
        }
    }
    Lookup::UnknownSub
}
