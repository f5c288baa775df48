//! The data workloads as a guest mounted with `-o dax` runs them on a back-end with a DAX window:
//! each access copies between the caller's buffer and the window where its 2 MiB range of the
//! file is mapped, as the guest's `read(2)` and `write(2)` do; a range not mapped yet is mapped
//! with SETUPMAPPING first (writable for a write), and when every range of the window is taken
//! the least recently used one is removed with REMOVEMAPPING, as Linux's `fs/fuse/dax.c`
//! reclaims. The VMM's side — mapping what the back-end asks into the window — runs on a thread
//! of its own over the client. Each queue's thread makes its lanes' accesses one after the other
//! (an access waits for its mapping, as the guest's does); only the mapping requests reach the
//! back-end, and the report counts accesses.
//!
//! This module must not lay out rings nor decide where accesses go: it uses the guest's rings
//! and the workload's offsets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vhu_device_fs::fuse::abi::InHeader;
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::guest::{
    remove_mapping_body, setup_mapping_args, GuestFs, GuestRing, DAX_RANGE,
};
use vhu_transport_std::client::{Client, ShmemRegion};
use zerocopy::IntoBytes;

use crate::guest::{Plan, GUEST_USER};
use crate::measure::Figures;
use crate::workload::{check_read, pattern, Offsets};
use crate::written::Written;

/// How long a mapping request may take before the run fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One range of the window: the file range mapped there, and when it was used last.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// (node, index of the file's 2 MiB range).
    range: Option<(u64, u64)>,
    writable: bool,
    used: u64,
}

#[derive(Debug, Default)]
struct Ranges {
    slots: Vec<Slot>,
    /// Where each mapped file range is.
    by_range: HashMap<(u64, u64), usize>,
    clock: u64,
    /// Mapping requests sent (SETUPMAPPING and REMOVEMAPPING).
    requests: u64,
    unique: u64,
}

/// The guest's view of the window: which file range each 2 MiB of it holds.
struct Cache {
    region: Arc<ShmemRegion>,
    ranges: Mutex<Ranges>,
}

impl Cache {
    fn new(region: Arc<ShmemRegion>) -> Self {
        let slots = vec![Slot::default(); (region.len() / DAX_RANGE) as usize];
        Self { region, ranges: Mutex::new(Ranges { slots, ..Ranges::default() }) }
    }

    /// Runs `access` with the window offset of byte `offset` of `node`, mapped (writable if
    /// asked) through `ring` if it was not. The window's record is held meanwhile, so no other
    /// queue's thread removes the range under the access.
    fn with_mapped<R>(
        &self,
        ring: &mut GuestRing,
        (node, offset, writable): (u64, u64, bool),
        access: impl FnOnce(&ShmemRegion, u64) -> R,
    ) -> Result<R, String> {
        let mut ranges = self.ranges.lock().unwrap_or_else(PoisonError::into_inner);
        ranges.clock += 1;
        let clock = ranges.clock;
        let key = (node, offset / DAX_RANGE);
        let found = ranges.by_range.get(&key).copied();
        let slot = match found {
            Some(slot) if ranges.slots[slot].writable || !writable => slot,
            // Mapped to read only: the same range again, writable (Linux's upgrade).
            Some(slot) => {
                map(ring, &mut ranges, key, slot, writable)?;
                slot
            }
            None => {
                let slot = (0..ranges.slots.len())
                    .min_by_key(|s| ranges.slots[*s].range.map_or(0, |_| ranges.slots[*s].used))
                    .ok_or("the window holds no range")?;
                if let Some(old) = ranges.slots[slot].range.take() {
                    ranges.by_range.remove(&old);
                    let body = remove_mapping_body(&[(slot as u64 * DAX_RANGE, DAX_RANGE)])
                        .map_err(|e| e.to_string())?;
                    request(ring, &mut ranges, Opcode::RemoveMapping, old.0, &body)?;
                }
                map(ring, &mut ranges, key, slot, writable)?;
                slot
            }
        };
        ranges.slots[slot].used = clock;
        Ok(access(&self.region, slot as u64 * DAX_RANGE + offset % DAX_RANGE))
    }
}

/// SETUPMAPPING of file range `key` at window range `slot`, as Linux asks (the node itself,
/// READ always).
fn map(
    ring: &mut GuestRing,
    ranges: &mut Ranges,
    key: (u64, u64),
    slot: usize,
    writable: bool,
) -> Result<(), String> {
    let range = (key.1 * DAX_RANGE, slot as u64 * DAX_RANGE, DAX_RANGE);
    let args = setup_mapping_args(None, range, writable);
    request(ring, ranges, Opcode::SetupMapping, key.0, args.as_bytes())?;
    ranges.slots[slot] = Slot { range: Some(key), writable, used: 0 };
    ranges.by_range.insert(key, slot);
    Ok(())
}

