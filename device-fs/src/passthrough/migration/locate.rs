//! Finding inodes again: the path of an inode inside the share (from its `/proc/self/fd` link,
//! or by walking the share), opening a path inside the share component by component, and host
//! file handles (`name_to_handle_at` / `open_by_handle_at`).
//!
//! Every path opened here is resolved one validated component at a time with
//! `O_PATH | O_NOFOLLOW` from the share's root, so no path — whatever a migration stream holds —
//! leads outside the share or through a symlink. This module decides nothing about what to do
//! when an inode cannot be found.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use rustix::fs::{openat, readlinkat, Mode, OFlags, RawDir};
use rustix::io::Errno;

use super::super::attr::{self, InodeKey};
use super::super::names;
use super::format::{FileHandle, HANDLE_MAX};

/// Entries one search of the share looks at before giving up.
const SEARCH_LIMIT: usize = 1 << 20;

/// Looks the searches of one save, or of one restore, take in all (an entry read, or a component
/// of a directory's path reopened): sixteen walks of a share of a million entries (a
/// destination searches for each file opened by a handle its cache never saw the path of, so a
/// legitimate restore may search many times), while a guest that makes many inodes hard to find
/// (hard links whose first name it removed) cannot keep the paused guest waiting for one walk
/// each without end.
const SEARCH_TOTAL: usize = 16 * SEARCH_LIMIT;

/// Bytes of directory paths one search holds in its queue at most: the walk is breadth first,
/// and a guest can make a level of the share hold many directories of long paths (a million at
/// 4 KiB each, or fewer below a deep chain, where a destination takes paths of any length).
const QUEUED_BYTES: usize = 64 << 20;

/// What is left of one save's or one restore's [`SEARCH_TOTAL`], and how many bytes of paths
/// one of its searches may queue ([`QUEUED_BYTES`]).
#[derive(Debug)]
pub(super) struct SearchBudget(std::cell::Cell<usize>, usize);

impl SearchBudget {
    pub(super) fn new() -> Self {
        Self(std::cell::Cell::new(SEARCH_TOTAL), QUEUED_BYTES)
    }

    /// Takes one entry's look; `false` once the budget is spent.
    fn take(&self) -> bool {
        self.take_n(1)
    }

    /// Takes `n` looks (a directory reopened component by component costs one a component);
    /// `false` once the budget is spent.
    fn take_n(&self, n: usize) -> bool {
        let left = self.0.get();
        self.0.set(left.saturating_sub(n));
        left >= n
    }
}

/// What a `/proc/self/fd` link says when its file was unlinked.
const DELETED: &[u8] = b" (deleted)";

/// The target of `fd`'s link in `proc_fd` (`/proc/self/fd`).
pub(super) fn link_of(proc_fd: impl AsFd, fd: &impl AsRawFd) -> Result<Vec<u8>, Errno> {
    let target = readlinkat(proc_fd, fd.as_raw_fd().to_string(), Vec::new())?;
    Ok(target.into_bytes())
}

/// `target` relative to the share whose root's link is `root`, if it lies inside it and was not
/// unlinked. The root itself is the empty path.
pub(super) fn relative(root: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    if target.ends_with(DELETED) {
        return None;
    }
    let rest = if root == b"/" { target.strip_prefix(b"/")? } else { target.strip_prefix(root)? };
    let rest = match rest {
        [] => rest,
        [b'/', rest @ ..] if root != b"/" => rest,
        _ if root == b"/" => rest,
        _ => return None,
    };
    Some(rest.to_vec())
}

