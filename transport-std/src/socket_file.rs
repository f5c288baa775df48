//! The socket file a daemon creates: bound so that only its user may connect, with a locked
//! `<path>.pid` next to it, and removed when the daemon ends.
//!
//! Any local user who can connect acts as the VMM, with the device's rights, so the socket is
//! created mode 0600 whatever the process umask (a launcher widens it to a group afterwards if
//! it wants to). A live daemon holds an exclusive lock on `<path>.pid` (virtiofsd's convention,
//! with its pid inside): when that lock is taken the socket is in use and left alone; when it is
//! free, a socket at `path` was left by a daemon that died and is replaced. Anything at `path`
//! that is not a socket is never removed.
//!
//! Removal goes through a descriptor of the socket's directory, so it still works after the
//! process changed its root (a sandbox), and a forked process that must not remove the files
//! gives them up with [`SocketFile::release`]. This module binds and removes; it serves nothing.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::process::Gid;

/// A bound socket path and its locked pid file; both are removed on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    /// Held for the daemon's life: the lock says the socket is served.
    lock: OwnedFd,
    /// The bound socket's (device, inode): what [`SocketFile::remove`] may remove.
    socket: Option<(u64, u64)>,
    removed: AtomicBool,
}

/// Longest socket path `sockaddr_un` holds (108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The socket's name inside its binding directory.
const BOUND: &str = "s";

/// How many names a binding directory tries before giving up (each one taken meanwhile).
const BINDING_ATTEMPTS: usize = 16;

/// Binds and listens on a socket that appears at `name` in `dir` (`path`'s directory) only once
/// it accepts connections and has its mode: it is bound in a directory of its own next to
/// `path`, mode 0700, given mode 0600 (0660 and the group with a `group`) there, and renamed
/// over `path` (replacing a stale socket in the same step), so a launcher that connects as soon
/// as the file exists is never refused, and no other user ever reaches it open. The process
/// umask is neither read nor changed (threads binding at once cannot widen each other's mode).
fn bind_listening(
    dir: &OwnedFd,
    parent: &Path,
    name: &std::ffi::OsStr,
    group: Option<Gid>,
) -> std::io::Result<UnixListener> {
    remove_stale_bindings(dir, name);
    let (binding_name, binding) = binding_dir(dir, name)?;
    let bound = bind_inside(&binding, parent.join(&binding_name), dir, name, group);
    // Whatever is left (all of it when binding failed) goes with the directory.
    let _ = rustix::fs::unlinkat(&binding, BOUND, AtFlags::empty());
    let _ = rustix::fs::unlinkat(dir, &binding_name, AtFlags::REMOVEDIR);
    bound
}

/// A new directory `.<name>.<pid>.<n>.binding` in `dir`, mode 0700, and its descriptor.
fn binding_dir(dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<(OsString, OwnedFd)> {
    static BINDINGS: AtomicUsize = AtomicUsize::new(0);
    for _ in 0..BINDING_ATTEMPTS {
        let mut binding = OsString::from(".");
        binding.push(name);
        let n = BINDINGS.fetch_add(1, Ordering::Relaxed);
        binding.push(format!(".{}.{n}.binding", std::process::id()));
        // mkdir never follows a symlink at its last component: a name someone else took
        // fails, and the next one is tried.
        match rustix::fs::mkdirat(dir, &binding, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => continue,
            Err(error) => return Err(error.into()),
        }
        let fd = match open_private_dir(dir, &binding) {
            Ok(Some(fd)) => fd,
            // Whoever may write to `dir` (without the sticky bit) put a directory of theirs in
            // its place between the two calls, or the file system shows another owner than
            // this user (one that maps owners, as NFS with root squashing does). Removing it
            // removes only an empty directory, which whoever could swap it could remove too.
            Ok(None) => {
                let _ = rustix::fs::unlinkat(dir, &binding, AtFlags::REMOVEDIR);
                let what = "the directory made to bind the socket in is not this user's \
                            private one (replaced by another user's, or a file system that \
                            shows other owners)";
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, what));
            }
            Err(error) => {
                let _ = rustix::fs::unlinkat(dir, &binding, AtFlags::REMOVEDIR);
                return Err(error.into());
            }
        };
        // The umask can only have taken bits away, the owner's too (then binding fails for
        // want of them): they are given back where /proc is there.
        let entry = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let _ = rustix::fs::chmod(entry, Mode::from_raw_mode(0o700));
        return Ok((binding, fd));
    }
    Err(rustix::io::Errno::EXIST.into())
}

