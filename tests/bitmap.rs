//! Bitmaps against the reference redis-server 7.0: SETBIT, GETBIT,
//! BITCOUNT, BITPOS, BITOP, BITFIELD and BITFIELD_RO give the same replies
//! and leave the same strings, for chosen edge cases and for a seeded
//! random workload.

mod common;

use common::{same, start_anykv, start_reference, RespConn};

#[test]
fn bitmap_commands_answer_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let cases: &[&[&str]] = &[
        // SETBIT / GETBIT
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "100", "1"],
        &["GET", "b"],
        &["GETBIT", "b", "7"],
        &["GETBIT", "b", "6"],
        &["GETBIT", "b", "100000"],
        &["GETBIT", "nokey", "3"],
        &["SETBIT", "b", "7", "0"],
        &["SETBIT", "b", "7", "2"],
        &["SETBIT", "b", "-1", "1"],
        &["SETBIT", "b", "x", "1"],
        &["SETBIT", "b", "4294967296", "1"],
        &["GETBIT", "b", "-1"],
        &["SETBIT", "b", "1", "01"],
        &["LPUSH", "list", "x"],
        &["SETBIT", "list", "1", "1"],
        &["GETBIT", "list", "1"],
        &["SET", "n", "255"],
        &["SETBIT", "n", "0", "1"],
        &["GET", "n"],
        // BITCOUNT
        &["SET", "s", "foobar"],
        &["BITCOUNT", "s"],
        &["BITCOUNT", "s", "0", "0"],
        &["BITCOUNT", "s", "1", "1"],
        &["BITCOUNT", "s", "1", "1", "BYTE"],
        &["BITCOUNT", "s", "5", "30", "BIT"],
        &["BITCOUNT", "s", "5", "30", "bit"],
        &["BITCOUNT", "s", "-2", "-1"],
        &["BITCOUNT", "s", "-100", "100"],
        &["BITCOUNT", "s", "3", "1"],
        &["BITCOUNT", "s", "-1", "-2"],
        &["BITCOUNT", "s", "-1", "-2", "foo"],
        &["BITCOUNT", "s", "0", "-1", "BIT"],
        &["BITCOUNT", "s", "7", "8", "BIT"],
        &["BITCOUNT", "s", "0"],
        &["BITCOUNT", "s", "0", "1", "nope"],
        &["BITCOUNT", "s", "a", "1"],
        &["BITCOUNT", "nokey"],
        &["BITCOUNT", "nokey", "0"],
        &["BITCOUNT", "list"],
        &["SET", "empty", ""],
        &["BITCOUNT", "empty"],
        // BITPOS
        &["SET", "p", "\u{0}\u{ff}\u{f0}"],
        &["BITPOS", "p", "1"],
        &["BITPOS", "p", "0"],
        &["BITPOS", "p", "1", "2"],
        &["BITPOS", "p", "0", "1"],
        &["BITPOS", "p", "0", "1", "1"],
        &["BITPOS", "p", "1", "7", "15", "BIT"],
        &["BITPOS", "p", "0", "8", "15", "BIT"],
        &["BITPOS", "p", "0", "8", "-1", "BIT"],
        &["BITPOS", "p", "1", "-1"],
        &["BITPOS", "p", "0", "-1", "-1", "BIT"],
        &["BITPOS", "p", "1", "2", "1"],
        &["BITPOS", "p", "2"],
        &["BITPOS", "p", "x"],
        &["BITPOS", "p", "1", "0", "1", "bad"],
        &["BITPOS", "p", "1", "x"],
        &["BITPOS", "nokey", "1"],
        &["BITPOS", "nokey", "0"],
        &["BITPOS", "nokey", "0", "x"],
        &["BITPOS", "list", "1"],
        &["SET", "ff", "\u{7f}"],
        &["BITPOS", "ff", "0"],
        &["BITPOS", "empty", "0"],
        &["BITPOS", "empty", "1"],
        // BITOP
        &["SET", "k1", "foobar"],
        &["SET", "k2", "abcdef"],
        &["SET", "k3", "ab"],
        &["BITOP", "AND", "dest", "k1", "k2"],
        &["GET", "dest"],
        &["BITOP", "or", "dest", "k1", "k3"],
        &["GET", "dest"],
        &["BITOP", "XOR", "dest", "k1", "k2", "k3"],
        &["GET", "dest"],
        &["BITOP", "AND", "dest", "k1", "k3"],
        &["GET", "dest"],
        &["BITOP", "NOT", "dest", "k1"],
        &["GET", "dest"],
        &["BITOP", "NOT", "dest", "k1", "k2"],
        &["BITOP", "NAND", "dest", "k1"],
        &["BITOP", "AND", "dest", "nokey", "nokey2"],
        &["EXISTS", "dest"],
        &["BITOP", "AND", "dest", "k1", "list"],
        &["BITOP", "OR", "list", "k1"],
        &["TYPE", "list"],
        &["BITOP", "AND", "k1", "k1", "nokey"],
        &["GET", "k1"],
        // BITFIELD
        &["BITFIELD", "bf", "SET", "i8", "0", "100", "GET", "i8", "0"],
        &["BITFIELD", "bf", "INCRBY", "i8", "0", "100"],
        &[
            "BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "100",
        ],
        &[
            "BITFIELD", "bf", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "100",
        ],
        &[
            "BITFIELD", "bf", "OVERFLOW", "WRAP", "INCRBY", "i8", "0", "100",
        ],
        &[
            "BITFIELD", "bf", "SET", "u4", "#1", "15", "GET", "u4", "#1", "GET", "u4", "4",
        ],
        &[
            "BITFIELD", "bf", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2", "102",
            "5",
        ],
        &["BITFIELD", "bf", "SET", "u8", "8", "-1"],
        &["BITFIELD", "bf", "OVERFLOW", "SAT", "SET", "u8", "8", "-1"],
        &[
            "BITFIELD", "bf", "OVERFLOW", "FAIL", "SET", "u8", "8", "256",
        ],
        &[
            "BITFIELD",
            "bf",
            "SET",
            "i64",
            "0",
            "-9223372036854775808",
            "INCRBY",
            "i64",
            "0",
            "-1",
        ],
        &[
            "BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "i64", "0", "-1",
        ],
        &[
            "BITFIELD",
            "bf",
            "SET",
            "u63",
            "3",
            "9223372036854775807",
            "GET",
            "u63",
            "3",
        ],
        &[
            "BITFIELD", "bf", "GET", "i1", "0", "GET", "u1", "0", "GET", "i5", "3",
        ],
        &["GET", "bf"],
        &["BITFIELD", "bf"],
        &["BITFIELD", "bf", "GET", "u64", "0"],
        &["BITFIELD", "bf", "GET", "i65", "0"],
        &["BITFIELD", "bf", "GET", "x8", "0"],
        &["BITFIELD", "bf", "GET", "i8", "-1"],
        &["BITFIELD", "bf", "GET", "i8", "#x"],
        &["BITFIELD", "bf", "SET", "i8", "0", "x"],
        &["BITFIELD", "bf", "OVERFLOW", "MAYBE", "GET", "i8", "0"],
        &["BITFIELD", "bf", "GET", "i8"],
        &["BITFIELD", "bf", "FROB", "i8", "0"],
        &["BITFIELD", "newbf", "GET", "i8", "0"],
        &["EXISTS", "newbf"],
        &[
            "BITFIELD", "newbf", "OVERFLOW", "FAIL", "SET", "u2", "0", "7",
        ],
        &["BITFIELD", "list", "GET", "i8", "0"],
        &["BITFIELD_RO", "bf", "GET", "i8", "0", "GET", "u16", "#1"],
        &["BITFIELD_RO", "bf", "SET", "i8", "0", "1"],
        &["BITFIELD_RO", "bf", "INCRBY", "i8", "0", "x"],
        &["BITFIELD_RO", "nokey", "GET", "i8", "0"],
    ];
    for case in cases {
        same(&mut r, &mut a, case);
    }
}

