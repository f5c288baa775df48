//! The floor: the same workloads as system calls made directly on the shared directory, one
//! after another on one thread per request queue (as a back-end serves a queue: more threads
//! would add the scheduler's and the file's lock's costs to the floor), each FUSE request's
//! equivalent counted as one request — `pread` for READ, `pwrite` for WRITE, `statx` for LOOKUP
//! and for GETATTR, `openat`/`close`/`unlinkat` for CREATE, RELEASE and UNLINK (and a cycle
//! counts five, as the guest's does with its FORGET), `getdents64` plus a `statx` per entry for
//! READDIRPLUS, counted as the 4 KiB READDIRPLUS replies those entries would fill. The CPU is
//! the lanes' own, each thread's to the nanosecond. What a back-end adds on top of these is its cost. A lane writes the same
//! bytes the guest driver does, laid in its buffer once.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use rustix::fs::{openat, statx, AtFlags, Mode, OFlags, StatxFlags, CWD};

use crate::guest::Plan;
use crate::measure::{thread_cpu, Figures};
use crate::share::{small_name, BIG_ENTRIES, DATA_SIZE, SMALL_FILES};
use crate::workload::{pattern, Workload};
use crate::written::Written;

/// A READDIRPLUS reply's room (what the guest driver asks for, as Linux does: a page).
const READDIR_REPLY: usize = 4096;
/// A READDIRPLUS entry before its name: `fuse_entry_out` (128 bytes) and `fuse_dirent` (24).
const DIRENTPLUS: usize = 152;

/// The files a run uses.
struct Files {
    root: OwnedFd,
    data: OwnedFd,
    wdata: OwnedFd,
    big: OwnedFd,
}

