//! One virtio-fs request queue as a guest driver keeps it: a split ring with a number of request
//! slots, each with its own buffers in guest memory, so that many requests can be in flight at
//! once. A request is a two-descriptor chain — the request (device-readable), then room for the
//! reply (device-writable) — or, when VIRTIO_RING_F_INDIRECT_DESC was negotiated and the caller
//! says where the data is ([`Pages`]), laid out as Linux's virtio-fs driver lays it out: one
//! indirect table holding the request header, its arguments, each page of data on its own, the
//! reply header, the reply's arguments and each page of data back on its own (fs/fuse's
//! `sg_init_fuse_args` and `sg_init_fuse_pages`; kernels whose FUSE requests carry folios give
//! a large folio one descriptor).
//!
//! [`GuestRing::submit`] writes a request into a free slot and makes its chain available;
//! [`GuestRing::kick`] tells the device (once per batch, as a driver does, and with
//! VIRTIO_RING_F_EVENT_IDX only when the device asked to hear: virtio 1.2 §2.7.10);
//! [`GuestRing::complete`] takes the next used chain and checks what the device must get right
//! — the chain it names is one in flight, the bytes it reports fit the reply buffer and match the
//! reply header's length, the header's `unique` is the request's. It does not interpret reply
//! payloads. Like Linux's virtio-fs driver it learns of used chains from the device's
//! notification (the call eventfd, a guest's interrupt) and then takes every chain used by
//! then, asking for the next notification once the ring is drained (and looking once more, as
//! `virtqueue_enable_cb` does): a device that holds its notifications back keeps the driver
//! waiting, as it would keep a guest.
//!
//! A request whose [`Pages`] are `in_place` moves its data as a guest moves its page cache's:
//! a WRITE's pages already hold what [`GuestRing::lay_request_data`] put there, and a READ's
//! are left where the device wrote them, for [`Completed::read_at`] to look at. The driver then
//! copies no data at all, so a benchmark measures the device rather than the driver's memcpy.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use vhu_transport_std::client::{eventfd, VringStart};
use vhu_transport_std::virtq::{Descriptor, RingPoll, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use vhu_transport_std::vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

use super::layout::{push_desc, push_pages, Pages, RingLayout, PAGE};
use super::span::Span;
use super::GuestError;
use crate::fuse::abi::{InHeader, OutHeader};
use crate::fuse::Opcode;

/// Whether the other side asked to hear about index `new`, having been told of `old`, when it
/// wants to hear once `event` is passed (virtio 1.2 §2.7.10).
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// A request in flight in a slot.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    unique: u64,
    opcode: Opcode,
    sent: Instant,
    /// Bytes of room the reply was given.
    room: u32,
    /// Bytes of that room at the start of the reply buffer; the rest is the pages after it.
    head_room: u32,
    /// The reply's pages stay in guest memory ([`Pages::in_place`]).
    in_place: bool,
}

/// A request the device answered.
#[derive(Debug)]
pub struct Completed<'a> {
    /// The request.
    pub opcode: Opcode,
    /// Its `unique`.
    pub unique: u64,
    /// From [`GuestRing::submit`] to the used entry being seen.
    pub latency: Duration,
    /// The reply's errno (positive; 0 for success).
    pub errno: i32,
    /// The reply after its header (empty for FORGET, which has none), but for the pages of a
    /// request whose data stays in guest memory.
    pub payload: &'a [u8],
    /// Guest memory, and where the rest of the reply is in it and how long.
    memory: &'a Span,
    pages: (u64, usize),
}

impl Completed<'_> {
    /// Bytes of the reply after its header, those left in guest memory included.
    pub fn len(&self) -> usize {
        self.payload.len() + self.pages.1
    }

    /// Whether the reply carries nothing after its header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from the reply at `offset` after its header, wherever those bytes are.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), GuestError> {
        let end = offset.checked_add(buf.len()).filter(|end| *end <= self.len());
        if end.is_none() {
            return Err(GuestError::TooLarge(offset.saturating_add(buf.len())));
        }
        let copied = self.payload.len().saturating_sub(offset).min(buf.len());
        let (head, rest) = buf.split_at_mut(copied);
        if copied > 0 {
            head.copy_from_slice(&self.payload[offset..offset + copied]);
        }
        if !rest.is_empty() {
            let at = self.pages.0 + (offset + copied - self.payload.len()) as u64;
            self.memory.read(at, rest)?;
        }
        Ok(())
    }
}