/// Whether `fd` names an inode the share reaches: the path its `/proc/self/fd` link shows
/// (`proc_fd`) is taken relative to the share's (`root_link`) and opened again from `root`, and
/// must name the same inode. The link alone proves nothing: once the daemon has pivoted or
/// chrooted into the share, its root is `/`, and the kernel shows an inode outside that root
/// with a plain absolute path.
pub(super) fn in_share(proc_fd: impl AsFd, root: &OwnedFd, root_link: &[u8], fd: &OwnedFd) -> bool {
    let again = link_of(proc_fd, fd)
        .ok()
        .and_then(|link| relative(root_link, &link))
        .and_then(|path| open_in_share(root, &path).ok());
    let key = |fd: &OwnedFd| attr::stat_fd(fd).ok().map(|st| st.key);
    again.is_some_and(|again| key(&again).is_some() && key(&again) == key(fd))
}

/// Opens `path` (relative to the share) from `root` as `O_PATH`, one component at a time,
/// never following a symlink and refusing `.`, `..` and empty components.
pub(super) fn open_in_share(root: &OwnedFd, path: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current = openat(root, c".", flags | OFlags::DIRECTORY, Mode::empty())?;
    if path.is_empty() {
        return Ok(current);
    }
    for component in path.split(|b| *b == b'/') {
        let name = CString::new(component).map_err(|_| Errno::INVAL)?;
        names::validate(&name)?;
        current = openat(&current, &name, flags, Mode::empty())?;
    }
    Ok(current)
}

/// The host file handle of the inode `fd` (an `O_PATH` fd) names, if its file system has them.
pub(super) fn file_handle(fd: &impl AsRawFd) -> Option<FileHandle> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, aligned for both.
    let mut buf = [0u32; 2 + HANDLE_MAX / 4];
    buf[0] = HANDLE_MAX as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a file_handle with room for HANDLE_MAX bytes, as its first field says;
    // the path is an empty C string and `mount_id` a valid int: the kernel writes only there.
    let rc = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    let len = buf[0] as usize;
    if rc != 0 || len > HANDLE_MAX {
        return None;
    }
    let bytes: Vec<u8> = buf[2..].iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
    Some(FileHandle { kind: buf[1] as i32, bytes })
}

/// Opens `handle` as `O_PATH` on the file system of the directory `mount` (an `O_PATH` fd;
/// needs CAP_DAC_READ_SEARCH).
pub(super) fn open_by_handle(mount: &OwnedFd, handle: &FileHandle) -> Result<OwnedFd, Errno> {
    if handle.bytes.len() > HANDLE_MAX {
        return Err(Errno::INVAL);
    }
    let mut buf = [0u32; 2 + HANDLE_MAX / 4];
    buf[0] = handle.bytes.len() as u32;
    buf[1] = handle.kind as u32;
    for (i, chunk) in handle.bytes.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        buf[2 + i] = u32::from_ne_bytes(word);
    }
    // The mount is named by a real (not O_PATH) descriptor of the share's root.
    let mount =
        openat(mount, c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `buf` is a complete file_handle (its length at most HANDLE_MAX, checked above);
    // the kernel only reads it. A non-negative result is a new descriptor this process owns.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            flags,
        )
    };
    if fd < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO),
        ));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is the inode a record describes: same inode number and kind, on a device
/// `device_fits` accepts, and the same file handle when `handle` is given (which also tells a
/// reused inode number apart).
pub(super) fn is_same(
    fd: &OwnedFd,
    ino: u64,
    kind: u32,
    handle: Option<&FileHandle>,
    device_fits: impl Fn(u64) -> bool,
) -> bool {
    let Ok(st) = attr::stat_fd(fd) else { return false };
    if st.key.1 != ino || st.attr.mode & super::super::inodes::S_IFMT != kind {
        return false;
    }
    if !device_fits(st.key.0) {
        return false;
    }
    handle.is_none_or(|want| file_handle(fd).as_ref() == Some(want))
}