fn io(what: &'static str) -> impl Fn(rustix::io::Errno) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs `plan` on `share` directly.
pub(crate) fn run(share: &Path, plan: &Plan, written: &Written) -> Result<Figures, String> {
    let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = openat(CWD, share, dir, Mode::empty()).map_err(io("opening the share"))?;
    let file = |name: &str, flags: OFlags| {
        openat(&root, name, flags | OFlags::CLOEXEC, Mode::empty()).map_err(io("opening a file"))
    };
    let files = Arc::new(Files {
        data: file("data", OFlags::RDONLY)?,
        wdata: file("wdata", OFlags::RDWR)?,
        big: file("big", dir)?,
        root,
    });
    let lanes = u32::from(plan.queues);
    let per_lane = plan.requests.div_ceil(u64::from(lanes)).max(1);
    let start = Arc::new(Barrier::new(lanes as usize + 1));
    let threads: Vec<_> = (0..lanes)
        .map(|id| {
            let (files, start, workload) = (Arc::clone(&files), Arc::clone(&start), plan.workload);
            let written = written.clone();
            std::thread::spawn(move || {
                start.wait();
                lane(workload, &files, id, per_lane, &written)
            })
        })
        .collect();
    // Taken before the lanes may start: they wait for this thread at the barrier.
    let begun = Instant::now();
    start.wait();
    let mut figures = Figures::default();
    for thread in threads {
        let lane = thread.join().map_err(|_| "a lane's thread panicked".to_string())??;
        figures.requests += lane.requests;
        figures.bytes += lane.bytes;
        figures.latencies.extend(lane.latencies);
        figures.cpu += lane.cpu;
    }
    figures.elapsed = begun.elapsed();
    Ok(figures)
}

/// One lane: `target` requests' worth of system calls.
fn lane(
    workload: Workload,
    files: &Files,
    id: u32,
    target: u64,
    written: &Written,
) -> Result<Figures, String> {
    let mut figures =
        Figures { latencies: Vec::with_capacity(target as usize), ..Figures::default() };
    let cpu_before = thread_cpu();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (u64::from(id) + 1).wrapping_mul(0x1000_0001);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let size = workload.request_size(1 << 20) as usize;
    let mut buf = vec![0u8; size.max(4096)];
    pattern(0, &mut buf);
    let mut cursor = (u64::from(id) * 7919 % (DATA_SIZE / size.max(1) as u64)) * size as u64;
    let mut serial = 0u64;
    let record = |figures: &mut Figures, began: Instant, bytes: usize| {
        figures.latencies.push(crate::measure::nanos(began.elapsed()));
        figures.requests += 1;
        figures.bytes += bytes as u64;
    };
    let random = matches!(workload, Workload::RandRead4k | Workload::RandWrite4k);
    let offset = |cursor: &mut u64, next: &mut dyn FnMut() -> u64| {
        let size = size as u64;
        if random {
            return next() % (DATA_SIZE / size) * size;
        }
        let at = *cursor;
        *cursor = (*cursor + size) % (DATA_SIZE - DATA_SIZE % size);
        at
    };
    while figures.requests < target {
        let began = Instant::now();
        match workload {
            Workload::RandRead4k | Workload::SeqRead128k | Workload::SeqRead1m => {
                let at = offset(&mut cursor, &mut next);
                let got =
                    rustix::io::pread(&files.data, &mut buf[..size], at).map_err(io("pread"))?;
                if got != size {
                    return Err(format!("pread of {size} bytes returned {got}"));
                }
                record(&mut figures, began, size);
            }
            Workload::RandWrite4k | Workload::SeqWrite128k | Workload::SeqWrite1m => {
                let at = offset(&mut cursor, &mut next);
                let wrote =
                    rustix::io::pwrite(&files.wdata, &buf[..size], at).map_err(io("pwrite"))?;
                record(&mut figures, began, size);
                if wrote != size {
                    return Err(format!("pwrite of {size} bytes wrote {wrote}"));
                }
                written.mark(at, size as u32);
            }
            Workload::LookupGetattr => {
                let name = small_name((next() % u64::from(SMALL_FILES)) as u32);
                for _ in 0..2 {
                    let began = Instant::now();
                    statx(&files.root, &*name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)
                        .map_err(io("statx"))?;
                    record(&mut figures, began, 0);
                }
            }
            Workload::CreateWriteUnlink => {
                serial += 1;
                let name = format!("host-{id}-{serial}");
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                let fd = openat(&files.root, &*name, flags, Mode::from_raw_mode(0o644))
                    .map_err(io("openat"))?;
                record(&mut figures, began, 0);
                let began = Instant::now();
                rustix::io::pwrite(&fd, &buf[..4096], 0).map_err(io("pwrite"))?;
                record(&mut figures, began, 4096);
                let began = Instant::now();
                drop(fd);
                record(&mut figures, began, 0);
                let began = Instant::now();
                rustix::fs::unlinkat(&files.root, &*name, AtFlags::empty())
                    .map_err(io("unlinkat"))?;
                record(&mut figures, began, 0);
                // The guest's FORGET of the node: nothing to do on the host.
                figures.requests += 1;
            }
            Workload::Readdirplus => {
                let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let fd = openat(&files.big, ".", dir, Mode::empty()).map_err(io("opendir"))?;
                record(&mut figures, began, 0);
                let (mut seen, mut reply) = (0, 0);
                loop {
                    let began = Instant::now();
                    let names = getdents(&fd, &mut buf[..4096])?;
                    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                        seen += 1;
                        let name = std::ffi::CString::new(name).map_err(|_| "a name with a NUL")?;
                        statx(&fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)
                            .map_err(io("statx"))?;
                        // Where the entry would go in a READDIRPLUS reply: a full one is a
                        // request.
                        let entry = DIRENTPLUS + name.as_bytes().len().next_multiple_of(8);
                        if reply + entry > READDIR_REPLY {
                            figures.requests += 1;
                            reply = 0;
                        }
                        reply += entry;
                    }
                    if names.is_empty() {
                        // The last reply, and the empty one that ends the listing.
                        record(&mut figures, began, 0);
                        figures.requests += u64::from(reply > 0);
                        break;
                    }
                    figures.latencies.push(crate::measure::nanos(began.elapsed()));
                }
                if seen < BIG_ENTRIES {
                    return Err(format!("getdents64 ended after {seen} entries"));
                }
                let began = Instant::now();
                drop(fd);
                record(&mut figures, began, 0);
            }
        }
    }
    figures.cpu = thread_cpu().saturating_sub(cpu_before);
    Ok(figures)
}

/// One `getdents64` into `buf`: the names it returned, each followed by a NUL.
fn getdents(fd: &OwnedFd, buf: &mut [u8]) -> Result<Vec<u8>, String> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the call.
    let got =
        unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    let got = usize::try_from(got)
        .map_err(|_| format!("getdents64: {}", std::io::Error::last_os_error()))?;
    let mut names = Vec::new();
    let mut at = 0;
    // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, then the name.
    while at + 19 < got {
        let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
        if reclen < 20 || at + reclen > got {
            return Err("getdents64 returned a broken record".into());
        }
        let name = &buf[at + 19..at + reclen];
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        names.extend_from_slice(&name[..end]);
        names.push(0);
        at += reclen;
    }
    Ok(names)
}
