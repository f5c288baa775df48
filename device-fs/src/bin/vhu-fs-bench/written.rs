//! What the WRITE workloads leave in the share's `wdata` file, checked after every run that
//! wrote: a back-end that answers a WRITE with its size but puts the data nowhere, somewhere
//! else, or puts other bytes fails the run, as a wrong reply does.
//!
//! Every write sends the same bytes, [`pattern`]`(0, ..)` of the request's size, at an offset
//! that is a multiple of that size, so a page at file offset `x` holds `pattern(x % size)` once
//! written and `pattern(x)` (as laid out) while not. The lanes mark the pages their answered
//! writes covered; the check reads the file back (the first and the last word of each page)
//! and then lays it out again, so every run starts from the same file. It owns that record and
//! the check; it sends no request.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::share::{lay_out, DATA_SIZE};
use crate::workload::pattern;

const PAGE: u64 = 4096;
const PAGES: usize = (DATA_SIZE / PAGE) as usize;

/// The pages of `wdata` a run wrote, and the size of its writes; cloned into every lane.
#[derive(Clone)]
pub(crate) struct Written(Arc<Record>);

struct Record {
    pages: Vec<AtomicU64>,
    /// The writes' size (every write of a run has the same); 0 before the first.
    size: AtomicU32,
    /// Set by a write of another size than the first's.
    mixed: AtomicU32,
}

impl Written {
    pub(crate) fn new() -> Self {
        let pages = (0..PAGES.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Record { pages, size: AtomicU32::new(0), mixed: AtomicU32::new(0) }))
    }

    /// Records an answered write of `size` bytes at `offset`.
    pub(crate) fn mark(&self, offset: u64, size: u32) {
        let record = &self.0;
        if let Err(first) =
            record.size.compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed)
        {
            if first != size {
                record.mixed.store(size, Ordering::Relaxed);
            }
        }
        let end = (offset + u64::from(size)).min(DATA_SIZE);
        for page in (offset / PAGE)..end.div_ceil(PAGE) {
            let page = page as usize;
            record.pages[page / 64].fetch_or(1 << (page % 64), Ordering::Relaxed);
        }
    }

    fn written(&self, page: usize) -> bool {
        self.0.pages[page / 64].load(Ordering::Relaxed) & (1 << (page % 64)) != 0
    }

    /// Whether any write was recorded.
    pub(crate) fn any(&self) -> bool {
        self.0.size.load(Ordering::Relaxed) != 0
    }

    /// Checks `file` (the share's `wdata`) against the writes recorded, then lays it out
    /// again; see the module docs.
    pub(crate) fn check_and_restore(&self, file: &Path) -> Result<(), String> {
        let checked = self.check(file);
        lay_out(file).map_err(|e| format!("laying out {} again: {e}", file.display()))?;
        checked
    }

    fn check(&self, path: &Path) -> Result<(), String> {
        let size = u64::from(self.0.size.load(Ordering::Relaxed));
        let mixed = self.0.mixed.load(Ordering::Relaxed);
        if mixed != 0 {
            return Err(format!("writes of {size} and of {mixed} bytes in one run"));
        }
        let file = File::open(path).map_err(|e| format!("reading back {}: {e}", path.display()))?;
        let mut block = vec![0u8; 1 << 20];
        for start in (0..DATA_SIZE).step_by(block.len()) {
            file.read_exact_at(&mut block, start)
                .map_err(|e| format!("reading back {}: {e}", path.display()))?;
            for (i, page) in block.chunks(PAGE as usize).enumerate() {
                let at = start + i as u64 * PAGE;
                let written = self.written((at / PAGE) as usize);
                // Where the written bytes and the laid-out ones are the same (the file's
                // first request), either holds.
                let base = if written { at % size.max(1) } else { at };
                for word in [0, page.len() - 8] {
                    let mut want = [0u8; 8];
                    pattern(base + word as u64, &mut want);
                    if page[word..word + 8] != want {
                        return Err(if written {
                            format!(
                                "the page at {at} of wdata does not hold what was written there"
                            )
                        } else {
                            format!("the page at {at} of wdata changed, though no write went there")
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
        assert!(error.contains(&format!("at {}", (2 << 20) + (5 << 12))), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