/// Walks the share breadth first for an inode that `wanted` accepts (given its inode number
/// from the directory entry and an `O_PATH` fd of it), looking at no more than
/// [`SEARCH_LIMIT`] entries, nor more than `budget` has left (each directory reopened costs a
/// look a component of its path), nor holding more than its bytes of paths of directories still
/// to walk ([`QUEUED_BYTES`]). Returns its path and fd. With `max_path` it goes no deeper
/// than paths of that length: a source looks for a path to put in a state, which carries none
/// longer than [`format::PATH_MAX`](super::format::PATH_MAX); a destination wants the file.
pub(super) fn search(
    root: &OwnedFd,
    ino: u64,
    wanted: impl Fn(&OwnedFd) -> bool,
    (budget, max_path): (&SearchBudget, Option<usize>),
) -> Option<(Vec<u8>, OwnedFd)> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut queue: std::collections::VecDeque<Vec<u8>> = [Vec::new()].into();
    let mut queued = 0usize;
    let mut seen = 0usize;
    let mut scratch = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
    while let Some(dir_path) = queue.pop_front() {
        queued -= dir_path.len();
        let components = if dir_path.is_empty() {
            0
        } else {
            1 + dir_path.iter().filter(|b| **b == b'/').count()
        };
        if !budget.take_n(components) {
            return None;
        }
        let Ok(dir) = open_in_share(root, &dir_path).and_then(|d| {
            openat(&d, c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        }) else {
            continue;
        };
        let mut entries = RawDir::new(&dir, &mut scratch);
        while let Some(Ok(entry)) = entries.next() {
            seen += 1;
            if seen > SEARCH_LIMIT || !budget.take() {
                return None;
            }
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let is_dir = entry.file_type() == rustix::fs::FileType::Directory;
            if !is_dir && entry.ino() != ino {
                continue;
            }
            let mut path = Vec::with_capacity(dir_path.len() + 1 + name.to_bytes().len());
            path.extend_from_slice(&dir_path);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if entry.ino() == ino {
                if let Ok(fd) = openat(&dir, name, flags, Mode::empty()) {
                    if wanted(&fd) {
                        return Some((path, fd));
                    }
                }
            }
            // A directory whose own path is as long as wanted holds no entry one can be.
            if is_dir && max_path.is_none_or(|max| path.len() < max) {
                queued += path.len();
                if queued > budget.1 {
                    log::warn!("migration: a search of the share gave up: too many long paths");
                    return None;
                }
                queue.push_back(path);
            }
        }
    }
    None
}

