//! RESP: the request parser and the reply encoder.

pub mod frame;
pub mod parse;
pub mod reply;

pub use parse::{ParseLimits, ProtocolError, Request, RequestParser};
pub use reply::Reply;

use bytes::BufMut;

/// Encodes a request as a RESP multibulk (the log, forwarded requests, a
/// router's own requests upstream).
pub fn encode_request<B: BufMut>(buf: &mut B, args: &[&[u8]]) {
    let mut b = [0u8; 20];
    buf.put_u8(b'*');
    buf.put_slice(crate::util::fmt_i64(args.len() as i64, &mut b));
    buf.put_slice(b"\r\n");
    for a in args {
        buf.put_u8(b'$');
        buf.put_slice(crate::util::fmt_i64(a.len() as i64, &mut b));
        buf.put_slice(b"\r\n");
        buf.put_slice(a);
        buf.put_slice(b"\r\n");
    }
}
