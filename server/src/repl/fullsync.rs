//! A full sync's payload built in the background, as Redis's diskless sync
//! builds it in a forked child: the keyspace as of the PSYNC (its log
//! offset) goes out while clients keep writing.
//!
//! The executor's part is a background snapshot's (`persist::bgsave`): it
//! walks the tables in slices between commands, and the write barrier hands
//! it the pre-image of any key about to change, so the snapshot is the
//! keyspace at the instant the sync began. The snapshot's blocks (anykv's
//! record encoding) go to a writer thread, which here transcodes them to
//! RDB ([`RdbStream::write`]) and passes the RDB to the replica's
//! connection in chunks over a bounded channel; the connection sends them
//! inside `$EOF:<mark>` framing (a replica that cannot take that framing
//! gets a payload built at once, whose length is known). The channel's
//! bound is the backpressure: a slow replica slows the writer thread, whose
//! full queue pauses the walk (without spinning), while writes go on and
//! the log keeps the stream from the sync's offset for it (up to
//! `client-output-buffer-limit replica`, as Redis keeps a replica's output
//! buffer during a sync).

use std::io::{self, Write};

use tokio::sync::mpsc;

use crate::persist::codec;
use crate::rdb::RdbWriter;

/// RDB bytes per chunk handed to the connection.
pub const CHUNK: usize = 256 << 10;
/// Chunks the channel holds (the payload's buffer besides the writer's
/// block queue).
pub const CHUNKS_QUEUED: usize = 4;

/// The end of a payload: an empty chunk (real chunks never are), so the
/// connection tells a complete payload from a writer that stopped.
pub const END: Vec<u8> = Vec::new();

/// The connection's end: the chunks, then the `$EOF:` mark that closes
/// the payload.
#[derive(Debug)]
pub struct Payload {
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub mark: String,
}

/// What the writer thread needs to turn snapshot blocks into an RDB.
pub struct RdbStream {
    /// The RDB's AUX fields (replication id and offset among them).
    pub aux: Vec<(String, String)>,
    /// Keys and keys with a TTL per database at the start (RESIZEDB hints).
    pub sizes: Vec<(u64, u64)>,
    /// The function libraries' code.
    pub functions: Vec<Vec<u8>>,
    pub tx: mpsc::Sender<Vec<u8>>,
}

impl RdbStream {
    /// Transcodes the blocks `blocks` feeds (n records each, as the
    /// snapshot file takes them) into an RDB sent chunk by chunk, then the
    /// end marker. Returns the number of keys.
    pub fn write(
        self,
        blocks: impl FnOnce(&mut dyn FnMut(&[u8], u32) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<u64> {
        let aux: Vec<(&str, &str)> = self
            .aux
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut w = RdbWriter::new(
            ChunkSink {
                tx: self.tx,
                buf: Vec::with_capacity(CHUNK),
            },
            &aux,
        )?;
        for code in &self.functions {
            w.function(code)?;
        }
        let keys = transcode(&mut w, &self.sizes, blocks)?;
        let mut sink = w.finish()?;
        sink.send()?;
        sink.tx
            .blocking_send(END)
            .map_err(|_| io::Error::other("the replica went away"))?;
        Ok(keys)
    }
}

/// Writes the records the snapshot blocks `blocks` feeds (n each) as RDB
/// entries, each database announced with its sizes (`sizes`: keys and
/// keys with a TTL) the first time it comes: the number of keys.
pub fn transcode<W: io::Write>(
    w: &mut RdbWriter<W>,
    sizes: &[(u64, u64)],
    blocks: impl FnOnce(&mut dyn FnMut(&[u8], u32) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<u64> {
    let thresholds = codec::Thresholds::default();
    let mut announced = vec![false; sizes.len()];
    let mut current: Option<u32> = None;
    let mut keys = 0u64;
    blocks(&mut |block: &[u8], n: u32| {
        let mut input = block;
        for _ in 0..n {
            let rec = codec::decode_entry(&mut input, &thresholds)
                .map_err(|e| io::Error::other(format!("snapshot block: {e}")))?;
            if current != Some(rec.db) {
                // Pre-images of several databases interleave: the RDB
                // switches back and forth (loaders take any order).
                let i = rec.db as usize;
                match announced.get_mut(i) {
                    Some(a) if !*a => {
                        *a = true;
                        let (k, e) = sizes[i];
                        w.select_db(rec.db, k, e)?;
                    }
                    _ => w.select_only(rec.db)?,
                }
                current = Some(rec.db);
            }
            w.entry(rec.key.as_bytes(), &rec.value, rec.expire_at)?;
            keys += 1;
        }
        Ok(())
    })?;
    Ok(keys)
}

/// The RDB writer's output: chunks for the connection.
struct ChunkSink {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // The chunk crosses to the connection, which frees it outside any
        // tenant's account (see alloc.rs): make it outside one too.
        let chunk = crate::alloc::unscoped(|| self.buf.clone());
        self.buf.clear();
        self.tx.blocking_send(chunk).map_err(|e| {
            crate::alloc::unscoped(|| drop(e));
            io::Error::other("the replica went away")
        })
    }
}

impl Write for ChunkSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_one_rdb_that_loads_back() {
        use crate::db::{Value, NO_EXPIRE};
        let recs: Vec<(u32, &[u8], Value, i64)> = vec![
            (0, b"a", Value::from_bytes(b"1"), NO_EXPIRE),
            (3, b"b", Value::from_bytes(b"2"), 4_000_000_000_000),
            (0, b"c", Value::from_bytes(b"3"), NO_EXPIRE),
        ];
        let mut block = Vec::new();
        for (db, k, v, e) in &recs {
            codec::encode_entry(&mut block, *db, k, v, *e);
        }
        let (tx, mut rx) = mpsc::channel(CHUNKS_QUEUED);
        let mut sizes = vec![(0, 0); 16];
        sizes[0] = (2, 0);
        sizes[3] = (1, 1);
        let stream = RdbStream {
            aux: vec![("repl-offset".into(), "42".into())],
            sizes,
            functions: vec![b"#!lua name=l\nredis.register_function('f', function() end)".to_vec()],
            tx,
        };
        let writer = std::thread::spawn(move || stream.write(|push| push(&block, 3)));
        let mut rdb = Vec::new();
        let mut ended = false;
        while let Some(chunk) = rx.blocking_recv() {
            if chunk.is_empty() {
                ended = true;
                break;
            }
            rdb.extend_from_slice(&chunk);
        }
        assert!(ended, "the end marker follows the payload");
        assert_eq!(writer.join().expect("writer").expect("rdb"), 3);
        let mut ks = crate::db::Keyspace::new(16);
        let (info, _) =
            crate::rdb::read_into(&rdb[..], &codec::Thresholds::default(), &mut ks, None)
                .expect("the RDB loads");
        assert_eq!(info.aux("repl-offset"), Some("42"));
        assert_eq!(info.functions.len(), 1, "libraries travel with the keys");
        assert_eq!(ks.dbs[0].len(), 2);
        assert_eq!(ks.dbs[3].len(), 1);
    }

    #[test]
    fn a_replica_gone_stops_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let stream = RdbStream {
            aux: Vec::new(),
            sizes: vec![(0, 0)],
            functions: Vec::new(),
            tx,
        };
        let mut block = Vec::new();
        let big = crate::db::Value::from_bytes(&vec![b'x'; CHUNK * 2]);
        codec::encode_entry(&mut block, 0, b"k", &big, crate::db::NO_EXPIRE);
        let r = stream.write(|push| push(&block, 1));
        assert!(r.is_err(), "{r:?}");
    }
}