/// `name` in `dir` opened as a directory (never through a symlink), if it is this user's own
/// and nobody else may enter it; `None` if it is not.
fn open_private_dir(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<Option<OwnedFd>> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    let ours = stat.st_uid == rustix::process::geteuid().as_raw() && stat.st_mode & 0o077 == 0;
    Ok(ours.then_some(fd))
}

/// Whether `name` in `dir` is a socket of this user's (not following a symlink).
fn is_own_socket(dir: &OwnedFd, name: &str) -> rustix::io::Result<bool> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let socket = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_socket();
    Ok(socket && stat.st_uid == rustix::process::geteuid().as_raw())
}

/// Removes what binding left next to `name` in `dir` when a process ended in the middle of it:
/// this user's `.<name>.<pid>.<n>.binding` directories and the socket in them. Called with the
/// pid file locked, when no live daemon binds `name`.
fn remove_stale_bindings(dir: &OwnedFd, name: &std::ffi::OsStr) {
    use std::os::unix::ffi::OsStrExt;
    let listing = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(listed) = rustix::fs::openat(dir, ".", listing, Mode::empty()) else { return };
    let Ok(entries) = rustix::fs::Dir::read_from(&listed) else { return };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.push(b'.');
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_bytes();
        let Some(middle) = entry_name
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(b".binding"))
        else {
            continue;
        };
        let mut numbers = middle.split(|b| *b == b'.');
        let number = |part: Option<&[u8]>| {
            part.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        };
        if !(number(numbers.next()) && number(numbers.next()) && numbers.next().is_none()) {
            continue;
        }
        let stale = std::ffi::OsStr::from_bytes(entry_name);
        if let Ok(Some(binding)) = open_private_dir(dir, stale) {
            // Only a socket of this user's: the directory could be another of ours renamed.
            if is_own_socket(&binding, BOUND).unwrap_or(false) {
                let _ = rustix::fs::unlinkat(&binding, BOUND, AtFlags::empty());
            }
            let _ = rustix::fs::unlinkat(dir, stale, AtFlags::REMOVEDIR);
        }
    }
}

/// Binds in `binding` (at `binding_path`), sets the socket's mode and group, and renames it to
/// `name` in `dir`.
fn bind_inside(
    binding: &OwnedFd,
    binding_path: PathBuf,
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    group: Option<Gid>,
) -> std::io::Result<UnixListener> {
    // Through the directory's descriptor where /proc is there: whoever can write to the parent
    // cannot swap the directory under the name, and the address stays short.
    let through_fd = PathBuf::from(format!("/proc/self/fd/{}/{BOUND}", binding.as_raw_fd()));
    let listener = match UnixListener::bind(&through_fd) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            UnixListener::bind(binding_path.join(BOUND))?
        }
        bound => bound?,
    };
    // What was bound is a socket of this user's in the private directory (bound by path, the
    // directory might have been someone else's by then).
    if !is_own_socket(binding, BOUND)? {
        let what = "the socket bound is not in the binding directory";
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, what));
    }
    let mode = match group {
        Some(gid) => {
            rustix::fs::chownat(binding, BOUND, None, Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
            0o660
        }
        None => 0o600,
    };
    // The directory is this process's alone: the name is the socket just bound.
    rustix::fs::chmodat(binding, BOUND, Mode::from_raw_mode(mode), AtFlags::empty())?;
    rustix::fs::renameat(binding, BOUND, dir, name)?;
    Ok(listener)
}