/// A seeded random sequence of bit writes and reads over a few keys, and
/// the strings they leave, compared step by step.
#[test]
fn random_bitmap_workload_matches_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    // xorshift64*: the same steps every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let keys = ["r0", "r1", "r2"];
    let types = ["i8", "u8", "i16", "u5", "i3", "u1", "i64", "u63", "i32"];
    let overflows = ["WRAP", "SAT", "FAIL"];
    for _ in 0..1500 {
        let key = keys[next(3) as usize];
        let off = next(200).to_string();
        let cmd: Vec<String> = match next(8) {
            0 => vec!["SETBIT".into(), key.into(), off, next(2).to_string()],
            1 => vec!["GETBIT".into(), key.into(), off],
            2 => {
                let mut c = vec!["BITCOUNT".to_string(), key.into()];
                if next(2) == 0 {
                    c.push((next(60) as i64 - 30).to_string());
                    c.push((next(60) as i64 - 30).to_string());
                    if next(2) == 0 {
                        c.push(["BYTE", "BIT"][next(2) as usize].into());
                    }
                }
                c
            }
            3 => {
                let mut c = vec!["BITPOS".to_string(), key.into(), next(2).to_string()];
                for _ in 0..next(3) {
                    c.push((next(60) as i64 - 30).to_string());
                }
                if c.len() == 5 && next(2) == 0 {
                    c.push(["BYTE", "BIT"][next(2) as usize].into());
                }
                c
            }
            4 => {
                let op = ["AND", "OR", "XOR", "NOT"][next(4) as usize];
                let mut c = vec![
                    "BITOP".to_string(),
                    op.into(),
                    keys[next(3) as usize].into(),
                ];
                let n = if op == "NOT" { 1 } else { 1 + next(3) };
                for _ in 0..n {
                    c.push(keys[next(3) as usize].into());
                }
                c
            }
            _ => {
                let mut c = vec!["BITFIELD".to_string(), key.into()];
                for _ in 0..1 + next(3) {
                    let t = types[next(types.len() as u64) as usize];
                    let o = if next(4) == 0 {
                        format!("#{}", next(10))
                    } else {
                        next(120).to_string()
                    };
                    match next(4) {
                        0 => c.extend(["GET".into(), t.into(), o]),
                        1 => c.extend([
                            "SET".into(),
                            t.into(),
                            o,
                            (next(2000) as i64 - 1000).to_string(),
                        ]),
                        2 => c.extend([
                            "INCRBY".into(),
                            t.into(),
                            o,
                            (next(600) as i64 - 300).to_string(),
                        ]),
                        _ => c.extend(["OVERFLOW".into(), overflows[next(3) as usize].into()]),
                    }
                }
                c
            }
        };
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        same(&mut r, &mut a, &args);
    }
    for key in keys {
        same(&mut r, &mut a, &["GET", key]);
    }
}

