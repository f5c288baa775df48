//! What the WRITE workloads leave in the share's `wdata` file, checked after every run that
//! wrote: a back-end that answers a WRITE with its size but puts the data nowhere, somewhere
//! else, or puts other bytes fails the run, as a wrong reply does.
//!
//! Every write of a run sends the same bytes, [`pattern`]`(0, ..)` of the run's request size,
//! at an offset that is a multiple of that size, so the file is a row of blocks of that size:
//! byte `x` of a block written holds what byte `x % size` of the pattern holds, of a block not
//! written what byte `x` does (as laid out). The lanes mark the blocks their answered writes
//! covered; the check reads the file back (the first and the last word of each page) and then
//! lays it out again, so every run starts from the same file. It owns that record and the
//! check; it sends no request.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::share::{lay_out, DATA_SIZE};
use crate::workload::pattern;

const PAGE: u64 = 4096;
/// Blocks a file can hold: writes are at least a page each.
const BLOCKS: usize = (DATA_SIZE / PAGE) as usize;

/// The blocks of `wdata` a run wrote, and the size of its writes; cloned into every lane.
#[derive(Clone)]
pub(crate) struct Written(Arc<Record>);

struct Record {
    blocks: Vec<AtomicU64>,
    /// The writes' size (every write of a run has the same); 0 before the first.
    size: AtomicU32,
    /// A write that was no whole block of the run's (another size than the first's, below a
    /// page, or at an offset that is no multiple of it): its offset and size (0: none).
    odd: (AtomicU64, AtomicU32),
}

impl Written {
    pub(crate) fn new() -> Self {
        let blocks = (0..BLOCKS.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let odd = (AtomicU64::new(0), AtomicU32::new(0));
        Self(Arc::new(Record { blocks, size: AtomicU32::new(0), odd }))
    }

    /// Records an answered write of `size` bytes at `offset`.
    pub(crate) fn mark(&self, offset: u64, size: u32) {
        let record = &self.0;
        let first =
            match record.size.compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => size,
                Err(first) => first,
            };
        if first != size || u64::from(size) < PAGE || offset % u64::from(size) != 0 {
            record.odd.0.store(offset, Ordering::Relaxed);
            record.odd.1.store(size.max(1), Ordering::Relaxed);
            return;
        }
        let block = (offset / u64::from(size)) as usize;
        if let Some(word) = record.blocks.get(block / 64) {
            word.fetch_or(1 << (block % 64), Ordering::Relaxed);
        }
    }

    /// Whether any write was recorded.
    pub(crate) fn any(&self) -> bool {
        self.0.size.load(Ordering::Relaxed) != 0
    }

    /// What byte `x` of the file should hold, and whether a write covered it.
    fn expected(&self, x: u64, size: u64) -> (u8, bool) {
        let block = (x / size) as usize;
        let written = x < DATA_SIZE - DATA_SIZE % size
            && self.0.blocks[block / 64].load(Ordering::Relaxed) & (1 << (block % 64)) != 0;
        let from = if written { x % size } else { x };
        let mut word = [0u8; 8];
        pattern(from - from % 8, &mut word);
        (word[(from % 8) as usize], written)
    }

    /// Checks `file` (the share's `wdata`) against the writes recorded, then lays it out
    /// again; see the module docs.
    pub(crate) fn check_and_restore(&self, file: &Path) -> Result<(), String> {
        let checked = self.check(file);
        lay_out(file).map_err(|e| format!("laying out {} again: {e}", file.display()))?;
        checked
    }

