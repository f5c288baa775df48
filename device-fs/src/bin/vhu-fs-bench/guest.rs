//! The guest side of a run: mount through the back-end's socket with as many request queues as
//! asked, open the workload's files through the first, then drive every queue on its own thread
//! at the asked depth — each of its lanes with one request in flight, each reply checked — while
//! the back-end's CPU is read before and after.
//!
//! This module must not decide what a request means: the lanes of [`crate::workload`] do.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vhu_device_fs::fuse::abi::{InHeader, OpenIn, OpenOut, OutHeader};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{GuestError, GuestFs, GuestRing, Pages, RingLayout};
use vhu_transport_std::client::LogBuffer;
use zerocopy::{FromBytes, IntoBytes};

use crate::measure::{cpu_between, cpu_sample, Figures};
use crate::workload::{lane, pattern, Lane, Next, Setup, Workload};
use crate::written::Written;

/// The guest user every request comes from (a non-root user: creating files exercises the
/// back-end's credential switching).
pub(crate) const GUEST_USER: (u32, u32) = (1000, 1000);

/// Entries of each ring (two per slot).
const RING_SIZE: u16 = 512;
/// How long a reply may take before the run fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) workload: Workload,
    pub(crate) queues: u16,
    pub(crate) depth: u16,
    /// Requests per run, over every queue.
    pub(crate) requests: u64,
    /// Dirty-page logging on for the run (SET_LOG_BASE and VHOST_F_LOG_ALL).
    pub(crate) dirty_log: bool,
    /// How long a driver watches its used ring before it sleeps ([`GuestRing::set_poll`]).
    pub(crate) driver_poll: Duration,
    /// Data workloads go through the back-end's DAX window when it has one (`crate::dax`).
    pub(crate) dax: bool,
}

/// The rings of `plan`, one after the other in guest memory, and the memory they need.
fn layouts(plan: &Plan) -> (Vec<RingLayout>, u64) {
    let data = plan.workload.request_size(1 << 20);
    let (out, back) = if plan.workload.writes() { (data, 0) } else { (0, data) };
    let mut at = 0x1000;
    let mut rings = Vec::new();
    for _ in 0..plan.queues {
        let mut layout = RingLayout {
            ring: at,
            size: RING_SIZE,
            slots: plan.depth,
            buffers: at + RingLayout::ring_bytes(RING_SIZE),
            request_max: 8192 + out,
            // READDIRPLUS and INIT replies fit in 8 KiB.
            reply_max: 8192 + back,
        };
        layout.request_max = layout.request_max.next_multiple_of(4096);
        at = layout.end();
        rings.push(layout);
    }
    (rings, at.next_multiple_of(2 << 20))
}

fn guest_error(e: GuestError) -> String {
    e.to_string()
}

/// Shares a dirty log covering `ram` bytes and switches logging on, as a VMM starting a
/// migration does.
fn start_logging(guest: &mut GuestFs, ram: u64) -> Result<LogBuffer, String> {
    let log = LogBuffer::new(ram).map_err(|e| e.to_string())?;
    let client = guest.client();
    client.set_log_base(log.fd(), log.size(), 0).map_err(|e| format!("SET_LOG_BASE: {e}"))?;
    client.set_logging(true).map_err(|e| format!("VHOST_F_LOG_ALL: {e}"))?;
    Ok(log)
}

/// Opens `name` in the root with `open(2)` flags: (node, handle).
fn open(guest: &mut GuestFs, name: &str, flags: u32) -> Result<(u64, u64), String> {
    let node = guest.lookup(1, name).map_err(guest_error)?.nodeid;
    let reply = guest
        .call(Opcode::Open, node, OpenIn { flags, open_flags: 0 }.as_bytes())
        .map_err(guest_error)?;
    let open = OpenOut::read_from_prefix(&reply).map_err(|_| "short OPEN reply")?.0;
    Ok((node, open.fh))
}

/// Runs `plan` against the back-end listening on `socket`, whose process is `pid`.
pub(crate) fn run(
    socket: &Path,
    pid: u32,
    plan: &Plan,
    written: &Written,
) -> Result<Figures, String> {
    let (layouts, ram) = layouts(plan);
    let mut guest = GuestFs::connect_with(socket, ram, &layouts).map_err(guest_error)?;
    // Kept until the run ends: the back-end marks it all along.
    let _log = if plan.dirty_log { Some(start_logging(&mut guest, ram)?) } else { None };
    guest.set_caller(GUEST_USER.0, GUEST_USER.1);
    let init = *guest.init_out();
    let pages = if init.max_pages == 0 { 32 } else { u32::from(init.max_pages) };
    let chunk = (pages * 4096).min(init.max_write.max(4096));
    let setup = Setup {
        data: open(&mut guest, "data", 0)?,
        wdata: open(&mut guest, "wdata", 2)?,
        big: guest.lookup(1, "big").map_err(guest_error)?.nodeid,
        chunk,
    };
    if plan.dax && plan.workload.io_size() > 0 && guest.dax_window().is_some() {
        let file = if plan.workload.writes() { setup.wdata.0 } else { setup.data.0 };
        return crate::dax::run(guest, file, pid, plan, written);
    }
    let (client, _ram, mut rings) = guest.into_parts();
    if plan.workload.writes() {
        // What every WRITE sends: the guest's pages hold it before the run.
        let mut laid = vec![0u8; plan.workload.request_size(chunk) as usize];
        pattern(0, &mut laid);
        for ring in &mut rings {
            ring.lay_request_data(&laid).map_err(guest_error)?;
        }
    }
    let per_queue = plan.requests.div_ceil(u64::from(plan.queues)).max(u64::from(plan.depth));
    let start = Arc::new(Barrier::new(rings.len() + 1));
    let mut threads = Vec::new();
    for (q, mut ring) in rings.into_iter().enumerate() {
        ring.set_poll(plan.driver_poll);
        let lanes: Vec<Box<dyn Lane>> = (0..plan.depth)
            .map(|l| {
                let id = q as u32 * u32::from(plan.depth) + u32::from(l);
                lane(plan.workload, setup, id, written)
            })
            .collect();
        let start = Arc::clone(&start);
        let queue = q as u64;
        threads.push(std::thread::spawn(move || drive(ring, queue, lanes, per_queue, &start)));
    }
    let figures = measure(pid, &start, threads);
    drop(client);
    figures
}

