//! Shared helpers for integration tests: spawning servers on free ports,
//! waiting until they answer PING, killing them on drop, and a minimal raw
//! RESP2 client (no client-side reinterpretation of replies: what the server
//! sent is what the test sees).
#![allow(dead_code)]

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the reference server is expected (CI installs Debian's redis-server 7.0.x).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a freshly spawned server gets to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-reply read timeout: a server that hangs fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// RESP2 values and a raw client
// ---------------------------------------------------------------------------

/// One RESP2 reply, exactly as sent by the server.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// `+...`
    Simple(Vec<u8>),
    /// `-...` (full text, including the `ERR`/`WRONGTYPE` prefix)
    Error(Vec<u8>),
    /// `:...`
    Int(i64),
    /// `$n ...`
    Bulk(Vec<u8>),
    /// `$-1`
    Nil,
    /// `*n ...`
    Array(Vec<Value>),
    /// `*-1`
    NilArray,
}

impl Value {
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Renders a byte string the way redis-cli does: double-quoted, with
/// `\n`, `\"`, `\\` and `\xNN` escapes for anything not printable ASCII.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// A command line rendered for humans: `SET "k1" "v" "EX" "100"`.
pub fn fmt_cmd(args: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Print a plain command name bare, everything else escaped.
        if i == 0 && !a.is_empty() && a.iter().all(|b| b.is_ascii_alphanumeric()) {
            out.push_str(&String::from_utf8_lossy(a));
        } else {
            out.push_str(&escape(a));
        }
    }
    out
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Simple(s) => write!(f, "+{}", escape(s)),
            Value::Error(s) => write!(f, "(error) {}", escape(s)),
            Value::Int(i) => write!(f, "(integer) {i}"),
            Value::Bulk(b) => write!(f, "{}", escape(b)),
            Value::Nil => write!(f, "(nil)"),
            Value::NilArray => write!(f, "(nil array)"),
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v:?}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Something that executes one command and returns the raw reply. The
/// differential harness talks to servers only through this, so a test can
/// wrap a connection (e.g. to tamper with replies).
pub trait Conn {
    fn call(&mut self, args: &[Vec<u8>]) -> io::Result<Value>;

    /// On a RESP3 connection, the types of the last reply (see
    /// [`RespConn::connect_resp3`]); None on RESP2.
    fn shape(&self) -> Option<&str> {
        None
    }
}

/// A raw RESP2 connection over TCP.
pub struct RespConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    buf: Vec<u8>,
    /// Speaking RESP3 (after `HELLO 3`): replies are read as RESP3 and
    /// given in RESP2's shape, their RESP3 types kept in `last_shape`.
    resp3: bool,
    last_shape: String,
}

impl RespConn {
    pub fn connect(port: u16) -> io::Result<RespConn> {
        Self::connect_addr(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn connect_addr(addr: std::net::SocketAddr) -> io::Result<RespConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(RespConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            buf: Vec::new(),
            resp3: false,
            last_shape: String::new(),
        })
    }

