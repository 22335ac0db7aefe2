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
        match tokio::time::timeout(TIMEOUT, self.exchange(args)).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(self.addr.clone())),
        }
    }

    async fn ok(&mut self, args: &[&str]) -> Result<(), RedisError> {
        self.cmd(args).await.map(|_| ())
    }

    async fn exchange(&mut self, args: &[&str]) -> Result<Reply, RedisError> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        let io = |e| RedisError::Io(self.addr.clone(), e);
        self.s.write_all(&req).await.map_err(io)?;
        loop {
            match redis_protocol::resp2::decode::decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return match frame {
                        OwnedFrame::Error(e) => Err(RedisError::Refused(self.addr.clone(), e)),
                        f => Ok(f),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(RedisError::Protocol(self.addr.clone(), e.to_string())),
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
        }
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
