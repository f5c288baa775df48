//! What the back-end state machine asks of its driver ([`Output`], [`Action`]) and what the driver
//! reports back ([`Completion`]).
//!
//! Ownership of descriptors: a token in an action is handed to the driver, which owns it from then
//! on (it keeps it, or closes it when it is done). A token core does not hand off is released with
//! [`Action::CloseFd`]. Every token core receives leaves it exactly once, by one of those two ways.

use super::outstanding::{BackendRequestId, BackendResult};
use crate::message::{
    BackendRequest, InflightDesc, Iotlb, Region, Reply, TransferDirection, TransferPhase, Uuid,
    VringBase,
};
use crate::{FdToken, ProtocolError, VirtioFeatures, VringIndex};

/// One thing the driver must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Encode and send this reply on the main socket, with its [`Reply::fds`].
    Reply(Reply<'a>),
    /// Carry out this action.
    Action(Action<'a>),
    /// Send this request on the back-end channel and report it with
    /// [`Backend::handle_backend_sent`](super::Backend::handle_backend_sent) (or the channel's
    /// loss with [`Backend::handle_backend_channel_lost`](super::Backend::handle_backend_channel_lost)).
    /// With `need_reply`, the front-end's answer follows on the channel: feed it to
    /// [`Backend::handle_backend_reply`](super::Backend::handle_backend_reply) when it comes,
    /// without waiting for it here. Tokens in the request ([`BackendRequest::fds`]) are handed
    /// off: the driver sends their descriptors and closes its own copies afterwards.
    BackendRequest {
        /// The request's name, for its result.
        id: BackendRequestId,
        /// The request.
        request: BackendRequest,
        /// NEED_REPLY is set: the front-end answers.
        need_reply: bool,
    },
    /// A back-end request ended: tell the device that asked for it. A descriptor in the outcome
    /// is handed off.
    BackendResult(BackendResult),
    /// Answer a request whose code core does not know with the `u64` failure `status` (its
    /// REPLY_ACK): encode it with [`encode_status`](crate::message::encode_status).
    Nack {
        /// The request's code, as it came.
        request: u32,
        /// The non-zero status.
        status: u64,
    },
    /// Close the connection after the outputs before this one; the error says why.
    Close(ProtocolError),
}

/// Where a started ring lives, in guest-physical addresses, and how to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringConfig {
    /// Queue size.
    pub size: u16,
    /// Guest address of the descriptor table (an IOVA with [`VringConfig::iova`]).
    pub descriptor: u64,
    /// Guest address of the available ring (packed: the driver event suppression area).
    pub available: u64,
    /// Guest address of the used ring (packed: the device event suppression area).
    pub used: u64,
    /// Guest address for dirty-logging used-ring writes, when VHOST_VRING_F_LOG is set.
    pub log: Option<u64>,
    /// Where to resume: next available index (and for packed rings, used index and wrap counters).
    pub base: VringBase,
    /// VIRTIO_F_RING_PACKED was negotiated.
    pub packed: bool,
    /// VIRTIO_RING_F_EVENT_IDX was negotiated.
    pub event_idx: bool,
    /// SET_VRING_ENDIAN asked for big-endian (legacy devices only).
    pub big_endian: bool,
    /// VIRTIO_F_ACCESS_PLATFORM was negotiated: `descriptor`, `available`, `used` are I/O
    /// virtual addresses the driver translates through the IOTLB (IOTLB_MSG), not guest
    /// addresses; core checked only that each ring's end does not overflow.
    pub iova: bool,
}

