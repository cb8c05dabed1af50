//! Duplicate `custom_id` detection in memory that does not grow with the file.
//!
//! Every line adds a 24-byte entry: a 128-bit digest of its custom_id and its line number. Up to
//! `capacity` entries are kept in memory; a full buffer is sorted and appended to an anonymous
//! temporary file (`O_TMPFILE` where the kernel has it, so nothing is left behind if the process
//! dies) as one sorted run. [`DigestLog::finish`] merges the runs — or only sorts the buffer, for
//! a file that never filled it — and reports each line whose digest an earlier line already had,
//! with that earlier line. Memory: the buffer ([`IN_MEMORY`] entries, 3 MiB) plus, while merging,
//! one read buffer per run (at most 64 KiB each, the whole set within the buffer's size), for any
//! number of lines. The disk holds 24 bytes per line until validation ends.
//!
//! Sorting and file I/O run on tokio's blocking pool, off the validation task.
//! (The `extsort` crate was considered: given a folder it leaves its segment files there, it
//! needs rayon, and it writes from the caller's thread.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Entries held in memory before a sorted run is written out (3 MiB).
pub(crate) const IN_MEMORY: usize = 1 << 17;

const ENTRY_BYTES: usize = 24;

/// Digest then line: sorting groups equal digests with the first line first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    hi: u64,
    lo: u64,
    line: u64,
}

impl Entry {
    fn new(custom_id: &str, line: u64) -> Entry {
        let half = |seed: u8| {
            let mut h = std::hash::DefaultHasher::new();
            seed.hash(&mut h);
            custom_id.hash(&mut h);
            h.finish()
        };
        Entry { hi: half(0), lo: half(1), line }
    }

    fn same_id(&self, other: &Entry) -> bool {
        (self.hi, self.lo) == (other.hi, other.lo)
    }

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.hi.to_le_bytes());
        out[8..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..24].copy_from_slice(&self.line.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Entry {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Entry { hi: word(0), lo: word(8), line: word(16) }
    }
}

/// A line whose custom_id (by digest) appeared before, on line `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repeat {
    pub line: u64,
    pub first: u64,
}

/// The custom_id digests of one file, in line order.
pub(crate) struct DigestLog {
    buf: Vec<Entry>,
    capacity: usize,
    dir: PathBuf,
    spill: Option<File>,
    /// Entries in each sorted run, in file order.
    runs: Vec<u64>,
}

impl DigestLog {
    /// A log keeping up to `capacity` entries in memory and spilling to a file in `dir`.
    pub(crate) fn new(dir: PathBuf, capacity: usize) -> DigestLog {
        let capacity = capacity.max(1);
        // Reserved once, so the buffer never reallocates (untouched pages cost no memory).
        DigestLog { buf: Vec::with_capacity(capacity), capacity, dir, spill: None, runs: Vec::new() }
    }

    /// Records line `line`'s custom_id. Lines must come in increasing order.
    pub(crate) async fn push(&mut self, custom_id: &str, line: u64) -> io::Result<()> {
        self.buf.push(Entry::new(custom_id, line));
        if self.buf.len() >= self.capacity {
            let buf = std::mem::take(&mut self.buf);
            let (spill, dir) = (self.spill.take(), self.dir.clone());
            let (buf, spill, n) = blocking(move || write_run(buf, spill, &dir)).await?;
            self.runs.push(n);
            (self.buf, self.spill) = (buf, Some(spill));
        }
        Ok(())
    }

    /// The `limit` lowest-numbered repeated lines, in line order.
    pub(crate) async fn finish(self, limit: usize) -> io::Result<Vec<Repeat>> {
        blocking(move || self.finish_blocking(limit)).await
    }

    fn finish_blocking(mut self, limit: usize) -> io::Result<Vec<Repeat>> {
        let mut found = Repeats::new(limit);
        let Some(spill) = self.spill.take() else {
            self.buf.sort_unstable();
            self.buf.iter().for_each(|e| found.see(*e));
            return Ok(found.into_sorted());
        };
        let (buf, spill, n) = write_run(std::mem::take(&mut self.buf), Some(spill), &self.dir)?;
        drop(buf);
        if n > 0 {
            self.runs.push(n);
        }
        // Read buffers share the in-memory buffer's budget, a multiple of the entry size each.
        let per_run = (self.capacity * ENTRY_BYTES / self.runs.len()).clamp(ENTRY_BYTES * 16, 64 * 1024);
        let per_run = per_run / ENTRY_BYTES * ENTRY_BYTES;
        let mut start = 0u64;
        let mut runs = Vec::with_capacity(self.runs.len());
        for &count in &self.runs {
            let end = start + count * ENTRY_BYTES as u64;
            runs.push(RunReader { file: &spill, pos: start, end, buf: vec![0; per_run], at: 0, len: 0 });
            start = end;
        }
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, run) in runs.iter_mut().enumerate() {
            if let Some(e) = run.next()? {
                heap.push(Reverse((e, i)));
            }
        }
        while let Some(Reverse((e, i))) = heap.pop() {
            found.see(e);
            if let Some(next) = runs[i].next()? {
                heap.push(Reverse((next, i)));
            }
        }
        Ok(found.into_sorted())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Sorts `buf` and appends it to the spill file (created in `dir` on first use); returns the
/// emptied buffer, the file and how many entries were written.
fn write_run(mut buf: Vec<Entry>, spill: Option<File>, dir: &std::path::Path) -> io::Result<(Vec<Entry>, File, u64)> {
    let mut file = match spill {
        Some(f) => f,
        None => tempfile::tempfile_in(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating a scratch file in {}: {e}", dir.display())))?,
    };
    buf.sort_unstable();
    let mut w = BufWriter::with_capacity(256 * 1024, &mut file);
    let mut bytes = [0u8; ENTRY_BYTES];
    for e in &buf {
        e.encode(&mut bytes);
        w.write_all(&bytes)?;
    }
    w.flush()?;
    drop(w);
    let n = buf.len() as u64;
    buf.clear();
    Ok((buf, file, n))
}

/// Reads one sorted run of the spill file through its own buffer.
struct RunReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl RunReader<'_> {
    fn next(&mut self) -> io::Result<Option<Entry>> {
        if self.at == self.len {
            if self.pos == self.end {
                return Ok(None);
            }
            let n = (self.buf.len() as u64).min(self.end - self.pos) as usize;
            let mut f = self.file;
            f.seek(SeekFrom::Start(self.pos))?;
            f.read_exact(&mut self.buf[..n])?;
            (self.pos, self.at, self.len) = (self.pos + n as u64, 0, n);
        }
        let e = Entry::decode(&self.buf[self.at..self.at + ENTRY_BYTES]);
        self.at += ENTRY_BYTES;
        Ok(Some(e))
    }
}

/// Reads entries in sorted order and keeps the `limit` repeats with the lowest line numbers.
struct Repeats {
    limit: usize,
    /// The first entry of the current run of equal digests.
    group: Option<Entry>,
    heap: BinaryHeap<(u64, u64)>,
}

impl Repeats {
    fn new(limit: usize) -> Repeats {
        Repeats { limit, group: None, heap: BinaryHeap::with_capacity(limit + 1) }
    }

