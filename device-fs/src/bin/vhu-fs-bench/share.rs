//! The shared directory the workloads run on, laid out once per benchmark and removed at the
//! end (or by the signal that stops the bench, `interrupt.rs`): two 64 MiB data files whose
//! words hold their own offsets (`data` read, `wdata` written), 100 small files, and a directory
//! of 10 000 empty files. It lives on `/dev/shm` when
//! there is one, so the back-ends are measured, not a disk.

use std::path::{Path, PathBuf};

use crate::workload::pattern;

/// Bytes of each data file.
pub(crate) const DATA_SIZE: u64 = 64 << 20;
/// Small files LOOKUP and GETATTR cycle through (5 bytes each).
pub(crate) const SMALL_FILES: u32 = 100;
/// Entries of the big directory.
pub(crate) const BIG_ENTRIES: u32 = 10_000;

/// Name of small file `i`.
pub(crate) fn small_name(i: u32) -> String {
    format!("f{i}")
}

/// Name of entry `i` of the big directory.
pub(crate) fn big_name(i: u32) -> String {
    format!("n{i:05}")
}

/// Writes a data file's [`pattern`] over `path` (`DATA_SIZE` bytes, created if missing), in
/// place: the bench lays `wdata` out again after each run that wrote it.
pub(crate) fn lay_out(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let mut block = vec![0u8; 1 << 20];
    for at in (0..DATA_SIZE).step_by(block.len()) {
        pattern(at, &mut block);
        file.write_all_at(&block, at)?;
    }
    Ok(())
}

/// The laid-out directory; see the module docs.
pub(crate) struct Share {
    dir: PathBuf,
}

impl Share {
    /// Lays the share out under `parent` (or `/dev/shm`, or the temporary directory).
    pub(crate) fn new(parent: Option<&Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let shm = Path::new("/dev/shm");
        let parent = match parent {
            Some(dir) => dir.to_path_buf(),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let dir = parent.join(format!("vhu-fs-bench-{}", std::process::id()));
        let _held = crate::interrupt::laying_out(dir.clone());
        let share = dir.join("share");
        std::fs::create_dir_all(share.join("big"))?;
        for name in ["data", "wdata"] {
            lay_out(&share.join(name))?;
        }
        for i in 0..SMALL_FILES {
            std::fs::write(share.join(small_name(i)), b"bench")?;
        }
        for i in 0..BIG_ENTRIES {
            std::fs::write(share.join("big").join(big_name(i)), b"")?;
        }
        // The guest user creates its files here and writes `wdata`.
        std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o777))?;
        std::fs::set_permissions(share.join("wdata"), std::fs::Permissions::from_mode(0o666))?;
        Ok(Self { dir })
    }

    /// The shared directory.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join("share")
    }

    /// Where a back-end's socket goes.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("vhost.sock")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