/// `<path>.pid`.
pub(crate) fn pid_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// How often a pid file removed or replaced between its opening and its locking is opened
/// again before giving up (each time another daemon ended or started meanwhile).
const PID_FILE_ATTEMPTS: usize = 8;

/// Opens and locks `pid_name` in `dir`: the lock of the file the name holds once it is locked.
/// A daemon that ends removes its pid file while still holding the lock, so a lock taken on a
/// file that no longer has the name says nothing about the socket: the name is opened again.
fn lock_pid_file(dir: &OwnedFd, pid_name: &std::ffi::OsStr) -> std::io::Result<OwnedFd> {
    use std::io::{Error, ErrorKind};
    // Never through a symlink: the daemon often runs as root, and whoever can write to the
    // directory must not make it truncate another file.
    let flags = OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    for _ in 0..PID_FILE_ATTEMPTS {
        let lock = rustix::fs::openat(dir, pid_name, flags, Mode::from_raw_mode(0o600))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(Error::from(ErrorKind::AddrInUse)),
            Err(e) => return Err(e.into()),
        }
        if names(dir, pid_name, &lock)? {
            // Not a hard link to another file, nor another user's: it is about to be
            // truncated (NOFOLLOW only keeps symlinks out).
            let st = rustix::fs::fstat(&lock)?;
            let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
            if !regular || st.st_nlink != 1 || st.st_uid != rustix::process::geteuid().as_raw() {
                let what = "its pid file is not a file of this user's own (a hard link, or \
                            another user's file); it is left alone";
                return Err(Error::new(ErrorKind::PermissionDenied, what));
            }
            return Ok(lock);
        }
    }
    let what = "its pid file keeps being removed or replaced by other daemons starting or ending";
    Err(Error::new(ErrorKind::ResourceBusy, what))
}

