//! anykv router: the RESP proxy that makes a primary and its replicas look
//! like one Redis. Reads go to the nearest replica that has the client's
//! own writes, writes to the primary, pipelines keep their order, and many
//! clients share a few upstream connections.
//!
//! * [`classify`]: what a request is (read, write, connection-holding,
//!   answered locally), from the store's command table.
//! * [`frame`]: where an upstream reply ends (the store's codec, shared).
//! * [`upstream`]: one shared, pipelined upstream connection.
//! * [`pool`]: the upstreams, their roles, RTTs and offsets (`ROLE` polls).
//! * [`session`]: one client connection: routing, ordering, consistency.
//! * [`local`]: connection commands the router answers itself.
//! * [`clients`]: the router's clients (CLIENT LIST/KILL).
//! * [`stepdown`]: writes refused by a primary that stepped down.
//! * [`wait`]: `WAIT`, counted against the client's own writes.
//! * [`standalone`]: `anykv router --upstream ...`; [`tls`]: its TLS port.
//!
//! docs/ROUTER.md says what a client gets; docs/ROUTING.md is the envelope
//! a node's router will use to reach other nodes.

pub mod classify;
pub mod clients;
pub mod local;
pub mod pool;
pub mod session;
pub mod standalone;
pub mod stepdown;
pub mod tls;
pub mod upstream;
pub mod wait;

pub use anykv_server::resp::frame;