    fn see(&mut self, e: Entry) {
        match self.group {
            Some(g) if g.same_id(&e) => {
                if self.limit > 0 {
                    self.heap.push((e.line, g.line));
                    if self.heap.len() > self.limit {
                        self.heap.pop();
                    }
                }
            }
            _ => self.group = Some(e),
        }
    }

    fn into_sorted(self) -> Vec<Repeat> {
        self.heap.into_sorted_vec().into_iter().map(|(line, first)| Repeat { line, first }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::collections::HashMap;

    /// The repeats a plain map finds: every line whose id an earlier line had.
    fn expected(ids: &[String], limit: usize) -> Vec<Repeat> {
        let mut first = HashMap::new();
        let mut all = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let line = i as u64 + 1;
            match first.get(id) {
                Some(&f) => all.push(Repeat { line, first: f }),
                None => {
                    first.insert(id.clone(), line);
                }
            }
        }
        all.truncate(limit);
        all
    }

    async fn found(ids: &[String], capacity: usize, limit: usize) -> (Vec<Repeat>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DigestLog::new(dir.path().to_path_buf(), capacity);
        for (i, id) in ids.iter().enumerate() {
            log.push(id, i as u64 + 1).await.unwrap();
        }
        let runs = log.runs.len();
        let repeats = log.finish(limit).await.unwrap();
        // The scratch file is anonymous: the folder stays empty.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (repeats, runs)
    }

    fn random_ids(n: usize, distinct: usize, seed: u64) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| format!("id-{}", rng.random_range(0..distinct))).collect()
    }

    #[tokio::test]
    async fn unique_ids_have_no_repeats_in_memory_or_spilled() {
        let ids: Vec<String> = (0..5000).map(|i| format!("req-{i}")).collect();
        for capacity in [IN_MEMORY, 5000, 4999, 700, 1] {
            let (repeats, _) = found(&ids, capacity, 100).await;
            assert!(repeats.is_empty(), "capacity {capacity}: {repeats:?}");
        }
    }

    #[tokio::test]
    async fn finds_what_a_map_finds_across_runs() {
        for (seed, capacity) in [(1, 64), (2, 333), (3, 1000), (4, 10_000)] {
            // Few distinct ids: many repeats, some with their first line in another run.
            let ids = random_ids(3000, 2500, seed);
            for limit in [1, 7, 100, 10_000] {
                let (repeats, runs) = found(&ids, capacity, limit).await;
                assert_eq!(repeats, expected(&ids, limit), "seed {seed}, capacity {capacity}, limit {limit}");
                assert_eq!(runs, if capacity < ids.len() { ids.len() / capacity } else { 0 }, "capacity {capacity}");
            }
        }
    }

    #[tokio::test]
    async fn a_repeat_far_apart_is_found_with_its_first_line() {
        let mut ids: Vec<String> = (0..20_000).map(|i| format!("r{i}")).collect();
        ids[19_998] = "r3".into();
        ids[12_000] = "r3".into();
        ids[19_999] = "r19997".into();
        let (repeats, runs) = found(&ids, 1024, 100).await;
        assert!(runs >= 19);
        assert_eq!(
            repeats,
            vec![
                Repeat { line: 12_001, first: 4 },
                Repeat { line: 19_999, first: 4 },
                Repeat { line: 20_000, first: 19_998 }
            ]
        );
    }

    #[tokio::test]
    async fn one_id_on_every_line_keeps_only_the_limit() {
        let ids = vec!["same".to_string(); 50_000];
        let (repeats, _) = found(&ids, 4096, 100).await;
        assert_eq!(repeats.len(), 100);
        assert_eq!(repeats[0], Repeat { line: 2, first: 1 });
        assert_eq!(repeats[99], Repeat { line: 101, first: 1 });
    }

    #[tokio::test]
    async fn an_unwritable_scratch_folder_is_an_error_naming_it() {
        let mut log = DigestLog::new(PathBuf::from("/nonexistent/vllm-batch-scratch"), 2);
        log.push("a", 1).await.unwrap();
        let e = log.push("b", 2).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vllm-batch-scratch"), "{e}");
    }
}