/// The host identity of an `O_PATH` fd, its kind and mount.
pub(super) fn identify(fd: &OwnedFd) -> Result<(InodeKey, u32, u64), Errno> {
    let st = attr::stat_fd(fd)?;
    Ok((st.key, st.attr.mode & super::super::inodes::S_IFMT, st.mnt_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One budget bounds every search of a save or restore together: once a search for a
    /// file that is not there spent it, the next finds nothing, even a file that is there.
    #[test]
    fn searches_share_one_budget() {
        let base = std::env::temp_dir().join(format!("vhu-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("d")).expect("share");
        for i in 0..8 {
            std::fs::write(base.join(format!("d/f{i}")), b"").expect("file");
        }
        let root = openat(rustix::fs::CWD, &base, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .expect("root");
        let ino = |p: &str| attr::stat_at(&root, &CString::new(p).expect("name")).expect("stat");
        let ino = ino("d").key.1;
        let look = |budget: &SearchBudget, ino| search(&root, ino, |_| true, (budget, None));
        let plenty = SearchBudget::new();
        assert!(look(&plenty, ino).is_some_and(|(path, _)| path == b"d"));
        // "." and "..", "d"; then d reopened (one component), its ".", "..", 8 files: 13
        // entries and one component for the whole share.
        let small = SearchBudget(std::cell::Cell::new(14), QUEUED_BYTES);
        assert!(look(&small, u64::MAX).is_none(), "no such inode");
        assert_eq!(small.0.get(), 0, "the walk looked at every entry");
        assert!(look(&small, ino).is_none(), "the budget is spent");
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A directory reopened from the share's root costs a look for each component of its
    /// path: a chain of directories costs what walking it opens, not one look an entry.
    #[test]
    fn reopening_a_deep_directory_costs_each_component() {
        let base = std::env::temp_dir().join(format!("vhu-search-deep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let deep: std::path::PathBuf = (0..20).map(|_| "d").collect();
        std::fs::create_dir_all(base.join(&deep)).expect("chain");
        let root = openat(rustix::fs::CWD, &base, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .expect("root");
        let deepest =
            attr::stat_at(&root, &CString::new(deep.to_str().expect("utf-8")).expect("path"))
                .expect("stat")
                .key
                .1;
        let look = |budget: u64| {
            let budget = SearchBudget(std::cell::Cell::new(budget as usize), QUEUED_BYTES);
            search(&root, deepest, |_| true, (&budget, None)).map(|(path, _)| path.len())
        };
        // The deepest directory is an entry of the 19th: the walk lists the root and 18
        // directories whole (3 entries each: ".", ".." and the next), reopening them at
        // 1 + 2 + ... + 18 components, then reopens the 19th (19 more) and finds it among its
        // 3 entries.
        let before_the_19th = 19 * 3 + (1..=19).sum::<u64>();
        assert_eq!(look(before_the_19th + 3), Some(deep.as_os_str().len()), "found");
        assert_eq!(look(before_the_19th), None, "the reopening costs what it opens");
        // A source, which wants a path a state can carry, goes no deeper than that.
        let budget = SearchBudget::new();
        let capped = search(&root, deepest, |_| true, (&budget, Some(deep.as_os_str().len() - 2)));
        assert!(capped.is_none(), "found below the path length asked for");
        // The chain's directories wait in the queue one at a time, the longest the 19th's
        // path of 37 bytes (the 20th is found, not queued): a search allowed fewer bytes of
        // paths waiting gives up.
        let queued = |most| {
            let budget = SearchBudget(std::cell::Cell::new(SEARCH_TOTAL), most);
            search(&root, deepest, |_| true, (&budget, None)).is_some()
        };
        assert!(queued(37) && !queued(36), "a path of 37 bytes waits in the queue");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn paths_inside_the_share_only() {
        assert_eq!(relative(b"/srv/share", b"/srv/share/a/b"), Some(b"a/b".to_vec()));
        assert_eq!(relative(b"/srv/share", b"/srv/share"), Some(Vec::new()));
        assert_eq!(relative(b"/srv/share", b"/srv/shared/x"), None);
        assert_eq!(relative(b"/srv/share", b"/etc/passwd"), None);
        assert_eq!(relative(b"/srv/share", b"/srv/share/gone (deleted)"), None);
        assert_eq!(relative(b"/", b"/a/b"), Some(b"a/b".to_vec()));
        assert_eq!(relative(b"/", b"/"), Some(Vec::new()));
    }

    #[test]
    fn an_inode_outside_the_share_is_not_in_it_even_when_the_root_shows_as_slash() {
        let base = std::env::temp_dir().join(format!("vhu-in-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("share/sub")).expect("share");
        std::fs::create_dir_all(base.join("outside")).expect("outside");
        std::fs::write(base.join("share/sub/f"), b"").expect("file");
        std::fs::write(base.join("outside/secret"), b"").expect("file");
        let open = |p: &str| {
            openat(rustix::fs::CWD, base.join(p), OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .expect("open")
        };
        let proc_fd =
            openat(rustix::fs::CWD, "/proc/self/fd", OFlags::PATH, Mode::empty()).expect("proc");
        let root = open("share");
        let root_link = link_of(&proc_fd, &root).expect("root link");
        let (inner, outer) = (open("share/sub/f"), open("outside/secret"));
        assert!(in_share(&proc_fd, &root, &root_link, &inner));
        assert!(!in_share(&proc_fd, &root, &root_link, &outer));
        // A sandboxed daemon's share root reads as "/": the outside file's link then looks
        // like a path of the share, and only opening it again from the root tells them apart.
        assert!(relative(b"/", &link_of(&proc_fd, &outer).expect("link")).is_some());
        assert!(!in_share(&proc_fd, &root, b"/", &outer));
        let _ = std::fs::remove_dir_all(&base);
    }
}
