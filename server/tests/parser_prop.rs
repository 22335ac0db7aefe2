//! Property tests for the request parser (`resp::parse`).
//!
//! * Commands encoded by an independent RESP2 encoder (`redis-protocol`)
//!   and concatenated come out of `RequestParser` unchanged however the
//!   bytes are split into reads, with the caller dropping consumed input
//!   and rebasing the parser as the connection code does.
//! * Arbitrary bytes never panic: they yield commands, need more data, or a
//!   `ProtocolError` whose text starts "Protocol error: ", and the outcome
//!   does not depend on how the bytes were split into reads.

use anykv_server::resp::{ParseLimits, ProtocolError, Request, RequestParser};
use proptest::prelude::*;
use redis_protocol::bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;

type Cmd = Vec<Vec<u8>>;

/// How a run of the parser over some input ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every byte was consumed by complete requests.
    Clean,
    /// Input ends inside a request (the parser wants more bytes).
    NeedMore,
    Error(String),
}

/// Feeds `input` to a parser in reads of the given sizes (cycled), calling
/// `next()` on the growing buffer until it needs more, then dropping the
/// consumed prefix and rebasing (unless `rebase` says to skip it this time,
/// which real connections also do when nothing was consumed).
fn feed(input: &[u8], reads: &[usize], rebase: &[bool], lim: &ParseLimits) -> (Vec<Cmd>, End) {
    let mut p = RequestParser::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut cmds = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    loop {
        let n = reads[i % reads.len()].max(1).min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match p.next(&buf, lim) {
                Ok(Some(Request::Multibulk)) => {
                    cmds.push(p.ranges().iter().map(|r| buf[r.clone()].to_vec()).collect())
                }
                Ok(Some(Request::Inline)) => cmds.push(p.inline_args().to_vec()),
                Ok(None) => break,
                Err(e) => return (cmds, End::Error(check_error(e))),
            }
        }
        let c = p.consumed();
        assert!(c <= buf.len(), "consumed {c} > buffered {}", buf.len());
        if rebase[i % rebase.len()] || fed == input.len() {
            buf.drain(..c);
            p.rebase(c);
        }
        i += 1;
        if fed == input.len() {
            let end = if buf.is_empty() {
                End::Clean
            } else {
                End::NeedMore
            };
            return (cmds, end);
        }
    }
}

fn check_error(e: ProtocolError) -> String {
    let text = e.to_string();
    assert!(
        text.starts_with("Protocol error: "),
        "unexpected error text {text:?}"
    );
    text
}

/// The reference encoding: each command as a RESP2 array of bulk strings.
fn encode(cmds: &[Cmd]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for c in cmds {
        let frame = BytesFrame::Array(
            c.iter()
                .map(|a| BytesFrame::BulkString(Bytes::copy_from_slice(a)))
                .collect(),
        );
        extend_encode(&mut buf, &frame, false).expect("encodes");
    }
    buf.to_vec()
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Short binary arguments, CR/LF/NUL and protocol characters included.
        8 => prop::collection::vec(any::<u8>(), 0..24),
        2 => prop::collection::vec(
            prop::sample::select(vec![b'\r', b'\n', 0, b'*', b'$', b'a']),
            0..16
        ),
        // Large enough to span many reads.
        1 => prop::collection::vec(any::<u8>(), 100..5000),
    ]
}

fn commands() -> impl Strategy<Value = Vec<Cmd>> {
    // Zero-argument commands encode as `*0`, which the parser skips.
    prop::collection::vec(prop::collection::vec(arg(), 0..8), 0..24)
}

fn reads() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        prop::collection::vec(1usize..4, 1..16),
        prop::collection::vec(1usize..64, 1..16),
        prop::collection::vec(1usize..5000, 1..8),
        Just(vec![usize::MAX]),
    ]
}

fn rebase() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), 1..8)
}

fn limits() -> impl Strategy<Value = ParseLimits> {
    prop_oneof![
        4 => Just(ParseLimits::default()),
        1 => Just(ParseLimits {
            unauthenticated: true,
            ..Default::default()
        }),
        1 => (1i64..64, 1i64..16).prop_map(|(b, m)| ParseLimits {
            max_bulk_len: b,
            max_multibulk_len: m,
            unauthenticated: false,
        }),
    ]
}