    /// This end's address (what the server's CLIENT LIST calls `addr`).
    pub fn local_addr(&self) -> String {
        self.writer
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Convenience: `conn.cmd(&["SET", "k", "v"])`.
    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Value> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.call(&args)
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if line.len() < 2 || line[line.len() - 2] != b'\r' {
            return Err(proto_err(format!(
                "line not terminated by CRLF: {}",
                escape(&line)
            )));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// A connection that said `HELLO 3`. Its replies come back in RESP2's
    /// shape (a map as its flat key/value array, a set as an array, a
    /// double, big number or verbatim string as its text, a boolean as
    /// 1/0, a null as a nil), so comparisons written for RESP2 apply, and
    /// `shape()` gives the RESP3 types: `%{..}` and `~{..}` with their
    /// entries' types sorted (their order is the server's), `*[..]` in
    /// order, `,` `#` `(` `=` `_` and RESP2's one-byte types.
    pub fn connect_resp3(port: u16) -> io::Result<RespConn> {
        let mut c = Self::connect(port)?;
        c.resp3 = true;
        let hello = c.call(&[b"HELLO".to_vec(), b"3".to_vec()])?;
        if matches!(hello, Value::Error(_)) {
            return Err(proto_err(format!("HELLO 3 refused: {hello:?}")));
        }
        Ok(c)
    }

    /// [`RespConn::connect_resp3`] on a server that wants a login first:
    /// `HELLO 3 AUTH <user> <password>`.
    pub fn connect_resp3_auth(port: u16, user: &str, password: &str) -> io::Result<RespConn> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        Self::connect_resp3_auth_addr(addr, user, password)
    }

    /// [`RespConn::connect_resp3_auth`] at any address (a world's node).
    pub fn connect_resp3_auth_addr(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
    ) -> io::Result<RespConn> {
        let mut c = Self::connect_addr(addr)?;
        c.resp3 = true;
        let hello = c.cmd(&["HELLO", "3", "AUTH", user, password])?;
        if matches!(hello, Value::Error(_)) {
            return Err(proto_err(format!("HELLO 3 AUTH refused: {hello:?}")));
        }
        Ok(c)
    }

    /// A RESP3 reply: (its RESP2-shaped value, its types).
    fn read_value3(&mut self, depth: usize) -> io::Result<(Value, String)> {
        if depth > 64 {
            return Err(proto_err("reply nested too deeply".into()));
        }
        let line = self.read_line()?;
        let (kind, rest) = match line.split_first() {
            Some((k, r)) => (*k, r.to_vec()),
            None => return Err(proto_err("empty reply line".into())),
        };
        let text = |v: Vec<u8>| Value::Bulk(v);
        Ok(match kind {
            b'+' => (Value::Simple(rest), "+".into()),
            b'-' => (Value::Error(rest), "-".into()),
            b':' => (Value::Int(parse_i64(&rest)?), ":".into()),
            b'_' => (Value::Nil, "_".into()),
            b',' => (text(rest), ",".into()),
            b'(' => (text(rest), "(".into()),
            b'#' => (Value::Int(i64::from(rest == b"t")), "#".into()),
            b'$' | b'=' | b'!' => {
                let n = parse_i64(&rest)?;
                if n == -1 {
                    return Ok((Value::Nil, "$-1".into()));
                }
                if !(0..=1 << 30).contains(&n) {
                    return Err(proto_err(format!("bad bulk length {n}")));
                }
                let mut data = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut data)?;
                data.truncate(n as usize);
                match kind {
                    // (Verbatim: "txt:" and the text.)
                    b'=' => (text(data.get(4..).unwrap_or_default().to_vec()), "=".into()),
                    b'!' => (Value::Error(data), "!".into()),
                    _ => (text(data), "$".into()),
                }
            }
            b'*' | b'~' | b'%' | b'>' => {
                let n = parse_i64(&rest)?;
                if n == -1 {
                    return Ok((Value::NilArray, "*-1".into()));
                }
                if !(0..=1 << 24).contains(&n) {
                    return Err(proto_err(format!("bad aggregate length {n}")));
                }
                let count = if kind == b'%' { 2 * n } else { n };
                let mut items = Vec::with_capacity(count as usize);
                let mut shapes = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (v, sh) = self.read_value3(depth + 1)?;
                    items.push(v);
                    shapes.push(sh);
                }
                let shape = match kind {
                    b'%' => {
                        let mut pairs: Vec<String> =
                            shapes.chunks(2).map(|p| p.join(":")).collect();
                        pairs.sort();
                        format!("%{{{}}}", pairs.join(","))
                    }
                    b'~' => {
                        shapes.sort();
                        format!("~{{{}}}", shapes.join(","))
                    }
                    b'>' => format!(">[{}]", shapes.join(",")),
                    _ => format!("*[{}]", shapes.join(",")),
                };
                (Value::Array(items), shape)
            }
            b'|' => {
                // An attribute: skipped, the reply it annotates follows.
                let n = parse_i64(&rest)?;
                for _ in 0..2 * n.max(0) {
                    self.read_value3(depth + 1)?;
                }
                return self.read_value3(depth);
            }
            other => {
                return Err(proto_err(format!(
                    "unexpected RESP3 type byte {} in line {}",
                    escape(&[other]),
                    escape(&line)
                )))
            }
        })
    }

    fn read_value(&mut self, depth: usize) -> io::Result<Value> {
        if self.resp3 && depth == 0 {
            let (v, shape) = self.read_value3(0)?;
            self.last_shape = shape;
            return Ok(v);
        }
        if depth > 64 {
            return Err(proto_err("reply nested too deeply".into()));
        }
        let line = self.read_line()?;
        let (kind, rest) = match line.split_first() {
            Some((k, r)) => (*k, r),
            None => return Err(proto_err("empty reply line".into())),
        };
        match kind {
            b'+' => Ok(Value::Simple(rest.to_vec())),
            b'-' => Ok(Value::Error(rest.to_vec())),
            b':' => Ok(Value::Int(parse_i64(rest)?)),
            b'$' => {
                let n = parse_i64(rest)?;
                if n == -1 {
                    return Ok(Value::Nil);
                }
                if !(0..=1 << 30).contains(&n) {
                    return Err(proto_err(format!("bad bulk length {n}")));
                }
                let mut data = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut data)?;
                if &data[n as usize..] != b"\r\n" {
                    return Err(proto_err("bulk string not followed by CRLF".into()));
                }
                data.truncate(n as usize);
                Ok(Value::Bulk(data))
            }
            b'*' => {
                let n = parse_i64(rest)?;
                if n == -1 {
                    return Ok(Value::NilArray);
                }
                if !(0..=1 << 24).contains(&n) {
                    return Err(proto_err(format!("bad array length {n}")));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.read_value(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            other => Err(proto_err(format!(
                "unexpected RESP2 type byte {} in line {}",
                escape(&[other]),
                escape(&line)
            ))),
        }
    }
}

impl RespConn {
    /// Sends every command in one write, then reads their replies in order.
    pub fn pipeline(&mut self, cmds: &[Vec<&str>]) -> io::Result<Vec<Value>> {
        self.send_all(cmds)?;
        cmds.iter().map(|_| self.read_value(0)).collect()
    }

    /// Sends every command in one write and reads nothing (for commands
    /// whose replies are off, e.g. after CLIENT REPLY SKIP).
    pub fn send_all(&mut self, cmds: &[Vec<&str>]) -> io::Result<()> {
        let mut out = Vec::new();
        for args in cmds {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        self.writer.write_all(&out)
    }

    /// Reads one reply without sending anything (e.g. a MONITOR feed).
    pub fn read_reply(&mut self) -> io::Result<Value> {
        self.read_value(0)
    }
}

impl Conn for RespConn {
    fn call(&mut self, args: &[Vec<u8>]) -> io::Result<Value> {
        self.buf.clear();
        self.buf
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.buf
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.buf.extend_from_slice(a);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&self.buf)?;
        self.read_value(0)
    }

    fn shape(&self) -> Option<&str> {
        self.resp3.then_some(self.last_shape.as_str())
    }
}

impl Drop for RespConn {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

fn proto_err(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("RESP protocol error: {msg}"),
    )
}

fn parse_i64(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| proto_err(format!("bad integer {}", escape(b))))
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A spawned server, killed (SIGKILL) and reaped on drop, including when the
/// test panics. Its stdout/stderr go to a log file whose tail can be shown.
pub struct ServerProcess {
    pub name: String,
    pub port: u16,
    child: Child,
    pub log_path: PathBuf,
    pub command_line: String,
}

impl ServerProcess {
    pub fn connect(&self) -> RespConn {
        RespConn::connect(self.port).unwrap_or_else(|e| {
            panic!("cannot connect to {} on port {}: {e}", self.name, self.port)
        })
    }

    /// The last `max_lines` lines of the server's log.
    pub fn log_tail(&self, max_lines: usize) -> String {
        let text = fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(max_lines);
        lines[start..].join("\n")
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// A human-readable block for failure messages.
    pub fn describe(&mut self) -> String {
        let status = match self.exited() {
            Some(s) => format!("EXITED ({s})"),
            None => "running".to_string(),
        };
        format!(
            "--- {} (port {}, {status}) `{}`\n    log {}; last lines:\n{}",
            self.name,
            self.port,
            self.command_line,
            self.log_path.display(),
            self.log_tail(15)
        )
    }
}

/// A child process (not a server with a log: a sidecar, a WebDriver)
/// killed when dropped, so that a failed assertion leaves nothing holding
/// its port for the next run.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the log (and working dir) only when the test failed.
        if !std::thread::panicking() {
            if let Some(dir) = self.log_path.parent() {
                let _ = fs::remove_dir_all(dir);
            }
        } else {
            eprintln!("{} log kept at {}", self.name, self.log_path.display());
        }
    }
}