/// Work only the driver can do (I/O, mappings, device callbacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// A new SET_MEM_TABLE replaces the table: the [`Action::MapRegion`]s that follow, up to
    /// the request's completion, are the whole new table (none: the table is empty from now
    /// on). The driver swaps it in whole once every region is mapped; when one fails, it
    /// reports the failure with [`Completion::Done`] and keeps the table it had, as core does
    /// (a postcopy table that fails ends the connection instead).
    UnmapAll,
    /// Map `region` from `fd` (at `region.mmap_offset`) at `region.guest_address`. Report the
    /// outcome of all maps of one request with [`Completion::Done`].
    MapRegion {
        /// The region.
        region: Region,
        /// Its fd, handed off.
        fd: FdToken,
    },
    /// Unmap one region (REM_MEM_REG).
    UnmapRegion(Region),
    /// Map the dirty-log area; complete with [`Completion::Done`].
    MapLog {
        /// The shared-memory fd, handed off.
        fd: FdToken,
        /// Size of the area.
        mmap_size: u64,
        /// Offset in the fd.
        mmap_offset: u64,
    },
    /// Use this eventfd to signal log updates (SET_LOG_FD).
    SetLogFd(FdToken),
    /// VHOST_F_LOG_ALL was switched on or off through SET_FEATURES.
    SetLogging(bool),
    /// The virtio features acked by SET_FEATURES, for the device.
    FeaturesAcked(VirtioFeatures),
    /// Start processing a ring and complete with [`Completion::Done`]: a failure is the status
    /// of the SET_VRING_KICK that started it. If `enabled`, process the buffers already
    /// available right away: no kick may have been sent for them.
    StartVring {
        /// The ring.
        index: VringIndex,
        /// Where it is.
        config: VringConfig,
        /// Its kick eventfd, handed off; `None` means no fd (poll, or in-band VRING_KICK).
        kick: Option<FdToken>,
        /// Whether it starts enabled.
        enabled: bool,
    },
    /// A new kick fd for a ring that is already started (handed off; replaces the old one).
    ReplaceKick {
        /// The ring.
        index: VringIndex,
        /// The new kick eventfd; `None` for no fd.
        kick: Option<FdToken>,
    },
    /// New addresses for a started ring (QEMU toggles VHOST_VRING_F_LOG this way); complete with
    /// [`Completion::Done`]: honoured, or refused with a status.
    UpdateVring {
        /// The ring.
        index: VringIndex,
        /// The new configuration.
        config: VringConfig,
        /// The same ring as it runs, only its used-ring logging switched (QEMU sends the ring
        /// again with or without VHOST_VRING_F_LOG when a migration starts or ends), a log
        /// address, if any, being the used ring's own (used-ring writes are logged at the
        /// ring's guest-physical address). A device that offers VHOST_F_LOG_ALL honours at
        /// least this; anything else moves a running ring.
        logging_only: bool,
    },
    /// A started ring was enabled or disabled; when enabled, process available buffers now.
    SetVringEnabled {
        /// The ring.
        index: VringIndex,
        /// The new state.
        enabled: bool,
    },
    /// Stop processing a ring and complete with [`Completion::VringStopped`]. With `drain`, finish
    /// every in-flight request first; without, suspend them and record them in the inflight area.
    StopVring {
        /// The ring.
        index: VringIndex,
        /// Complete in-flight requests before stopping.
        drain: bool,
    },
    /// Use this call eventfd for the ring (handed off; `None`: no call notifications).
    SetVringCall {
        /// The ring.
        index: VringIndex,
        /// The eventfd.
        fd: Option<FdToken>,
    },
    /// Use this error eventfd for the ring (handed off; `None`: none).
    SetVringErr {
        /// The ring.
        index: VringIndex,
        /// The eventfd.
        fd: Option<FdToken>,
    },
    /// An in-band kick (VRING_KICK) for a started ring.
    Kick(VringIndex),
    /// Read `size` bytes of config space at `offset`; complete with [`Completion::ConfigRead`].
    ReadConfig {
        /// Offset.
        offset: u32,
        /// Bytes.
        size: u32,
    },
    /// Write config space; complete with [`Completion::Done`]. Unless `migration`, the device must
    /// refuse writes to read-only fields.
    WriteConfig {
        /// Offset.
        offset: u32,
        /// The bytes.
        data: &'a [u8],
        /// The write restores state during live migration.
        migration: bool,
    },
    /// The virtio device status byte (SET_STATUS).
    SetStatus(u8),
    /// Reset the device: stop every ring, forget acked features and device state, then
    /// complete with [`Completion::Done`] (a driver may finish the stops later, as for
    /// [`Action::StopVring`]). Memory mappings and descriptors of the session stay.
    ResetDevice,
    /// Allocate a zeroed shared-memory area of `mmap_size` bytes for inflight tracking and
    /// complete with [`Completion::InflightAllocated`].
    AllocateInflight {
        /// Bytes needed.
        mmap_size: u64,
        /// Queues covered.
        num_queues: u16,
        /// Entries per queue.
        queue_size: u16,
    },
    /// Map the front-end's inflight area; complete with [`Completion::Done`].
    SetInflight {
        /// Where it is in the fd.
        desc: InflightDesc,
        /// The fd, handed off.
        fd: FdToken,
    },
    /// Use this socket (handed off) as the back-end channel from now on, the old one closed;
    /// complete with [`Completion::Done`]: a failure (a descriptor that is not a stream socket)
    /// leaves no channel.
    SetBackendChannel(FdToken),
    /// An IOTLB update or invalidation; complete with [`Completion::Done`].
    Iotlb(Iotlb),
    /// Look up a shared object; complete with [`Completion::SharedObject`].
    GetSharedObject(Uuid),
    /// Start a device-state transfer over `fd` (handed off); complete with
    /// [`Completion::DeviceStateFd`].
    SetDeviceStateFd {
        /// Save or load.
        direction: TransferDirection,
        /// Migration phase.
        phase: TransferPhase,
        /// The pipe end.
        fd: FdToken,
    },
    /// Report whether the finished transfer succeeded; complete with [`Completion::Done`].
    CheckDeviceState,
    /// Broadcast a gratuitous ARP for this MAC (SEND_RARP).
    SendRarp([u8; 6]),
    /// The MTU the front-end configured (NET_SET_MTU).
    SetMtu(u16),
    /// POSTCOPY_ADVISE: open a userfaultfd; complete with [`Completion::Userfaultfd`].
    PostcopyAdvise,
    /// POSTCOPY_LISTEN: register guest memory with the userfaultfd from now on; complete with
    /// [`Completion::Done`]. While listening, a SET_MEM_TABLE completes with
    /// [`Completion::PostcopyMapped`].
    PostcopyListen,
    /// POSTCOPY_END: postcopy is over; complete with [`Completion::Done`].
    PostcopyEnd,
    /// Release a token core does not hand off.
    CloseFd(FdToken),
}