/// Whether `name` in `dir` is the file `fd` is open on.
fn names(dir: &OwnedFd, name: &std::ffi::OsStr, fd: &OwnedFd) -> std::io::Result<bool> {
    let open = rustix::fs::fstat(fd)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(at) => Ok(at.st_dev == open.st_dev && at.st_ino == open.st_ino),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl SocketFile {
    /// Binds `path` owner-only, taking over a stale socket; see the module docs. An error of
    /// kind `AddrInUse` means a live daemon serves it; `AlreadyExists`, that something other
    /// than a socket is there.
    pub fn bind(path: &Path) -> std::io::Result<(UnixListener, Self)> {
        Self::bind_for(path, None)
    }

    /// [`SocketFile::bind`], the socket then also read-write for `group` (and given to it)
    /// before it appears at `path`, so a front-end of that group never meets it closed.
    pub fn bind_for(path: &Path, group: Option<Gid>) -> std::io::Result<(UnixListener, Self)> {
        use std::io::{Error, ErrorKind};
        let name = path
            .file_name()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "names no file for the socket"))?
            .to_owned();
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            let what = format!("longer than the {MAX_SOCKET_PATH} bytes a socket address holds");
            return Err(Error::new(ErrorKind::InvalidInput, what));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut pid_name = name.clone();
        pid_name.push(".pid");
        let lock = lock_pid_file(&dir, &pid_name)?;
        let listener = match Self::claim(&lock, &dir, parent, &name, path, group) {
            Ok(listener) => listener,
            Err(error) => {
                // The lock is this process's: no live daemon uses the pid file, so it goes with
                // the failed attempt instead of staying next to a socket nobody serves. Whatever
                // is at `path` stays.
                let _ = rustix::fs::unlinkat(&dir, &pid_name, AtFlags::empty());
                return Err(error);
            }
        };
        let socket = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        let removed = AtomicBool::new(false);
        let file = Self { path: path.to_owned(), dir, name, lock, socket, removed };
        Ok((listener, file))
    }

    /// With the pid file locked: writes the pid into it and binds the socket.
    fn claim(
        lock: &OwnedFd,
        dir: &OwnedFd,
        parent: &Path,
        name: &std::ffi::OsStr,
        path: &Path,
        group: Option<Gid>,
    ) -> std::io::Result<UnixListener> {
        use std::io::{Error, ErrorKind};
        rustix::fs::ftruncate(lock, 0)?;
        rustix::io::write(lock, format!("{}\n", std::process::id()).as_bytes())?;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                let what = "something other than a socket is there; it is left alone";
                return Err(Error::new(ErrorKind::AlreadyExists, what));
            }
        }
        bind_listening(dir, parent, name, group)
    }

    /// The socket path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked pid file (`<path>.pid`).
    pub fn pid_file(&self) -> PathBuf {
        pid_path(&self.path)
    }

    /// Removes the socket and then the pid file (still locked, so no other daemon takes the
    /// name in between), each only while its name still holds this daemon's file: one whose
    /// pid file was removed behind its back may have seen another daemon take the name.
    /// Idempotent; failures are ignored (the files may be gone already).
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut pid = self.name.clone();
        pid.push(".pid");
        let socket =
            rustix::fs::statat(&self.dir, self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| (st.st_dev, st.st_ino));
        if socket.ok() == self.socket {
            let _ = rustix::fs::unlinkat(&self.dir, self.name.as_os_str(), AtFlags::empty());
        }
        if names(&self.dir, &pid, &self.lock).unwrap_or(false) {
            let _ = rustix::fs::unlinkat(&self.dir, pid.as_os_str(), AtFlags::empty());
        }
    }

    /// Closes this copy's descriptors without removing anything: for a process forked from the
    /// one that owns the files.
    pub fn release(self) {
        self.removed.store(true, Ordering::Release);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new, empty directory of the temporary directory's for this process and `tag`.
    fn scratch(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).expect("directory");
        root
    }

    fn dir(path: &Path) -> OwnedFd {
        rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .expect("directory")
    }

    /// A pid file is trusted only while its name holds it: once removed, or replaced by
    /// another file, a lock on it says nothing.
    #[test]
    fn a_pid_file_counts_only_under_its_name() {
        let root = scratch("vhu-pidfile");
        let dir = dir(&root);
        let name = std::ffi::OsStr::new("s.pid");
        let locked = lock_pid_file(&dir, name).expect("locked");
        assert!(names(&dir, name, &locked).expect("stat"));
        // A second daemon finds it locked.
        let busy = lock_pid_file(&dir, name).expect_err("busy");
        assert_eq!(busy.kind(), std::io::ErrorKind::AddrInUse);
        // Removed (its daemon ended): the descriptor no longer names it.
        std::fs::remove_file(root.join("s.pid")).expect("remove");
        assert!(!names(&dir, name, &locked).expect("stat"));
        // Another file under the name: neither.
        std::fs::write(root.join("s.pid"), b"").expect("a new file");
        assert!(!names(&dir, name, &locked).expect("stat"));
        // The new file is locked as the name's own.
        let again = lock_pid_file(&dir, name).expect("the new file");
        assert!(names(&dir, name, &again).expect("stat"));
        drop((locked, again));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A pid file that is a hard link to another file is neither truncated nor written: whoever
    /// may write to the socket's directory must not make a daemon running as root empty a file
    /// of theirs choosing (NOFOLLOW keeps only symlinks out).
    #[test]
    fn a_hard_linked_pid_file_is_left_alone() {
        let root = scratch("vhu-pidlink");
        std::fs::write(root.join("precious"), b"keep me").expect("file");
        std::fs::hard_link(root.join("precious"), root.join("s.pid")).expect("link");
        let refused = SocketFile::bind(&root.join("s")).expect_err("refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied, "{refused}");
        assert_eq!(std::fs::read(root.join("precious")).expect("read"), b"keep me");
        assert!(root.join("s.pid").exists() && !root.join("s").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A daemon removes only its own files: when its pid file was removed behind its back and
    /// another daemon took the name, ending leaves the other's socket and pid file in place.
    #[test]
    fn a_daemon_removes_only_its_own_socket_and_pid_file() {
        let root = scratch("vhu-ownfiles");
        let path = root.join("s");
        let (_first_listener, first) = SocketFile::bind(&path).expect("first binds");
        std::fs::remove_file(root.join("s.pid")).expect("pid file removed");
        std::fs::rename(&path, root.join("moved")).expect("socket moved away");
        let (_listener, second) = SocketFile::bind(&path).expect("second binds");
        first.remove();
        assert!(path.exists() && root.join("s.pid").exists(), "the second's files stay");
        second.remove();
        assert!(!path.exists() && !root.join("s.pid").exists(), "and go with it");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Only a directory of this user's that nobody else may enter is bound in: one someone put
    /// in the place of the one just made (a parent others may write to) is refused, as is a
    /// symlink to one.
    #[test]
    fn only_a_private_directory_of_ours_is_bound_in() {
        use std::os::unix::fs::PermissionsExt;
        let root = scratch("vhu-private");
        let parent = dir(&root);
        let open = |name: &str| open_private_dir(&parent, std::ffi::OsStr::new(name));
        std::fs::create_dir(root.join("private")).expect("dir");
        std::fs::set_permissions(root.join("private"), PermissionsExt::from_mode(0o700))
            .expect("chmod");
        assert!(open("private").expect("opens").is_some());
        std::fs::create_dir(root.join("open")).expect("dir");
        std::fs::set_permissions(root.join("open"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
        assert!(open("open").expect("opens").is_none(), "others may enter");
        std::os::unix::fs::symlink("private", root.join("link")).expect("symlink");
        assert!(open("link").is_err(), "never through a symlink");
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir(root.join("theirs")).expect("dir");
            std::fs::set_permissions(root.join("theirs"), PermissionsExt::from_mode(0o700))
                .expect("chmod");
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::fs::chown(root.join("theirs"), Some(nobody), None).expect("chown");
            assert!(open("theirs").expect("opens").is_none(), "another user's");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    /// What a process that ended while binding left (its binding directory and the socket in
    /// it) goes with the next bind of that name; names of another pattern stay.
    #[test]
    fn a_bind_removes_what_an_ended_bind_left() {
        let root = scratch("vhu-stale");
        let stale = root.join(".vm.sock.4242.7.binding");
        std::fs::create_dir(&stale).expect("dir");
        drop(UnixListener::bind(stale.join(BOUND)).expect("a socket left in it"));
        std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
        // Private directories of ours whose names another pattern or socket gave them, and
        // one of the pattern holding something that is not a socket.
        let private = |name: &str| {
            let path = root.join(name);
            std::fs::create_dir(&path).expect("dir");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("chmod");
            path
        };
        let others = [private(".vm.sock.x.7.binding"), private(".vm.sock.x.1.2.binding")];
        let kept = private(".vm.sock.1.2.binding");
        std::fs::write(kept.join(BOUND), b"not a socket").expect("a file");
        // A socket of another user's in one (root can make one to see it stay).
        let theirs = private(".vm.sock.3.4.binding");
        if rustix::process::geteuid().is_root() {
            drop(UnixListener::bind(theirs.join(BOUND)).expect("a socket"));
            let nobody = rustix::process::Uid::from_raw(65534);
            let at = rustix::fs::CWD;
            rustix::fs::chownat(at, theirs.join(BOUND), Some(nobody), None, AtFlags::empty())
                .expect("chown");
        }
        let (_listener, file) = SocketFile::bind(&root.join("vm.sock")).expect("binds");
        assert!(!stale.exists(), "the ended bind's directory is gone");
        assert!(others.iter().all(|o| o.exists()), "other patterns' are left");
        assert!(kept.join(BOUND).exists(), "only a socket is removed");
        if rustix::process::geteuid().is_root() {
            assert!(theirs.join(BOUND).exists(), "only a socket of this user's");
        }
        drop(file);
        let _ = std::fs::remove_dir_all(&root);
    }
}
