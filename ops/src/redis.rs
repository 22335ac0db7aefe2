//! The key browser's connection to a database: RESP2 over TCP to the
//! node of its primary, logged in with the database's own token (`AUTH
//! default <token>`), as the customer's app logs in. It asks what a client
//! could (SCAN, TYPE, PTTL, a string's first bytes), nothing more; those
//! commands are the database's usage, as a client's would be. Replies are
//! read with `redis-protocol`'s decoder.

use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one command may take (the page shows what it could get).
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest reply read.
const MAX_REPLY: usize = 4 << 20;

/// Why the database did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
    #[error("{0}: {1}")]
    Protocol(String, String),
    #[error("{0}: {1}")]
    Refused(String, String),
}

/// A reply, as the dashboard uses it.
pub type Reply = OwnedFrame;

/// One connection, logged in.
pub struct Conn {
    addr: String,
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` and logs in to the database with `token`.
    pub async fn login(addr: &str, token: &str) -> Result<Conn, RedisError> {
        let s = match tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(RedisError::Io(addr.into(), e)),
            Err(_) => return Err(RedisError::Timeout(addr.into())),
        };
        let mut c = Conn {
            addr: addr.into(),
            s,
            buf: Vec::new(),
        };
        c.ok(&["AUTH", "default", token]).await?;
        Ok(c)
    }

    /// Sends `args` and reads the reply (an error reply is `Refused`).
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply, RedisError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut replies = self.pipeline(&[args]).await?;
        match replies.pop() {
            Some(OwnedFrame::Error(e)) => Err(RedisError::Refused(self.addr.clone(), e)),
            Some(r) => Ok(r),
            None => Err(RedisError::Protocol(self.addr.clone(), "no reply".into())),
        }
    }

    /// Sends every command at once and reads their replies, in order (an
    /// error reply is one of them): one round trip for all.
    pub async fn pipeline(&mut self, cmds: &[Vec<&[u8]>]) -> Result<Vec<Reply>, RedisError> {
        match tokio::time::timeout(TIMEOUT, self.exchange(cmds)).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(self.addr.clone())),
        }
    }

    async fn ok(&mut self, args: &[&str]) -> Result<(), RedisError> {
        self.cmd(args).await.map(|_| ())
    }

    async fn exchange(&mut self, cmds: &[Vec<&[u8]>]) -> Result<Vec<Reply>, RedisError> {
        let mut req = Vec::new();
        for args in cmds {
            req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                req.extend_from_slice(a);
                req.extend_from_slice(b"\r\n");
            }
        }
        let io = |e| RedisError::Io(self.addr.clone(), e);
        self.s.write_all(&req).await.map_err(io)?;
        let mut replies = Vec::with_capacity(cmds.len());
        // Decoded from where the last whole reply ended, and only once
        // more bytes came: a large reply is not decoded again from its
        // start after every read.
        let mut decodable = true;
        loop {
            while decodable && replies.len() < cmds.len() {
                match redis_protocol::resp2::decode::decode(&self.buf) {
                    Ok(Some((frame, used))) => {
                        self.buf.drain(..used);
                        replies.push(frame);
                    }
                    Ok(None) => decodable = false,
                    Err(e) => return Err(RedisError::Protocol(self.addr.clone(), e.to_string())),
                }
            }
            if replies.len() == cmds.len() {
                return Ok(replies);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(RedisError::Protocol(
                    self.addr.clone(),
                    "reply too large".into(),
                ));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .s
                .read(&mut chunk)
                .await
                .map_err(|e| RedisError::Io(self.addr.clone(), e))?;
            if n == 0 {
                return Err(RedisError::Io(
                    self.addr.clone(),
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            decodable = true;
        }
    }
}

/// A reply's bytes (simple or bulk string; empty otherwise).
pub fn bytes(r: &Reply) -> Vec<u8> {
    match r {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// A reply's text (simple or bulk string), lossily.
pub fn text(r: &Reply) -> String {
    match r {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        OwnedFrame::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers AUTH, then writes `replies` a few bytes at a
    /// time (replies split anywhere must be read whole, in order).
    async fn server(replies: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"+OK\r\n").await.unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            for chunk in replies.chunks(3) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_pipeline_reads_split_replies_in_order_errors_included() {
        let addr =
            server(b"+string\r\n:-1\r\n$5\r\nalice\r\n-WRONGTYPE x\r\n*2\r\n$1\r\n0\r\n*0\r\n")
                .await;
        let mut c = Conn::login(&addr, "t").await.unwrap();
        let k: &[u8] = b"k";
        let r = c
            .pipeline(&[
                vec![b"TYPE", k],
                vec![b"PTTL", k],
                vec![b"GET", k],
                vec![b"LLEN", k],
                vec![b"SCAN", b"0"],
            ])
            .await
            .unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(text(&r[0]), "string");
        assert_eq!(text(&r[1]), "-1");
        assert_eq!(bytes(&r[2]), b"alice");
        assert!(matches!(&r[3], OwnedFrame::Error(e) if e.starts_with("WRONGTYPE")));
        assert!(matches!(&r[4], OwnedFrame::Array(a) if a.len() == 2));
    }
}