/// A port that was free a moment ago (bind to :0, read it, release it),
/// never one this process handed out before.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Linux: whether the socket listening on TCP `port` belongs to process `pid`
/// or one of its descendants. `None` when /proc cannot tell (other OSes).
/// Guards against the race where another server grabs the port we picked and
/// answers our readiness PING while ours failed to bind.
pub fn port_owned_by(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] (ADDR:PORT in hex), st is f[3] (0A = LISTEN), inode is f[9]
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if !readable {
        return None;
    }
    let owns = |p: &str| -> bool {
        fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            })
    };
    if owns(&pid.to_string()) {
        return Some(true);
    }
    // Maybe a descendant listens (e.g. a wrapper script that did not exec).
    let procs = fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || !owns(&name) {
            continue;
        }
        let mut cur: u32 = name.parse().ok()?;
        for _ in 0..64 {
            if cur == pid {
                return Some(true);
            }
            match parent_pid(cur) {
                Some(pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
    }
    Some(false)
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A fresh scratch directory for one server (its working dir and log).
fn scratch_dir(name: &str, port: u16) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "srv-{}-{}-{}-{}",
        sanitize(name),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        port
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Spawns the command built by `make(port)` on a free port and waits until
/// it answers PING with PONG. Retries on a fresh port if the server dies
/// during startup (e.g. the port was taken in between). Panics loudly on
/// failure, with the server's log.
pub fn spawn_server(name: &str, make: &dyn Fn(u16) -> Command) -> ServerProcess {
    let mut last_failure = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let dir = scratch_dir(name, port);
        let log_path = dir.join("server.log");
        let log = File::create(&log_path).expect("create server log");
        let mut cmd = make(port);
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log fd")))
            .stderr(Stdio::from(log));
        let command_line = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {name} ({command_line}): {e}"));
        let mut server = ServerProcess {
            name: name.to_string(),
            port,
            child,
            log_path,
            command_line,
        };
        match wait_ready(&mut server, READY_TIMEOUT) {
            Ok(()) => return server,
            Err(e) => {
                last_failure = format!("{e}\n{}", server.describe());
                // Dropping `server` kills it; try again on another port.
            }
        }
    }
    panic!("{name} did not become ready:\n{last_failure}");
}

/// Waits until the server accepts a TCP connection and answers PING with
/// +PONG (or -NOAUTH, for a server started with `requirepass`).
pub fn wait_ready(server: &mut ServerProcess, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if let Some(status) = server.exited() {
            return Err(format!(
                "{} exited during startup with {status}",
                server.name
            ));
        }
        match RespConn::connect(server.port).and_then(|mut c| c.cmd(&["PING"])) {
            // A server with `requirepass` answers NOAUTH: it is up, too.
            Ok(Value::Simple(s)) if s == b"PONG" => {
                return check_owner(server);
            }
            Ok(Value::Error(e)) if e.starts_with(b"NOAUTH ") => {
                return check_owner(server);
            }
            Ok(other) => last = format!("PING replied {other:?}"),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} not ready after {timeout:?}: {last}",
                server.name
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The port answered: make sure it is our process that listens there.
fn check_owner(server: &mut ServerProcess) -> Result<(), String> {
    match port_owned_by(server.child.id(), server.port) {
        Some(false) => Err(format!(
            "port {} answered PING, but not from {} (pid {}): another process took the port",
            server.port,
            server.name,
            server.child.id()
        )),
        _ => Ok(()),
    }
}

/// Finds the reference redis-server, or panics: the differential tests are
/// meaningless without it, and CI installs it (Debian package `redis-server`).
pub fn redis_server_path() -> PathBuf {
    let candidates = [PathBuf::from(REDIS_SERVER)];
    let found = candidates.into_iter().find(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("redis-server"))
                .find(|p| p.exists())
        })
    });
    let path = found.unwrap_or_else(|| {
        panic!(
            "redis-server not found (looked at {REDIS_SERVER} and $PATH). The differential tests \
             need the reference Redis 7.0: `apt-get install redis-server`."
        )
    });
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{path:?} --version: {e}"));
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        version.contains("v=7.0."),
        "the reference must be Redis 7.0.x (error texts differ between versions), but {path:?} says: {version}"
    );
    path
}

