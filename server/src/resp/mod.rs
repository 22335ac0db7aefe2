//! RESP: the request parser and the reply encoder.

pub mod frame;
pub mod parse;
pub mod reply;

pub use parse::{ParseLimits, ProtocolError, Request, RequestParser};
pub use reply::Reply;