impl Action<'_> {
    /// The token this action hands off to the driver, if any (see the module docs: every token
    /// core receives leaves it exactly once, in an action, a reply or a back-end request).
    pub fn fds(&self) -> Option<FdToken> {
        match self {
            Self::MapRegion { fd, .. }
            | Self::MapLog { fd, .. }
            | Self::SetLogFd(fd)
            | Self::SetInflight { fd, .. }
            | Self::SetBackendChannel(fd)
            | Self::SetDeviceStateFd { fd, .. }
            | Self::CloseFd(fd) => Some(*fd),
            Self::StartVring { kick: fd, .. }
            | Self::ReplaceKick { kick: fd, .. }
            | Self::SetVringCall { fd, .. }
            | Self::SetVringErr { fd, .. } => *fd,
            _ => None,
        }
    }
}

/// The driver's answer to an action that has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion<'a> {
    /// The actions of the pending request succeeded (`Ok`) or failed with a non-zero status.
    Done(Result<(), u64>),
    /// The ring stopped; this is where it stopped.
    VringStopped {
        /// The ring.
        index: VringIndex,
        /// Its base, in the encoding the ring uses.
        base: VringBase,
    },
    /// The config bytes read; `None` if the device could not read them.
    ConfigRead(Option<&'a [u8]>),
    /// The inflight area, or the status of a failed allocation.
    InflightAllocated(Result<(FdToken, u64), u64>),
    /// The result of SET_DEVICE_STATE_FD: the back-end's own fd if it has one, or a failure.
    DeviceStateFd(Result<Option<FdToken>, u8>),
    /// The shared object's fd, or a failure status.
    SharedObject(Result<FdToken, u64>),
    /// POSTCOPY_ADVISE: the userfaultfd, or a failure status.
    Userfaultfd(Result<FdToken, u64>),
    /// SET_MEM_TABLE while postcopy listens: the regions were mapped and registered at these
    /// back-end addresses, one per region in table order; or a failure status.
    PostcopyMapped(Result<&'a [u64], u64>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Region;

    #[test]
    fn actions_name_the_token_they_hand_off() {
        let fd = FdToken(7);
        let region =
            Region { guest_address: 0, size: 0x1000, user_address: 0, mmap_offset: 0, xen: None };
        let index = VringIndex(0);
        assert_eq!(Action::MapRegion { region, fd }.fds(), Some(fd));
        assert_eq!(Action::CloseFd(fd).fds(), Some(fd));
        assert_eq!(Action::SetVringCall { index, fd: Some(fd) }.fds(), Some(fd));
        assert_eq!(Action::ReplaceKick { index, kick: None }.fds(), None);
        assert_eq!(Action::UnmapRegion(region).fds(), None);
        assert_eq!(Action::Kick(index).fds(), None);
    }
}