/// Bytes biased toward the protocol's own characters, so that random input
/// reaches deep parser states (headers, bulk bodies, quoting) often.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            b'*', b'$', b'\r', b'\n', b'0', b'1', b'2', b'3', b'-', b'"', b'\'', b'\\', b' ',
            b'x', b'a', 0u8,
        ])
        .prop_map(|b| vec![b]),
        1 => prop::sample::select(vec![
            &b"*1\r\n"[..],
            b"*2\r\n",
            b"$1\r\n",
            b"$0\r\n",
            b"$3\r\nSET\r\n",
            b"\r\n",
            b"*-1\r\n",
            b"$-1\r\n",
            b"\"a\\x4",
            b"'b\\'",
            b"*99999999999999999999\r\n",
            b"$9223372036854775807\r\n",
        ])
        .prop_map(|s| s.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs next to them for proptest's
        // regression files; failures print the minimal input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Reference-encoded commands come out unchanged, whatever the reads.
    #[test]
    fn encoded_commands_round_trip(cmds in commands(), reads in reads(), rebase in rebase()) {
        let input = encode(&cmds);
        let (got, end) = feed(&input, &reads, &rebase, &ParseLimits::default());
        let want: Vec<Cmd> = cmds.into_iter().filter(|c| !c.is_empty()).collect();
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(got, want);
    }

    /// Cutting the encoding short at any point yields exactly the commands
    /// that fit entirely before the cut, then "need more data".
    #[test]
    fn truncated_input_needs_more(cmds in commands(), cut in any::<prop::sample::Index>(), reads in reads(), rebase in rebase()) {
        let input = encode(&cmds);
        let cut = cut.index(input.len() + 1);
        // How many whole commands fit in `cut` bytes.
        let mut fit = Vec::new();
        let mut len = 0;
        let mut on_boundary = cut == 0;
        for c in &cmds {
            len += encode(std::slice::from_ref(c)).len();
            if len > cut {
                break;
            }
            on_boundary = len == cut;
            if !c.is_empty() {
                fit.push(c.clone());
            }
        }
        let (got, end) = feed(&input[..cut], &reads, &rebase, &ParseLimits::default());
        prop_assert_eq!(got, fit);
        prop_assert_eq!(end, if on_boundary { End::Clean } else { End::NeedMore });
    }

    /// Inline commands (plain tokens separated by blanks) mixed with
    /// multibulk ones come out in order.
    #[test]
    fn inline_and_multibulk_mix(
        parts in prop::collection::vec(
            prop_oneof![
                prop::collection::vec("[a-zA-Z0-9_:]{1,12}", 0..6).prop_map(Err),
                prop::collection::vec(arg(), 0..5).prop_map(Ok),
            ],
            0..16,
        ),
        reads in reads(),
        rebase in rebase(),
    ) {
        let mut input = Vec::new();
        let mut want: Vec<Cmd> = Vec::new();
        for p in &parts {
            match p {
                Ok(c) => {
                    input.extend(encode(std::slice::from_ref(c)));
                    if !c.is_empty() {
                        want.push(c.clone());
                    }
                }
                Err(words) => {
                    input.extend_from_slice(words.join("  ").as_bytes());
                    input.extend_from_slice(b"\r\n");
                    if !words.is_empty() {
                        want.push(words.iter().map(|w| w.as_bytes().to_vec()).collect());
                    }
                }
            }
        }
        let (got, end) = feed(&input, &reads, &rebase, &ParseLimits::default());
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic, and how they are split into reads does
    /// not change the commands parsed or the error.
    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), protocolish()],
        reads in reads(),
        rebase in rebase(),
        lim in limits(),
    ) {
        let whole = feed(&input, &[usize::MAX], &[true], &lim);
        let split = feed(&input, &reads, &rebase, &lim);
        prop_assert_eq!(split, whole);
    }

    /// Valid encodings with a few bytes overwritten: mostly errors and
    /// partial reads deep inside requests.
    #[test]
    fn mutated_encodings_never_panic(
        cmds in commands(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        reads in reads(),
        rebase in rebase(),
        lim in limits(),
    ) {
        let mut input = encode(&cmds);
        if input.is_empty() {
            input.push(b'*');
        }
        for (at, b) in edits {
            let i = at.index(input.len());
            input[i] = b;
        }
        let whole = feed(&input, &[usize::MAX], &[true], &lim);
        let split = feed(&input, &reads, &rebase, &lim);
        prop_assert_eq!(split, whole);
    }
}