/// Starts the reference Redis 7.0 server.
pub fn start_reference() -> ServerProcess {
    let path = redis_server_path();
    spawn_server("redis-server (reference)", &|port| {
        let mut c = Command::new(&path);
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ]);
        c
    })
}

/// Starts a server from a `sh` command template containing `{port}`, e.g.
/// `redis-server --port {port} --save '' --appendonly no`. It is run as
/// `sh -c "exec <template>"` so the killed process is the server itself.
pub fn start_from_template(name: &str, template: &str) -> ServerProcess {
    assert!(
        template.contains("{port}"),
        "server command template must contain {{port}}: {template:?}"
    );
    spawn_server(name, &|port| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "exec {}",
            template.replace("{port}", &port.to_string())
        ));
        c
    })
}

/// Starts the anykv binary with the same flags as the reference redis-server.
pub fn start_anykv(bin: &Path) -> ServerProcess {
    assert!(bin.exists(), "anykv binary not found at {}", bin.display());
    let bin = bin.to_path_buf();
    spawn_server("anykv (target)", &|port| {
        let mut c = Command::new(&bin);
        c.args(["server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--enable-debug-command", "yes"])
            // As the reference: no snapshots into the working directory.
            .args(["--save", "", "--appendonly", "no"]);
        c
    })
}

