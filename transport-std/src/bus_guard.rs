//! What happens when a front-end cuts short a file this process mapped from it.
//!
//! Guest memory, a dirty log and an inflight area are files the front-end shares, mapped here
//! for the connection's life. If the front-end truncates one anyway, the pages past its new end
//! no longer exist and the first access to one raises SIGBUS, whose default action ends the
//! process — and with it every other connection a multi-tenant process serves. So a mapping of
//! a front-end's file registers here ([`guard`]), and a SIGBUS for a page that does not exist
//! (`BUS_ADRERR`) inside a registered mapping is absorbed: that page of the mapping becomes a
//! private zero page, the access that faulted is made again and reads zeros (or writes where the
//! front-end never looks), and the mapping's count of absorbed faults goes up
//! ([`Guarded::faults`]). A ring read as zeros looks empty or fails the queue's checks, as any
//! other bad ring does.
//!
//! Every other SIGBUS — a hardware memory error, a fault outside front-end memory, one sent by
//! `kill` — goes to the disposition the process had before this module installed its handler:
//! that handler if there was one, otherwise the default, which ends the process as it always
//! did. The handler is installed with the first registration and stays; it reads only this
//! module's table and calls only `mmap`, `sigaction` and `raise`, which are async-signal-safe.
//!
//! This module owns the table and the handler. It must not decide what a connection does about
//! an absorbed fault: it counts them per mapping ([`Guarded::faults`]) and logs the count when
//! the mapping's registration ends.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings registered at once, at most, over the whole process: past it [`guard`] refuses
/// ([`GuardsTaken`]), and the mapping is refused too, so that no front-end (one of many a
/// process serves) can have its memory mapped without a guard and then end the process.
pub const SLOTS: usize = 1024;

const FREE: u8 = 0;
const TAKEN: u8 = 1;

/// One registered mapping. `start` is published last and cleared first, so the handler never
/// sees a half-written slot as live (0: no mapping).
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    page: AtomicUsize,
    faults: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            page: AtomicUsize::new(0),
            faults: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// Faults absorbed in this process, over every mapping.
static ABSORBED: AtomicU64 = AtomicU64::new(0);

/// The SIGBUS disposition before this module's handler.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Whether the handler is in place.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Every one of the process's [`SLOTS`] is taken: the caller refuses the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardsTaken;

/// A registered mapping; dropping it ends the registration (drop it once the mapping is gone).
#[derive(Debug)]
pub struct Guarded {
    slot: usize,
}

impl Guarded {
    /// Faults absorbed in this mapping: pages the front-end took away and something touched.
    pub fn faults(&self) -> u64 {
        TABLE[self.slot].faults.load(Ordering::Relaxed)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        let faults = slot.faults.load(Ordering::Relaxed);
        if faults > 0 {
            log::warn!(
                "the front-end cut short a file it shared while it was mapped: pages past its \
                 new end were touched {faults} times and read as zeros instead of ending the \
                 process"
            );
        }
        slot.start.store(0, Ordering::Release);
        slot.state.store(FREE, Ordering::Release);
    }
}