/// Whether the call eventfd `call` was signalled, waiting up to `wait` for it; a signal is
/// taken (the counter reset), as a guest's interrupt is acknowledged.
fn notified(call: &OwnedFd, wait: Duration) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = [rustix::event::PollFd::new(call, rustix::event::PollFlags::IN)];
    if !matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(1)) {
        return false;
    }
    // Readable: the 8-byte counter is there to take (a failed read leaves it for the next look).
    rustix::io::read(call, &mut [0u8; 8]).is_ok()
}

/// A guest-driven request queue; see the module docs.
#[derive(Debug)]
pub struct GuestRing {
    memory: Span,
    layout: RingLayout,
    call: OwnedFd,
    kick: OwnedFd,
    slots: Vec<Option<InFlight>>,
    free: Vec<u16>,
    next_avail: u16,
    used_seen: u16,
    reply: Vec<u8>,
    /// VIRTIO_RING_F_EVENT_IDX was negotiated.
    event_idx: bool,
    /// The available index at the last kick.
    kicked: u16,
    /// VIRTIO_RING_F_INDIRECT_DESC was negotiated.
    indirect: bool,
    /// An indirect table being built.
    table: Vec<Descriptor>,
    /// What [`GuestRing::lay_request_data`] laid in every slot's pages, for requests sent
    /// without pages (no VIRTIO_RING_F_INDIRECT_DESC), whose data follows their arguments.
    laid: Vec<u8>,
    /// How long [`GuestRing::complete`] watches the call eventfd before it sleeps.
    poll: RingPoll,
    /// A notification came and the used ring has not been drained since: used chains may be
    /// taken without another.
    notified: bool,
}

impl GuestRing {
    /// Lays the ring out in `memory` (the chains of every slot are written once, here);
    /// `event_idx`, `indirect`: VIRTIO_RING_F_EVENT_IDX and VIRTIO_RING_F_INDIRECT_DESC were
    /// negotiated.
    pub fn new(
        memory: GuestMemoryMmap,
        layout: RingLayout,
        (event_idx, indirect): (bool, bool),
    ) -> Result<Self, GuestError> {
        let fits = layout.slots > 0
            && u32::from(layout.slots) * 2 <= u32::from(layout.size)
            && layout.size.is_power_of_two()
            && memory.address_in_range(GuestAddress(layout.end().saturating_sub(1)));
        if !fits {
            return Err(GuestError::Memory(format!("{layout:?} does not fit guest memory")));
        }
        let start = layout.ring.min(layout.buffers);
        let end = (layout.ring + RingLayout::ring_bytes(layout.size)).max(layout.end());
        let len = usize::try_from(end - start).map_err(|e| GuestError::Memory(e.to_string()))?;
        let ring = Self {
            memory: Span::new(memory, start, len)?,
            layout,
            call: eventfd()?,
            kick: eventfd()?,
            slots: vec![None; usize::from(layout.slots)],
            free: (0..layout.slots).rev().collect(),
            next_avail: 0,
            used_seen: 0,
            reply: Vec::new(),
            event_idx,
            kicked: 0,
            indirect,
            table: Vec::new(),
            laid: Vec::new(),
            poll: RingPoll::with_max(Duration::ZERO),
            notified: false,
        };
        for slot in 0..layout.slots {
            ring.write_pair(slot, layout.request_max, layout.reply_max)?;
        }
        Ok(ring)
    }