/// Sends one request on `ring` and waits for its (empty) reply.
fn request(
    ring: &mut GuestRing,
    ranges: &mut Ranges,
    opcode: Opcode,
    node: u64,
    body: &[u8],
) -> Result<(), String> {
    ranges.unique += 2;
    ranges.requests += 1;
    let header = InHeader {
        opcode: opcode as u32,
        unique: ranges.unique,
        nodeid: node,
        uid: GUEST_USER.0,
        gid: GUEST_USER.1,
        ..InHeader::default()
    };
    let failed = |e: vhu_device_fs::guest::GuestError| format!("{opcode:?}: {e}");
    ring.submit(header, &[body], 16).map_err(failed)?;
    ring.kick().map_err(failed)?;
    let done = ring.complete(TIMEOUT).map_err(failed)?;
    let done = done.ok_or_else(|| format!("{opcode:?}: no reply within {TIMEOUT:?}"))?;
    if done.errno != 0 {
        return Err(format!("{opcode:?} failed with errno {}", done.errno));
    }
    Ok(())
}

/// Serves the back-end channel — the VMM mapping what the back-end asks — until `stop`.
fn serve(mut client: Client, stop: &AtomicBool) -> Result<Client, String> {
    while !stop.load(Ordering::Relaxed) {
        client
            .poll_backend_requests(Duration::from_millis(20))
            .map_err(|e| format!("the back-end channel: {e}"))?;
    }
    Ok(client)
}

/// Runs `plan` (a data workload) through the window of `guest`'s device; `file` is the node
/// the workload reads or writes, `pid` the back-end's process.
pub(crate) fn run(
    guest: GuestFs,
    file: u64,
    pid: u32,
    plan: &Plan,
    written: &Written,
) -> Result<Figures, String> {
    let region = guest.dax_window().cloned().ok_or("the back-end has no DAX window")?;
    let cache = Arc::new(Cache::new(region));
    let (client, _ram, rings) = guest.into_parts();
    let stop = Arc::new(AtomicBool::new(false));
    let vmm = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || serve(client, &stop))
    };
    let size = plan.workload.io_size();
    let per_queue = plan.requests.div_ceil(u64::from(plan.queues));
    let start = Arc::new(Barrier::new(rings.len() + 1));
    let mut threads = Vec::new();
    for (q, ring) in rings.into_iter().enumerate() {
        let offsets: Vec<Offsets> = (0..plan.depth)
            .map(|l| {
                Offsets::new(plan.workload, size, q as u32 * u32::from(plan.depth) + u32::from(l))
            })
            .collect();
        let (cache, start, write) =
            (Arc::clone(&cache), Arc::clone(&start), plan.workload.writes());
        let written = written.clone();
        threads.push(std::thread::spawn(move || {
            drive(&cache, ring, offsets, (file, size, write), per_queue, (&start, &written))
        }));
    }
    let measured = crate::guest::measure(pid, &start, threads);
    stop.store(true, Ordering::Relaxed);
    let client = vmm.join().map_err(|_| "the VMM's thread panicked".to_string())?;
    drop(client?);
    let figures = measured?;
    let ranges = cache.ranges.lock().unwrap_or_else(PoisonError::into_inner);
    eprintln!(
        "vhu-fs-bench: {}: {} accesses through the DAX window took {} mapping requests",
        plan.workload.name(),
        figures.requests,
        ranges.requests
    );
    Ok(figures)
}

/// One queue's accesses: `target` of them, its lanes' in turn.
fn drive(
    cache: &Cache,
    mut ring: GuestRing,
    mut offsets: Vec<Offsets>,
    (node, size, write): (u64, u32, bool),
    target: u64,
    (start, written): (&Barrier, &Written),
) -> Result<Figures, String> {
    let mut buf = vec![0u8; size as usize];
    if write {
        pattern(0, &mut buf);
    }
    let mut figures =
        Figures { latencies: Vec::with_capacity(target as usize), ..Figures::default() };
    start.wait();
    for i in 0..target {
        let lane = (i % offsets.len() as u64) as usize;
        let offset = offsets[lane].next();
        let began = Instant::now();
        let done = cache.with_mapped(&mut ring, (node, offset, write), |region, at| {
            if write {
                region.write(at, &buf)
            } else {
                region.read(at, &mut buf)
            }
        })?;
        if !done {
            return Err(format!("the window does not hold offset {offset} where it was mapped"));
        }
        if write {
            written.mark(offset, size);
        } else if !check_read(offset, buf.len(), |at| Ok(word(&buf, at)))? {
            return Err(format!("the window at file offset {offset} holds other bytes"));
        }
        figures.latencies.push(crate::measure::nanos(began.elapsed()));
        figures.requests += 1;
        figures.bytes += u64::from(size);
    }
    Ok(figures)
}

/// The 8 bytes at `at`.
fn word(buf: &[u8], at: usize) -> [u8; 8] {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[at..at + 8]);
    word
}