/// Starts the anykv binary on a free port with extra `anykv server`
/// arguments, e.g. `&["--requirepass", "pw", "--maxclients", "5"]`.
pub fn start_anykv_with(bin: &Path, extra: &[&str]) -> ServerProcess {
    assert!(bin.exists(), "anykv binary not found at {}", bin.display());
    let bin = bin.to_path_buf();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    spawn_server("anykv", &|port| {
        let mut c = Command::new(&bin);
        c.args(["server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(&extra);
        c
    })
}

// ---------------------------------------------------------------------------
// The server under test (anykv, or redis-server with ANYKV_SERVER_TEST_REFERENCE)
// ---------------------------------------------------------------------------

/// Per-read timeout of the raw test clients: a hung server fails the test.
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const REFERENCE_ENV: &str = "ANYKV_SERVER_TEST_REFERENCE";

/// `anykv server` options redis-server does not know (dropped, with their
/// value, when the tests run against the reference).
pub const ANYKV_ONLY: &[&str] = &["--executors", "--metrics-addr"];

/// Whether the tests run against the reference redis-server
/// (`ANYKV_SERVER_TEST_REFERENCE` set, non-empty and not `0`).
pub fn against_reference() -> bool {
    std::env::var_os(REFERENCE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

pub fn anykv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anykv"))
}

/// `extra` without the [`ANYKV_ONLY`] options (and their values).
pub fn reference_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        if ANYKV_ONLY.contains(&extra[i]) {
            i += 2;
            continue;
        }
        args.push(extra[i].to_string());
        i += 1;
    }
    args
}

/// Starts a reference redis-server (whatever the target is).
pub fn start_redis(args: &[String]) -> ServerProcess {
    let path = redis_server_path();
    spawn_server("redis-server (reference)", &|port| {
        let mut c = Command::new(&path);
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args);
        c
    })
}

/// Starts the server under test on a free port with extra arguments: anykv,
/// or the reference redis-server (without the [`ANYKV_ONLY`] options) when
/// [`against_reference`].
pub fn start_under_test(extra: &[&str]) -> ServerProcess {
    if !against_reference() {
        return start_anykv_with(&anykv_bin(), extra);
    }
    start_redis(&reference_args(extra))
}

/// Polls `f` every `every` until it returns `Some`, or panics after `timeout`.
#[track_caller]
pub fn poll_every<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(every);
    }
}

/// Waits (polling every 50 ms) until `f` holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    poll_every(Duration::from_millis(50), limit, what, || f().then_some(()));
}