/// A bit write that leaves the string as it was changes nothing, as in
/// Redis 7.0: a WATCH on the key survives it and nothing is logged
/// (`rdb_changes_since_last_save` stays); one that changes a bit, or makes
/// or grows the string, fails the WATCH. BITOP with an empty result and no
/// destination to delete changes nothing either.
#[test]
fn bit_writes_that_change_nothing_leave_watches_alone() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let run = |server: &common::ServerProcess| -> Vec<String> {
        let (mut w, mut o) = (server.connect(), server.connect());
        o.cmd(&["SETBIT", "b", "7", "1"]).expect("setbit");
        let writes: &[&[&str]] = &[
            &["SETBIT", "b", "7", "1"],
            &["SETBIT", "b", "6", "0"],
            &["SETBIT", "b", "6", "1"],
            &["SETBIT", "b", "100", "0"],
            &["BITFIELD", "b", "SET", "u8", "0", "3"],
            &["BITFIELD", "b", "SET", "u8", "0", "3"],
            &["BITFIELD", "b", "INCRBY", "u8", "0", "0", "GET", "u8", "0"],
            &[
                "BITFIELD", "b", "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "300",
            ],
            &["BITFIELD", "b", "INCRBY", "u8", "0", "1"],
            &[
                "BITFIELD", "b", "INCRBY", "u8", "0", "1", "SET", "u4", "8", "5", "SET", "u4", "8",
                "5",
            ],
            &["BITFIELD", "b", "SET", "u8", "400", "0"],
            &["BITOP", "AND", "b", "nokey1", "nokey2"],
            &["BITOP", "AND", "nodest", "nokey1", "nokey2"],
        ];
        let mut out = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            let key = if i == writes.len() - 1 { "nodest" } else { "b" };
            let dirty = |c: &mut RespConn| -> i64 {
                common::info_field(c, "persistence", "rdb_changes_since_last_save")
                    .parse()
                    .expect("rdb_changes_since_last_save")
            };
            let before = dirty(&mut o);
            o.cmd(&["WATCH", key]).expect("watch");
            let reply = w.cmd(write).expect("write");
            let changes = dirty(&mut o) - before;
            o.cmd(&["MULTI"]).expect("multi");
            o.cmd(&["PING"]).expect("ping");
            let exec = o.cmd(&["EXEC"]).expect("exec");
            out.push(format!(
                "{write:?} -> {reply:?}; logged {changes}; EXEC {exec:?}"
            ));
        }
        out
    };
    assert_eq!(run(&target), run(&reference));
}