/// Registers the mapping of `len` bytes at `start`, made of pages of `page` bytes (a power of
/// two that `start` is aligned to): a fault for a page of it that no longer exists is absorbed
/// for as long as the returned [`Guarded`] lives. `None` where this process guards nothing
/// (the handler could not be installed) or the mapping is not one it can describe: the mapping
/// then works as any other (a truncation ends the process, as it always did).
pub fn guard(start: *const u8, len: usize, page: usize) -> Result<Option<Guarded>, GuardsTaken> {
    let start = start as usize;
    let sane = start != 0 && len > 0 && page.is_power_of_two() && start % page == 0;
    if !sane || !installed() {
        return Ok(None);
    }
    let free = TABLE.iter().position(|slot| {
        slot.state.compare_exchange(FREE, TAKEN, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    });
    let Some(index) = free else {
        log::warn!("{SLOTS} front-end mappings are guarded already; a new one is refused");
        return Err(GuardsTaken);
    };
    let slot = &TABLE[index];
    slot.len.store(len, Ordering::Relaxed);
    slot.page.store(page, Ordering::Relaxed);
    slot.faults.store(0, Ordering::Relaxed);
    slot.start.store(start, Ordering::Release);
    Ok(Some(Guarded { slot: index }))
}

/// Faults absorbed in this process so far, over every mapping.
pub fn absorbed() -> u64 {
    ABSORBED.load(Ordering::Relaxed)
}

/// Installs the handler once, keeping the disposition it replaces.
fn installed() -> bool {
    *INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` with a null new action only reads the current one into
        // `previous`, a zeroed C struct; then the handler's action, also fully initialised,
        // replaces it. The handler only touches this module's atomics and async-signal-safe
        // calls.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                log::warn!(
                    "cannot read the SIGBUS disposition: {}",
                    std::io::Error::last_os_error()
                );
                return false;
            }
            let _ = PREVIOUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                log::warn!(
                    "cannot install the SIGBUS handler: {}",
                    std::io::Error::last_os_error()
                );
                return false;
            }
        }
        true
    })
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo; for SIGBUS `si_addr`
    // is the field of the fault union it filled (for a `kill`, the code says so first).
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR && absorb(addr) {
        return;
    }
    pass_on(signal, info, context);
}

/// Replaces the page holding `addr` with a private zero page, if a registered mapping holds
/// it; says whether it did.
fn absorb(addr: usize) -> bool {
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr - start >= slot.len.load(Ordering::Relaxed) {
            continue;
        }
        let page = slot.page.load(Ordering::Relaxed);
        let at = addr & !(page - 1);
        // SAFETY: `at..at + page` is the page of a registered mapping that holds `addr`
        // (`start` is aligned to `page`), which its owner keeps mapped while it is registered;
        // only its backing changes, from the front-end's file to private anonymous memory.
        let mapped = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return false;
        }
        slot.faults.fetch_add(1, Ordering::Relaxed);
        ABSORBED.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// Hands a SIGBUS that is not an absorbed fault to the disposition before this module's.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get().copied();
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous disposition is a handler taking siginfo (SA_SIGINFO),
                // installed by this process for SIGBUS; it gets what the kernel gave this one.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal, info, context);
            } else {
                // SAFETY: as above, a plain handler.
                let handler: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal);
            }
        }
        _ => {
            // The default (a synchronous SIGBUS cannot be ignored): put it back and raise the
            // signal again. It stays blocked until this handler returns, then ends the process
            // as if no handler had been installed.
            // SAFETY: a zeroed action with SIG_DFL is a valid disposition; `raise` is
            // async-signal-safe.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
                libc::raise(signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
    use std::os::fd::AsRawFd;

    use super::*;

    const PAGE: usize = 4096;

    /// A memfd of `pages` pages mapped shared, as a back-end maps guest memory.
    fn shared(pages: usize) -> (rustix::fd::OwnedFd, *mut u8) {
        let fd = memfd_create("bus-guard", MemfdFlags::CLOEXEC).expect("memfd");
        ftruncate(&fd, (pages * PAGE) as u64).expect("size");
        // SAFETY: a new shared mapping of the memfd, placed by the kernel.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "mmap");
        (fd, at.cast())
    }

    #[test]
    fn a_page_the_front_end_cut_off_reads_zeros_and_is_counted() {
        let (fd, at) = shared(3);
        let guarded = guard(at, 3 * PAGE, PAGE).ok().flatten().expect("guarded");
        // SAFETY: the mapping is ours, three pages long, until it is unmapped below.
        unsafe {
            at.add(2 * PAGE).write_volatile(7);
            assert_eq!(at.add(2 * PAGE).read_volatile(), 7);
        }
        // The front-end truncates its file to one page.
        ftruncate(&fd, PAGE as u64).expect("shrink");
        let before = absorbed();
        // SAFETY: as above; the third page's backing is gone, which the guard absorbs.
        let (third, again, first) = unsafe {
            let third = at.add(2 * PAGE).read_volatile();
            at.add(2 * PAGE + 8).write_volatile(9);
            (third, at.add(2 * PAGE + 8).read_volatile(), at.read_volatile())
        };
        assert_eq!(third, 0, "a page past the new end reads zeros");
        assert_eq!(again, 9, "and takes writes, which the front-end never sees");
        assert_eq!(first, 0, "the page still in the file is untouched");
        assert_eq!(guarded.faults(), 1, "one page absorbed, once");
        assert!(absorbed() > before);
        drop(guarded);
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(at.cast(), 3 * PAGE) }, 0);
    }

    #[test]
    fn a_fault_outside_guarded_memory_still_ends_the_process() {
        let (guarded_fd, guarded_at) = shared(1);
        let guarded =
            guard(guarded_at, PAGE, PAGE).ok().flatten().expect("the handler is installed");
        let (fd, at) = shared(2);
        ftruncate(&fd, 0).expect("shrink");
        // SAFETY: the child only touches memory and dies of it (or exits); nothing it does
        // needs a lock another thread of the parent may have held at the fork.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            // SAFETY: deliberately touching a page of an unguarded mapping whose backing is
            // gone: the previous disposition, the default, must end this process.
            unsafe {
                at.add(PAGE).read_volatile();
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
            "the child ended with status {status:#x}, not by SIGBUS"
        );
        assert_eq!(guarded.faults(), 0);
        drop((guarded, guarded_fd));
        // SAFETY: the mappings made above, no longer used.
        unsafe {
            assert_eq!(libc::munmap(at.cast(), 2 * PAGE), 0);
            assert_eq!(libc::munmap(guarded_at.cast(), PAGE), 0);
        }
    }
}