/// An emulated world for a test (`anykv_bench::world`): this build's
/// `anykv` nodes on `127.0.<net>.x`, the built-in RTT table between
/// `regions`, fast SWIM timings, no persistence, plus `extra` server flags.
pub fn world_spec(
    name: &str,
    net: u8,
    port: u16,
    regions: &[(&str, usize)],
    admin_token: &str,
    extra: &[&str],
) -> anykv_bench::world::WorldSpec {
    let dir = std::env::temp_dir().join(format!("anykv-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut args = vec!["--save", "", "--appendonly", "no"];
    args.extend_from_slice(extra);
    anykv_bench::world::WorldSpec::shaped(
        Path::new(env!("CARGO_BIN_EXE_anykv")),
        dir,
        net,
        port,
        regions,
        admin_token,
        &args,
    )
}

/// A world of three nodes without WAN shaping (for lockstep tests that
/// would crawl over emulated round trips): n1 in iad, n2 in cdg, n3 in
/// syd, and database 1 ("shop", `token`) with its primary in iad, a
/// replica in cdg (durability `async`, consistency `ryw`) and no copy in
/// syd.
pub fn three_regions(
    name: &str,
    net: u8,
    port: u16,
    admin: &str,
    token: &str,
) -> anykv_bench::world::World {
    let mut spec = world_spec(
        name,
        net,
        port,
        &[("iad", 1), ("cdg", 1), ("syd", 1)],
        admin,
        &[],
    );
    spec.rtt_table = None;
    spec.gossip_profile = "test".into();
    let w = anykv_bench::world::World::start(&spec).expect("the world starts");
    w.wait_members(3, Duration::from_secs(60))
        .expect("three members alive");
    put_tenant(&w, &shop_entry(1, token, &["cdg"], "async", "ryw", 1));
    w
}

/// A catalog row for the admin API: database `id` named "shop" in org
/// "acme", logging in with `token`, primary region iad, no plan limits.
pub fn shop_entry(
    id: u64,
    token: &str,
    read_regions: &[&str],
    durability: &str,
    consistency: &str,
    version: u64,
) -> serde_json::Value {
    let digest: String = anykv_server::catalog::token_digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({
        "id": id, "name": "shop", "token_sha256": [digest], "org": "acme",
        "primary_region": "iad", "read_regions": read_regions, "maxmemory": 0,
        "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
        "durability": durability, "consistency": consistency, "version": version
    })
}

/// Creates or changes a tenant through n1's admin API (`entry` is the
/// catalog row, its `id` the tenant's); fails the test unless it is 200.
pub fn put_tenant(w: &anykv_bench::world::World, entry: &serde_json::Value) {
    let n1 = w.node("n1").expect("n1").clone();
    let (code, body) = anykv_bench::world::http(
        n1.http,
        "PUT",
        &format!("/admin/tenants/{}", entry["id"]),
        w.admin_token(),
        &entry.to_string(),
    )
    .expect("the admin API answers");
    assert_eq!(code, 200, "{body}");
}

/// A connection to `addr` logged in with `AUTH <name> <token>`, once that
/// works and `ready` holds on it (None until then: poll it).
pub fn login_ready(
    addr: std::net::SocketAddr,
    name: &str,
    token: &str,
    ready: impl FnOnce(&mut RespConn) -> bool,
) -> Option<RespConn> {
    let mut c = RespConn::connect_addr(addr).ok()?;
    if !matches!(c.cmd(&["AUTH", name, token]).ok()?, Value::Simple(_)) {
        return None;
    }
    ready(&mut c).then_some(c)
}

/// One field of `INFO <section>` (trimmed); fails the test without it.
#[track_caller]
pub fn info_field(c: &mut RespConn, section: &str, field: &str) -> String {
    let text = match c.cmd(&["INFO", section]) {
        Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO {section} replied {other:?}"),
    };
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{text}"))
}

/// A transaction `RESET` ends: MULTI, `inside` (more of it), a queued SET
/// of `key`, RESET, AUTH again as "shop"; EXEC then has no MULTI. (The
/// caller checks that the SET never ran.)
pub fn reset_ends_multi(
    a: &mut RespConn,
    token: &str,
    key: &str,
    inside: impl FnOnce(&mut RespConn),
) {
    assert_eq!(a.cmd(&["MULTI"]).ok(), Some(Value::Simple(b"OK".to_vec())));
    inside(a);
    a.cmd(&["SET", key, "never"]).expect("queued");
    assert_eq!(
        a.cmd(&["RESET"]).ok(),
        Some(Value::Simple(b"RESET".to_vec()))
    );
    assert_eq!(
        a.cmd(&["AUTH", "shop", token]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    let exec = a.cmd(&["EXEC"]).expect("EXEC");
    assert!(
        matches!(&exec, Value::Error(e) if e.starts_with(b"ERR EXEC without MULTI")),
        "{exec:?}"
    );
}

/// [`login_ready`] as database "shop", polled until it works (30 s).
pub fn shop_login(
    addr: std::net::SocketAddr,
    token: &str,
    what: &str,
    ready: impl Fn(&mut RespConn) -> bool,
) -> RespConn {
    poll_every(
        Duration::from_millis(50),
        Duration::from_secs(30),
        what,
        || login_ready(addr, "shop", token, &ready),
    )
}

/// Tenant `id` as n1's cluster view shows it, once it is placed.
pub fn placed_tenant(w: &anykv_bench::world::World, id: u64) -> serde_json::Value {
    poll_every(
        Duration::from_millis(50),
        Duration::from_secs(30),
        "the tenant placed",
        || {
            w.cluster_view("n1").and_then(|v| {
                v["tenants"]
                    .as_array()?
                    .iter()
                    .find(|t| t["id"] == id)
                    .cloned()
            })
        },
    )
}

// ---------------------------------------------------------------------------
// A raw TCP client
// ---------------------------------------------------------------------------

/// Encodes one command in RESP.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`resp`] of string arguments.
pub fn resp_str(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    resp(&bytes)
}

/// A raw TCP client: bytes in, bytes out, nothing interpreted.
pub struct Raw {
    pub s: TcpStream,
    /// Bytes received but not yet consumed by an `expect`/`read_until`.
    pub buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(CLIENT_IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(CLIENT_IO_TIMEOUT)).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", escape(bytes)));
    }

    /// Sends one command in RESP.
    pub fn send_cmd(&mut self, args: &[&str]) {
        let r = resp_str(args);
        self.send(&r);
    }

    /// Reads more bytes into `buf`; `Ok(0)` at EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next `want.len()` bytes received must be `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &[u8]) {
        while self.buf.len() < want.len() && want.starts_with(&self.buf) {
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed after {} while expecting {}",
                    escape(&self.buf),
                    escape(want)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read error ({e}) after {} while expecting {}",
                    escape(&self.buf),
                    escape(want)
                ),
            }
        }
        let n = want.len().min(self.buf.len());
        assert_eq!(
            escape(&self.buf[..n]),
            escape(want),
            "unexpected reply bytes"
        );
        self.buf.drain(..n);
    }

    /// Reads up to and including the first `suffix`; returns those bytes.
    #[track_caller]
    pub fn read_until(&mut self, suffix: &[u8]) -> Vec<u8> {
        loop {
            if let Some(pos) = self.buf.windows(suffix.len()).position(|w| w == suffix) {
                return self.buf.drain(..pos + suffix.len()).collect();
            }
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed after {} while waiting for {}",
                    escape(&self.buf),
                    escape(suffix)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read error ({e}) after {} while waiting for {}",
                    escape(&self.buf),
                    escape(suffix)
                ),
            }
        }
    }

    /// The server closes the connection without sending anything more.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "expected the connection to close, got {}",
            escape(&self.buf)
        );
        match self.fill() {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected the connection to close, got {}",
                escape(&self.buf)
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close, got error: {e}"),
        }
    }

    /// Nothing arrives for `d` (and the connection stays open).
    #[track_caller]
    pub fn expect_silence(&mut self, d: Duration) {
        assert!(
            self.buf.is_empty(),
            "expected no reply, got {}",
            escape(&self.buf)
        );
        self.s.set_read_timeout(Some(d)).unwrap();
        let r = self.fill();
        self.s.set_read_timeout(Some(CLIENT_IO_TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("connection closed, expected it to stay open and silent"),
            Ok(_) => panic!("expected no reply, got {}", escape(&self.buf)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("expected silence, got error: {e}"),
        }
    }

    /// Switches to RESP3 (HELLO 3), consuming the HELLO reply.
    pub fn hello3(&mut self) {
        self.send(b"HELLO 3\r\n");
        self.expect(b"%7\r\n");
        self.read_until(b"$7\r\nmodules\r\n*0\r\n");
    }

    /// CLIENT ID of this connection (RESP2 or RESP3: both send `:n`).
    pub fn client_id(&mut self) -> u64 {
        self.send(b"CLIENT ID\r\n");
        self.expect(b":");
        let line = self.read_until(b"\r\n");
        std::str::from_utf8(&line[..line.len() - 2])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("CLIENT ID replied :{}", escape(&line)))
    }

    pub fn local_addr(&self) -> String {
        self.s.local_addr().unwrap().to_string()
    }
}

