//! anykv router: the RESP proxy that will send reads to the nearest replica
//! that has the client's last write, and writes to the tenant's primary.
//!
//! Today the crate is only the routing decision, taken from the store's one
//! command table (each row's route class): [`classify`] maps a request to a
//! [`Target`]. It declares no modules besides its unit tests (`tests`).
//! Planned: the proxy itself (classification, per-connection
//! read-your-writes state, upstream pools, per-tenant limits).

use anykv_server::cmd::{lookup, Lookup, Route};

/// Where a request must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any replica that has the client's last write.
    Replica,
    /// The tenant's primary (writes, blocking, pub/sub, admin).
    Primary,
    /// Answered by the router from connection state.
    Local,
    /// Unknown command: forwarded so the store produces Redis's error.
    Unknown,
}

/// Classifies a request by the command table's route class.
pub fn classify(args: &[&[u8]]) -> Target {
    if args.is_empty() {
        return Target::Local;
    }
    match lookup(args) {
        Lookup::Found(r) => match r.spec.route {
            Route::Read => Target::Replica,
            Route::Connection => Target::Local,
            Route::Write | Route::Admin | Route::PubSub | Route::Blocking => Target::Primary,
        },
        _ => Target::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_connection_commands() {
        assert_eq!(classify(&[b"GET", b"k"]), Target::Replica);
        assert_eq!(classify(&[b"set", b"k", b"v"]), Target::Primary);
        assert_eq!(classify(&[b"PING"]), Target::Local);
        assert_eq!(classify(&[b"CLIENT", b"SETNAME", b"x"]), Target::Local);
        assert_eq!(classify(&[b"nosuch"]), Target::Unknown);
    }
}