    fn check(&self, path: &Path) -> Result<(), String> {
        let first = self.0.size.load(Ordering::Relaxed);
        let odd = (self.0.odd.0.load(Ordering::Relaxed), self.0.odd.1.load(Ordering::Relaxed));
        if odd.1 != 0 {
            let (at, size) = odd;
            return Err(format!(
                "a write of {size} bytes at {at}, no whole block of the run's {first}-byte writes"
            ));
        }
        let size = u64::from(first).max(PAGE);
        let file = File::open(path).map_err(|e| format!("reading back {}: {e}", path.display()))?;
        let mut block = vec![0u8; 1 << 20];
        for start in (0..DATA_SIZE).step_by(block.len()) {
            file.read_exact_at(&mut block, start)
                .map_err(|e| format!("reading back {}: {e}", path.display()))?;
            for (i, page) in block.chunks(PAGE as usize).enumerate() {
                let at = start + i as u64 * PAGE;
                for offset in (0..8).chain(page.len() - 8..page.len()) {
                    let (want, written) = self.expected(at + offset as u64, size);
                    if page[offset] != want {
                        let at = at + offset as u64;
                        return Err(if written {
                            format!("byte {at} of wdata does not hold what was written there")
                        } else {
                            format!("byte {at} of wdata changed, though no write went there")
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file laid out as the share's `wdata`, in a directory of its own.
    fn laid() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "vhu-fs-bench-written-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wdata");
        std::fs::write(&file, b"").unwrap();
        lay_out(&file).unwrap();
        (dir, file)
    }

    fn write(file: &Path, offset: u64, size: usize) {
        let mut data = vec![0u8; size];
        pattern(0, &mut data);
        let file = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        file.write_all_at(&data, offset).unwrap();
    }

    #[test]
    fn writes_that_landed_where_they_were_sent_pass_and_the_file_is_laid_out_again() {
        let (dir, file) = laid();
        let written = Written::new();
        for offset in [8 << 20, 1 << 20, 40 << 20] {
            write(&file, offset, 128 << 10);
            written.mark(offset, 128 << 10);
        }
        assert!(written.any());
        written.check_and_restore(&file).unwrap();
        // Laid out again: a run that writes nothing finds nothing changed.
        Written::new().check_and_restore(&file).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_write_answered_but_not_made_fails_the_check() {
        let (dir, file) = laid();
        let written = Written::new();
        written.mark(12 << 12, 4096);
        let error = written.check_and_restore(&file).unwrap_err();
        assert!(error.contains("does not hold what was written"), "{error}");
        // The check laid the file out again.
        Written::new().check_and_restore(&file).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_write_made_in_the_wrong_place_fails_the_check() {
        let (dir, file) = laid();
        let written = Written::new();
        write(&file, 13 << 12, 4096);
        written.mark(12 << 12, 4096);
        let error = written.check_and_restore(&file).unwrap_err();
        assert!(error.contains("does not hold what was written"), "{error}");
        // Where it went, with the page it was meant for made right: a stray write.
        let written = Written::new();
        write(&file, 13 << 12, 4096);
        assert!(!written.any());
        let error = written.check_and_restore(&file).unwrap_err();
        assert!(error.contains("changed, though no write went there"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A back-end whose max_write is not a whole number of pages gets writes of that size: a
    /// page can straddle two of them, or a written block and one not written.
    #[test]
    fn writes_of_a_size_that_is_no_whole_number_of_pages_are_checked_byte_by_byte() {
        let (dir, file) = laid();
        let size = 6000;
        let written = Written::new();
        for k in [1, 2, 7] {
            write(&file, k * size as u64, size);
            written.mark(k * size as u64, size as u32);
        }
        written.check_and_restore(&file).unwrap();
        // One write answered but left out: its block's first page shows it.
        let written = Written::new();
        write(&file, 2 * size as u64, size);
        written.mark(2 * size as u64, size as u32);
        written.mark(3 * size as u64, size as u32);
        let error = written.check_and_restore(&file).unwrap_err();
        assert!(error.contains("does not hold what was written"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_page_of_other_bytes_inside_a_large_write_fails_the_check() {
        let (dir, file) = laid();
        let written = Written::new();
        write(&file, 2 << 20, 1 << 20);
        // The guest's buffer for one page of the request was not the one used.
        let file_handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        file_handle.write_all_at(&[0xa5; 4096], (2 << 20) + (5 << 12)).unwrap();
        written.mark(2 << 20, 1 << 20);
        let error = written.check_and_restore(&file).unwrap_err();
        assert!(error.contains(&format!("byte {} ", (2 << 20) + (5 << 12))), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