/// `cmdstat_<cmd>`'s calls in a server's INFO commandstats (0 if absent).
pub fn cmdstat_calls(c: &mut RespConn, cmd: &str) -> u64 {
    let Ok(Value::Bulk(b)) = c.cmd(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats failed");
    };
    let text = String::from_utf8_lossy(&b).into_owned();
    let prefix = format!("cmdstat_{cmd}:calls=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `GET path` over HTTP/1.0 from `addr`; the whole response, headers
/// included.
pub fn http_get(addr: &str, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of an unlabelled or labelled sample line `name{...} value`
/// in a Prometheus text page.
pub fn metric(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_with_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A directory of its own for a test's files (`anykv-<name>-<pid>` in the
/// temp dir, emptied first), removed when dropped unless the test failed.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("anykv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// The directory itself.
    pub fn dir(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Sends `args` to the reference redis-server `r` and to anykv `a` and
/// requires the same reply (the differential tests' step).
pub fn same(r: &mut RespConn, a: &mut RespConn, args: &[&str]) -> Value {
    let want = r.cmd(args).expect("redis-server");
    let got = a.cmd(args).expect("anykv");
    assert_eq!(got, want, "{args:?}");
    got
}

/// Starts anykv with an append-only log fsynced on every write in `dir`
/// (restart tests start it again with the same call).
pub fn start_anykv_aof(dir: &str) -> ServerProcess {
    start_anykv_with(
        &anykv_bin(),
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            dir,
        ],
    )
}

/// `v` with the value after each of `names` (in name/value arrays, at any
/// depth) replaced by `with`: fields one server cannot be expected to
/// agree on with another.
pub fn mask_fields(v: &Value, names: &[&str], with: &Value) -> Value {
    let Value::Array(items) = v else {
        return v.clone();
    };
    let mut out: Vec<Value> = items.iter().map(|x| mask_fields(x, names, with)).collect();
    for i in (0..out.len().saturating_sub(1)).step_by(2) {
        if matches!(&out[i], Value::Bulk(b) if names.iter().any(|n| b == n.as_bytes())) {
            out[i + 1] = with.clone();
        }
    }
    Value::Array(out)
}

/// A stream reply with each server's clock taken out: `idle`,
/// `seen-time` and `active-time` zeroed, and the time of every pending
/// entry (`[id, consumer, time, count]` in XPENDING and a group of XINFO
/// STREAM FULL, `[id, time, count]` in a consumer there).
pub fn mask_stream_times(v: &Value) -> Value {
    let Value::Array(items) = v else {
        return v.clone();
    };
    let mut out: Vec<Value> = items.iter().map(mask_stream_times).collect();
    match out.as_slice() {
        [Value::Bulk(_), Value::Bulk(_), Value::Int(_), Value::Int(_)] => out[2] = Value::Int(0),
        [Value::Bulk(_), Value::Int(_), Value::Int(_)] => out[1] = Value::Int(0),
        _ => {
            return mask_fields(
                &Value::Array(out),
                &["idle", "seen-time", "active-time"],
                &Value::Int(0),
            )
        }
    }
    Value::Array(out)
}

/// What arrives on `c` up to the reply of a PING sent now: the replies of
/// requests sent before without reading them, and pushes (RESP3
/// invalidations, messages), in order.
pub fn until_pong(c: &mut RespConn) -> Vec<Value> {
    let mut got = Vec::new();
    let mut v = c.cmd(&["PING"]).expect("PING");
    while v != Value::Simple(b"PONG".to_vec()) {
        got.push(v);
        v = c.read_reply().expect("a reply");
    }
    got
}
