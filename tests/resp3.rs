//! RESP3 replies against redis-server 7.0, byte for byte: after `HELLO 3`
//! the same commands of every family give the same bytes (maps, sets,
//! doubles, nulls, booleans and verbatim strings where Redis uses them).
//! Commands whose replies Redis leaves unordered are given one element,
//! so the bytes compare.

mod common;

use common::{start_anykv, start_reference, ServerProcess};
use std::io::{BufRead, BufReader, Read, Write};

/// A connection that said `HELLO 3`, reading each reply as raw bytes.
struct Raw {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Raw {
    fn open(srv: &ServerProcess) -> Raw {
        let writer = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
        writer
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        let mut c = Raw { reader, writer };
        c.call(&["HELLO", "3"]);
        c
    }

    fn call(&mut self, args: &[&str]) -> Vec<u8> {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.writer.write_all(&b).expect("write");
        self.reply()
    }

    /// One whole reply as it came (aggregates with their elements;
    /// attributes with the reply they annotate).
    fn reply(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("reply");
        let n: i64 = std::str::from_utf8(&line[1..line.len().saturating_sub(2)])
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let mut out = line.clone();
        match line.first() {
            Some(b'$' | b'=' | b'!') if n >= 0 => {
                let mut body = vec![0; n as usize + 2];
                self.reader.read_exact(&mut body).expect("body");
                out.extend_from_slice(&body);
            }
            Some(b'*' | b'~' | b'>') => {
                for _ in 0..n.max(0) {
                    out.extend(self.reply());
                }
            }
            Some(b'%') => {
                for _ in 0..2 * n.max(0) {
                    out.extend(self.reply());
                }
            }
            Some(b'|') => {
                for _ in 0..2 * n.max(0) {
                    out.extend(self.reply());
                }
                out.extend(self.reply());
            }
            _ => {}
        }
        out
    }
}

#[test]
fn resp3_replies_match_redis_byte_for_byte() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (Raw::open(&reference), Raw::open(&target));
    let steps: &[&[&str]] = &[
        // Strings and keys.
        &["SET", "s", "v"],
        &["GET", "s"],
        &["GET", "nokey"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["MGET", "s", "nokey"],
        &["SET", "s", "w", "GET"],
        &["SET", "s", "x", "NX"],
        &["GETEX", "nokey"],
        &["EXISTS", "s"],
        &["TTL", "s"],
        &["TYPE", "s"],
        &["STRLEN", "s"],
        &["LCS", "s", "f"],
        &["EXPIRE", "nokey", "10"],
        &["OBJECT", "ENCODING", "s"],
        &["OBJECT", "ENCODING", "nokey"],
        // Hashes: a one-field map.
        &["HSET", "h", "f", "1"],
        &["HGETALL", "h"],
        &["HGETALL", "nokey"],
        &["HMGET", "h", "f", "g"],
        &["HGET", "h", "g"],
        &["HRANDFIELD", "h", "1", "WITHVALUES"],
        &["HINCRBYFLOAT", "h", "f", "0.5"],
        &["HSTRLEN", "h", "f"],
        // Lists.
        &["RPUSH", "l", "a", "b", "a"],
        &["LRANGE", "l", "0", "-1"],
        &["LPOS", "l", "a", "COUNT", "0"],
        &["LPOS", "l", "z"],
        &["LPOP", "nokey"],
        &["LPOP", "nokey", "2"],
        &["LMPOP", "1", "l", "LEFT"],
        &["LMPOP", "1", "nokey", "LEFT"],
        &["BLPOP", "nokey", "0.01"],
        // Sets: one member.
        &["SADD", "set", "m"],
        &["SMEMBERS", "set"],
        &["SMEMBERS", "nokey"],
        &["SISMEMBER", "set", "m"],
        &["SMISMEMBER", "set", "m", "n"],
        &["SPOP", "nokey"],
        &["SINTER", "set", "nokey"],
        // Sorted sets: doubles and pairs.
        &["ZADD", "z", "1.5", "a", "2", "b"],
        &["ZSCORE", "z", "a"],
        &["ZSCORE", "z", "nokey"],
        &["ZMSCORE", "z", "a", "nokey"],
        &["ZINCRBY", "z", "1", "a"],
        &["ZADD", "z", "INCR", "1", "b"],
        &["ZADD", "z", "NX", "INCR", "1", "b"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZRANGE", "z", "0", "-1"],
        &["ZREVRANGEBYSCORE", "z", "+inf", "-inf", "WITHSCORES"],
        &["ZPOPMIN", "z"],
        &["ZPOPMAX", "z", "5"],
        &["ZPOPMIN", "nokey"],
        &["ZADD", "z", "1", "a"],
        &["ZRANDMEMBER", "z", "1", "WITHSCORES"],
        &["ZMPOP", "1", "z", "MIN"],
        &["ZMPOP", "1", "nokey", "MIN"],
        &["ZADD", "z", "3", "c"],
        &["ZRANK", "z", "c"],
        &["ZRANK", "z", "nokey"],
        &["BZPOPMIN", "z", "0.01"],
        &["BZPOPMIN", "nokey", "0.01"],
        &["ZUNION", "1", "z", "WITHSCORES"],
        // Bitmaps, scripts, server.
        &["SETBIT", "b", "3", "1"],
        &[
            "BITFIELD", "b", "GET", "u4", "0", "OVERFLOW", "FAIL", "INCRBY", "u2", "0", "9",
        ],
        &["EVAL", "return {double=1.5}", "0"],
        &[
            "EVAL",
            "redis.setresp(3) return redis.call('HGETALL', 'h')",
            "0",
        ],
        &["CONFIG", "GET", "maxmemory"],
        &["CONFIG", "GET", "nosuchparam"],
        &["CLIENT", "GETNAME"],
        &["PING"],
        &["PING", "x"],
        &["ECHO", "e"],
        &["DBSIZE"],
        &["SCAN", "0", "MATCH", "s", "COUNT", "1000"],
        &["HSCAN", "h", "0"],
        &["SSCAN", "set", "0"],
        &["ZSCAN", "z", "0"],
        &["WAIT", "0", "0"],
        &["MULTI"],
        &["GET", "s"],
        &["ZSCORE", "z", "c"],
        &["HGETALL", "h"],
        &["EXEC"],
        &["NOSUCH"],
        &["GET"],
    ];
    for step in steps {
        let want = r.call(step);
        let got = a.call(step);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{step:?}"
        );
    }
}