    /// What the front-end sends to start the ring: `host_address` turns the ring's guest
    /// address into the front-end's user address.
    pub fn start(&self, host_address: u64) -> VringStart<'_> {
        VringStart::split(self.layout.size, host_address, self.call.as_fd(), self.kick.as_fd())
    }

    /// The layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    fn write_desc(
        &self,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), GuestError> {
        let desc = Descriptor::new(addr, len, flags, next);
        self.memory.write(self.layout.ring + 16 * u64::from(index), desc.as_bytes())
    }

    /// Makes slot `slot`'s chain the request buffer (`request` bytes) then the reply buffer
    /// (`reply` bytes of room).
    fn write_pair(&self, slot: u16, request: u32, reply: u32) -> Result<(), GuestError> {
        let (head, layout) = (2 * slot, &self.layout);
        self.write_desc(head, layout.request(slot), request, DESC_F_NEXT, head + 1)?;
        self.write_desc(head + 1, layout.reply(slot), reply, DESC_F_WRITE, 0)
    }

    /// Makes slot `slot`'s chain one indirect descriptor whose table is laid out as Linux lays
    /// a request out: the request header and its arguments (`args` bytes), the `pages`
    /// request bytes a page each from the next page boundary; room for the reply header and its
    /// arguments (`back` bytes: none for a request without reply), then room for `pages` reply
    /// bytes a page each. Returns the room at the start of the reply buffer.
    fn write_indirect(
        &mut self,
        slot: u16,
        args: u32,
        back: u32,
        pages: Pages,
    ) -> Result<u32, GuestError> {
        let layout = self.layout;
        let mut table = std::mem::take(&mut self.table);
        table.clear();
        let (header, out) = (size_of::<InHeader>() as u32, size_of::<OutHeader>() as u32);
        push_desc(&mut table, layout.request(slot), header, 0);
        if args > 0 {
            push_desc(&mut table, layout.request(slot) + u64::from(header), args, 0);
        }
        push_pages(&mut table, layout.request(slot) + PAGE, pages.request, 0);
        // A request with no reply (FORGET) has no reply header either.
        if back > 0 {
            push_desc(&mut table, layout.reply(slot), back.min(out), DESC_F_WRITE);
        }
        if back > out {
            push_desc(&mut table, layout.reply(slot) + u64::from(out), back - out, DESC_F_WRITE);
        }
        push_pages(&mut table, layout.reply(slot) + PAGE, pages.reply, DESC_F_WRITE);
        // The last entry ends the chain (there is one: the request header).
        if let Some(last) = table.last_mut() {
            *last = Descriptor::new(
                last.addr.get(),
                last.len.get(),
                last.flags.get() & !DESC_F_NEXT,
                0,
            );
        }
        let written = self.memory.write(layout.table(slot), table.as_bytes());
        let len = (table.len() * size_of::<Descriptor>()) as u32;
        self.table = table;
        written?;
        self.write_desc(2 * slot, layout.table(slot), len, DESC_F_INDIRECT, 0)?;
        Ok(back)
    }

    /// Writes `header` (its `len` set here) and `body` into a free slot and makes the chain
    /// available, with `reply` bytes of room for the answer (at most the slot's: a Linux guest
    /// gives exactly what the request's reply takes, a READ's size, and some back-ends fill all
    /// the room they get); the device hears of it at the next [`GuestRing::kick`].
    pub fn submit(
        &mut self,
        header: InHeader,
        body: &[&[u8]],
        reply: u32,
    ) -> Result<(), GuestError> {
        self.put(header, body, reply, None)
    }

    /// [`GuestRing::submit`], laid out as Linux lays the request out (see the module docs)
    /// when VIRTIO_RING_F_INDIRECT_DESC was negotiated, `pages` saying which bytes are data.
    /// Without it the request goes as [`GuestRing::submit`] sends it, data laid in place
    /// copied after its arguments.
    pub fn submit_paged(
        &mut self,
        header: InHeader,
        body: &[&[u8]],
        reply: u32,
        pages: Pages,
    ) -> Result<(), GuestError> {
        if self.indirect {
            return self.put(header, body, reply, Some(pages));
        }
        if !pages.in_place || pages.request == 0 {
            return self.put(header, body, reply, None);
        }
        let data = std::mem::take(&mut self.laid);
        let Some(laid) = data.get(..pages.request as usize) else {
            self.laid = data;
            return Err(GuestError::TooLarge(pages.request as usize));
        };
        let parts: Vec<&[u8]> = body.iter().copied().chain([laid]).collect();
        let sent = self.put(header, &parts, reply, None);
        self.laid = data;
        sent
    }

    fn put(
        &mut self,
        mut header: InHeader,
        body: &[&[u8]],
        reply: u32,
        pages: Option<Pages>,
    ) -> Result<(), GuestError> {
        // Data already in the slot's pages counts as the body's last bytes.
        let laid = pages.filter(|p| p.in_place).map_or(0, |p| p.request as usize);
        let body_len = body.iter().map(|b| b.len()).sum::<usize>() + laid;
        let len = size_of::<InHeader>() + body_len;
        if len > self.layout.request_max as usize {
            return Err(GuestError::TooLarge(len));
        }
        if reply > self.layout.reply_max {
            return Err(GuestError::TooLarge(reply as usize));
        }
        // Bytes of the body before its data pages, and of the reply room before its pages.
        let (args, back) = match pages {
            None => (body_len, reply),
            Some(p) => {
                let args = body_len.checked_sub(p.request as usize);
                let back = reply.checked_sub(p.reply);
                let page_fits = |data: u32, room: u32| u64::from(data) + PAGE <= u64::from(room);
                match (args, back) {
                    (Some(args), Some(back))
                        if size_of::<InHeader>() + args <= PAGE as usize
                            && back <= PAGE as u32
                            && (back >= size_of::<OutHeader>() as u32 || reply == 0)
                            && page_fits(p.request, self.layout.request_max)
                            && page_fits(p.reply, self.layout.reply_max) =>
                    {
                        (args, back)
                    }
                    _ => return Err(GuestError::TooLarge(len.max(reply as usize))),
                }
            }
        };
        let opcode = Opcode::from_u32(header.opcode)
            .ok_or_else(|| GuestError::Memory(format!("unknown opcode {}", header.opcode)))?;
        let slot = self.free.pop().ok_or(GuestError::TooLarge(self.slots.len() + 1))?;
        header.len = len as u32;
        let start = self.layout.request(slot);
        self.memory.write(start, header.as_bytes())?;
        // The arguments follow the header; data follows them, or starts a page in when laid
        // out by page.
        let mut arg_at = start + size_of::<InHeader>() as u64;
        let mut data_at = if pages.is_some() { start + PAGE } else { arg_at + args as u64 };
        let mut left = args;
        for part in body {
            let n = part.len().min(left);
            self.memory.write(arg_at, &part[..n])?;
            (arg_at, left) = (arg_at + n as u64, left - n);
            self.memory.write(data_at, &part[n..])?;
            data_at += (part.len() - n) as u64;
        }
        let head_room = match pages {
            // The request descriptor carries exactly the request, the reply's the room given.
            None => {
                self.write_pair(slot, len as u32, reply)?;
                reply
            }
            Some(p) => self.write_indirect(slot, args as u32, back, p)?,
        };
        let avail = self.layout.available();
        let entry = u64::from(self.next_avail % self.layout.size);
        self.memory.write_u16(avail + 4 + 2 * entry, 2 * slot)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::Release);
        self.memory.write_u16(avail + 2, self.next_avail)?;
        let sent = Instant::now();
        let in_place = pages.is_some_and(|p| p.in_place);
        self.slots[usize::from(slot)] = Some(InFlight {
            unique: header.unique,
            opcode,
            sent,
            room: reply,
            head_room,
            in_place,
        });
        Ok(())
    }

    /// Writes `data` into every slot's request pages: what a request whose [`Pages`] are
    /// `in_place` sends as its data.
    pub fn lay_request_data(&mut self, data: &[u8]) -> Result<(), GuestError> {
        if PAGE + data.len() as u64 > u64::from(self.layout.request_max) {
            return Err(GuestError::TooLarge(data.len()));
        }
        for slot in 0..self.layout.slots {
            let at = self.layout.request(slot) + PAGE;
            self.memory.write(at, data)?;
        }
        self.laid = data.to_vec();
        Ok(())
    }

    /// Tells the device that chains are available, unless (EVENT_IDX) it said it does not need
    /// to hear of them yet.
    pub fn kick(&mut self) -> Result<(), GuestError> {
        fence(Ordering::SeqCst);
        let (new, old) = (self.next_avail, self.kicked);
        self.kicked = new;
        if self.event_idx {
            let event =
                self.memory.read_u16(self.layout.used() + 4 + 8 * u64::from(self.layout.size))?;
            if !need_event(event, new, old) {
                return Ok(());
            }
        }
        self.signal_kick()
    }

    /// Kicks the device whatever its `avail_event` says (a driver may always kick): the
    /// device looks at the ring even where the driver cannot read what it asked for.
    pub fn kick_anyway(&mut self) -> Result<(), GuestError> {
        fence(Ordering::SeqCst);
        self.kicked = self.next_avail;
        self.signal_kick()
    }

    fn signal_kick(&self) -> Result<(), GuestError> {
        rustix::io::write(&self.kick, &1u64.to_ne_bytes())
            .map(drop)
            .map_err(|e| GuestError::Memory(format!("kick: {e}")))
    }

    /// Asks (EVENT_IDX) to be notified when the next chain is used.
    fn want_notification(&self) -> Result<(), GuestError> {
        if self.event_idx {
            let at = self.layout.available() + 4 + 2 * u64::from(self.layout.size);
            self.memory.write_u16(at, self.used_seen)?;
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// Makes [`GuestRing::complete`] watch the call eventfd for up to `max` before it sleeps
    /// on it, as a KVM host polls a halted vCPU for a pending interrupt for up to
    /// `halt_poll_ns` before it schedules it out (zero, the default: sleep at once). The watch
    /// adapts as [`RingPoll`] adapts a device's.
    pub fn set_poll(&mut self, max: Duration) {
        self.poll = RingPoll::with_max(max);
    }

    /// The next used chain, waiting for it up to `wait` (`None` at once when there is none).
    pub fn complete(&mut self, wait: Duration) -> Result<Option<Completed<'_>>, GuestError> {
        let used = self.layout.used();
        let deadline = Instant::now() + wait;
        loop {
            if self.notified {
                if self.memory.read_u16(used + 2)? != self.used_seen {
                    fence(Ordering::Acquire);
                    break;
                }
                // Drained: ask for the next notification, then look once more for a chain used
                // before the device could see the request.
                self.notified = false;
                self.want_notification()?;
                if self.memory.read_u16(used + 2)? != self.used_seen {
                    self.notified = true;
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let call = &self.call;
            if left.is_zero() {
                // One look for a notification already there, then none.
                if notified(call, Duration::ZERO) {
                    self.notified = true;
                    continue;
                }
                return Ok(None);
            }
            if self.poll.poll(|| notified(call, Duration::ZERO)) {
                self.notified = true;
                continue;
            }
            self.poll.sleeps();
            // A notification the device never sends leaves the driver waiting, as it would a
            // guest, until `wait` runs out.
            self.notified = notified(call, left.min(Duration::from_millis(100)));
            self.poll.turn_begins();
        }
        let entry = used + 4 + 8 * u64::from(self.used_seen % self.layout.size);
        let id = self.memory.read_u32(entry)?;
        let written = self.memory.read_u32(entry + 4)?;
        self.used_seen = self.used_seen.wrapping_add(1);
        let slot = u16::try_from(id / 2).ok().filter(|s| id % 2 == 0 && *s < self.layout.slots);
        let Some(request) = slot.and_then(|s| self.slots[usize::from(s)].take()) else {
            return Err(GuestError::BadReply {
                opcode: Opcode::Init,
                what: format!("used chain {id} is not a request in flight"),
            });
        };
        // Cannot fail: `slot` was checked above.
        let slot = slot.unwrap_or(0);
        self.free.push(slot);
        let latency = request.sent.elapsed();
        let bad = |what: String| GuestError::BadReply { opcode: request.opcode, what };
        if written > request.room {
            return Err(bad(format!("{written} bytes used of a {}-byte buffer", request.room)));
        }
        if matches!(request.opcode, Opcode::Forget | Opcode::BatchForget) {
            self.reply.clear();
            return Ok(Some(Completed {
                opcode: request.opcode,
                unique: request.unique,
                latency,
                errno: 0,
                payload: &self.reply,
                memory: &self.memory,
                pages: (0, 0),
            }));
        }
        // In place, only what precedes the pages is copied.
        let copied = if request.in_place { written.min(request.head_room) } else { written };
        self.reply.resize(copied as usize, 0);
        let (head, pages) = self.reply.split_at_mut(written.min(request.head_room) as usize);
        self.memory.read(self.layout.reply(slot), head)?;
        if !pages.is_empty() {
            self.memory.read(self.layout.reply(slot) + PAGE, pages)?;
        }
        let (head, _) =
            OutHeader::read_from_prefix(&self.reply).map_err(|_| bad("short header".into()))?;
        if head.unique != request.unique {
            return Err(bad(format!("unique {} for {}", head.unique, request.unique)));
        }
        if head.len != written {
            return Err(bad(format!("header says {} bytes, the used ring {written}", head.len)));
        }
        // FUSE errors are negated errnos, which Linux's /dev/fuse takes only above -1000
        // (fs/fuse/dev.c, fuse_dev_do_write, refuses others with EINVAL).
        if !(-999..=0).contains(&head.error) {
            return Err(bad(format!("error field {}, not a negated errno", head.error)));
        }
        Ok(Some(Completed {
            opcode: request.opcode,
            unique: request.unique,
            latency,
            errno: -head.error,
            payload: &self.reply[size_of::<OutHeader>()..],
            memory: &self.memory,
            pages: (self.layout.reply(slot) + PAGE, (written - copied) as usize),
        }))
    }
}