/// Lets the queues' `threads` go (they wait at `start`), waits for them, and sums what they
/// measured, with the CPU the back-end `pid` spent meanwhile.
pub(crate) fn measure(
    pid: u32,
    start: &Barrier,
    threads: Vec<std::thread::JoinHandle<Result<Figures, String>>>,
) -> Result<Figures, String> {
    let cpu_before = cpu_sample(pid);
    // Taken before the lanes may start: they wait for this thread at the barrier.
    let begun = Instant::now();
    start.wait();
    let mut figures = Figures::default();
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(queue)) => {
                figures.requests += queue.requests;
                figures.bytes += queue.bytes;
                figures.latencies.extend(queue.latencies);
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a queue's thread panicked".to_string())),
        }
    }
    figures.elapsed = begun.elapsed();
    figures.cpu = cpu_between(&cpu_before, &cpu_sample(pid));
    match failure {
        Some(e) => Err(e),
        None => Ok(figures),
    }
}

/// Which bytes of a request and its reply a Linux guest gives the device page by page: a
/// WRITE's data (laid in its pages before the run), a READ's and a READDIRPLUS's room for what
/// comes back (fs/fuse: the page-cache pages or the caller's pages of the request, each its own
/// descriptor). File data stays in guest memory; directory entries are copied out to be parsed.
fn pages(next: &Next) -> Pages {
    let out = size_of::<OutHeader>() as u32;
    match next.opcode {
        Opcode::Write => Pages { request: next.laid, reply: 0, in_place: true },
        Opcode::Read => Pages { request: 0, reply: next.room.saturating_sub(out), in_place: true },
        Opcode::Readdirplus => Pages { reply: next.room.saturating_sub(out), ..Pages::default() },
        _ => Pages::default(),
    }
}

/// Keeps every lane's request in flight until `target` requests were answered. A request's
/// unique names its queue and lane and is never in flight twice on the connection, as a Linux
/// guest's (one counter per connection): bit 0 clear (interrupts set it), the lane in bits
/// 1-16, the queue in bits 17-24, a serial above.
fn drive(
    mut ring: GuestRing,
    queue: u64,
    mut lanes: Vec<Box<dyn Lane>>,
    target: u64,
    start: &Barrier,
) -> Result<Figures, String> {
    let mut body = Vec::new();
    let mut serial = 0u64;
    let mut issued = 0u64;
    let mut figures =
        Figures { latencies: Vec::with_capacity(target as usize), ..Figures::default() };
    let mut submit = |ring: &mut GuestRing, lane: usize, lanes: &mut [Box<dyn Lane>]| {
        body.clear();
        let next = lanes[lane].next(&mut body);
        serial += 1;
        let header = InHeader {
            opcode: next.opcode as u32,
            unique: (serial << 25) | (queue << 17) | ((lane as u64) << 1),
            nodeid: next.nodeid,
            uid: GUEST_USER.0,
            gid: GUEST_USER.1,
            pid: 4242,
            ..InHeader::default()
        };
        ring.submit_paged(header, &[&body], next.room, pages(&next)).map_err(guest_error)
    };
    start.wait();
    for l in 0..lanes.len() {
        submit(&mut ring, l, &mut lanes)?;
        issued += 1;
    }
    ring.kick().map_err(guest_error)?;
    while figures.requests < target {
        let mut wait = TIMEOUT;
        let mut refill = Vec::new();
        while let Some(done) = ring.complete(wait).map_err(guest_error)? {
            wait = Duration::ZERO;
            let lane = ((done.unique >> 1) & 0xffff) as usize;
            let opcode = done.opcode;
            if done.errno != 0 {
                return Err(format!("{opcode:?} failed with errno {}", done.errno));
            }
            let lane_ref = lanes.get_mut(lane).ok_or("a reply for no lane")?;
            lane_ref.reply(&done).map_err(|e| format!("{opcode:?}: {e}"))?;
            figures.bytes += lane_ref.bytes();
            figures.latencies.push(crate::measure::nanos(done.latency));
            figures.requests += 1;
            if issued < target {
                refill.push(lane);
                issued += 1;
            }
        }
        if wait == TIMEOUT {
            return Err(format!("no reply within {TIMEOUT:?}"));
        }
        for lane in refill.drain(..) {
            submit(&mut ring, lane, &mut lanes)?;
        }
        ring.kick().map_err(guest_error)?;
    }
    Ok(figures)
}
