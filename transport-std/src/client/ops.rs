//! The client's blocking VMM operations: each one front-end call, then [`io::settle`], then the
//! answer the call waits for picked out of the events.
//!
//! Descriptors the caller passes are duplicated into the client's table (the caller keeps its
//! own), except a device-state transfer fd, which is taken, since the transfer ends when every
//! copy of the other end is closed. If the state machine refuses a call, the duplicates are
//! closed again. This module must not decide what is sent: the state machine queues the
//! requests of each call.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use vhu_core::frontend::{Frontend, FrontendConfig, FrontendError, Negotiated, VringSetup};
use vhu_core::message::{
    ConfigFlags, InflightDesc, Region, TransferDirection, Uuid, VringAddr, VringBase,
};
use vhu_core::{FdToken, FrontendCode, ProtocolFeatures, VirtioFeatures, VringIndex};

use super::io::{self, Answer, Channel};
use super::shmem::page_size;
use super::{Client, ClientError, SharedRegion};

/// Everything needed to start one ring, with borrowed eventfds (the client sends duplicates).
#[derive(Clone, Copy, Debug)]
pub struct VringStart<'a> {
    /// Queue size.
    pub size: u16,
    /// Where to resume: [`VringBase::split`]`(0)` for a new ring, or what
    /// [`Client::stop_vring`] returned.
    pub base: VringBase,
    /// User address of the descriptor table.
    pub descriptor: u64,
    /// User address of the used ring.
    pub used: u64,
    /// User address of the available ring.
    pub available: u64,
    /// Guest-physical address for dirty-logging used-ring writes.
    pub log: Option<u64>,
    /// The call eventfd; `None` sends none.
    pub call: Option<BorrowedFd<'a>>,
    /// The kick eventfd; `None` sends none (the back-end polls).
    pub kick: Option<BorrowedFd<'a>>,
}

impl<'a> VringStart<'a> {
    /// A new split ring of `size` entries laid out contiguously from user address `descriptor`
    /// (descriptor table, then the available ring, then the used ring 4-byte aligned, as the
    /// virtio split-ring layout has them), starting at base 0.
    pub fn split(
        size: u16,
        descriptor: u64,
        call: impl Into<Option<BorrowedFd<'a>>>,
        kick: impl Into<Option<BorrowedFd<'a>>>,
    ) -> Self {
        let n = u64::from(size);
        let available = descriptor.saturating_add(16 * n);
        let used = available.saturating_add(6 + 2 * n).saturating_add(3) & !3;
        Self {
            size,
            base: VringBase::split(0),
            descriptor,
            used,
            available,
            log: None,
            call: call.into(),
            kick: kick.into(),
        }
    }
}

/// Tokens of descriptors a call hands off.
type Tokens = Vec<FdToken>;

impl Client {
    /// Puts a duplicate of `fd` in the table.
    pub(super) fn dup(&mut self, fd: BorrowedFd<'_>) -> Result<FdToken, ClientError> {
        let owned = fd
            .try_clone_to_owned()
            .map_err(|source| ClientError::Io { what: "duplicating a descriptor", source })?;
        Ok(self.io.fds.insert(owned)?)
    }

    /// Makes one front-end call and settles it. `tokens` are released if the call is refused.
    pub(super) fn call(
        &mut self,
        tokens: &[FdToken],
        op: impl FnOnce(&mut Frontend) -> Result<(), FrontendError>,
    ) -> Result<Vec<Answer>, ClientError> {
        let outcome = self.settle_call(tokens, op)?;
        match outcome.failed {
            Some(error) => Err(ClientError::Failed(error)),
            None => Ok(outcome.answers),
        }
    }

    /// [`Client::call`], returning every answer and the first failure together.
    fn settle_call(
        &mut self,
        tokens: &[FdToken],
        op: impl FnOnce(&mut Frontend) -> Result<(), FrontendError>,
    ) -> Result<io::Outcome, ClientError> {
        self.settle_call_within(tokens, op, self.io.timeout)
    }

    /// [`Client::settle_call`], waiting at most `wait` for the answers.
    fn settle_call_within(
        &mut self,
        tokens: &[FdToken],
        op: impl FnOnce(&mut Frontend) -> Result<(), FrontendError>,
        wait: Duration,
    ) -> Result<io::Outcome, ClientError> {
        if self.io.broken {
            for token in tokens {
                self.io.fds.release(*token);
            }
            return Err(ClientError::Broken);
        }
        if let Err(error) = op(&mut self.frontend) {
            for token in tokens {
                self.io.fds.release(*token);
            }
            return Err(ClientError::Refused(error));
        }
        io::settle(&mut self.frontend, &mut self.io, wait)
    }

    /// A call that waits for one kind of answer.
    pub(super) fn ask<T>(
        &mut self,
        code: FrontendCode,
        tokens: &[FdToken],
        op: impl FnOnce(&mut Frontend) -> Result<(), FrontendError>,
        pick: impl FnMut(Answer) -> Option<T>,
    ) -> Result<T, ClientError> {
        let answers = self.call(tokens, op)?;
        answers.into_iter().find_map(pick).ok_or(ClientError::NoAnswer(code))
    }

    /// Creates the back-end channel's socket pair and returns the token of the end to send.
    fn open_channel(&mut self) -> Result<FdToken, ClientError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|source| ClientError::Io { what: "creating the back-end channel", source })?;
        let what = "setting the back-end channel timeouts";
        ours.set_read_timeout(Some(self.io.timeout))
            .and_then(|()| ours.set_write_timeout(Some(self.io.timeout)))
            .map_err(|source| ClientError::Io { what, source })?;
        let token = self.io.fds.insert(theirs.into())?;
        self.io.channel = Some(Channel::new(ours));
        Ok(token)
    }

    /// Starts a handshake on a fresh state machine wanting `config`.
    fn open(
        &mut self,
        config: FrontendConfig,
        start: impl FnOnce(&mut Frontend, Option<FdToken>) -> Result<(), FrontendError>,
    ) -> Result<Negotiated, ClientError> {
        if self.started {
            return Err(ClientError::Refused(FrontendError::AlreadyConnected));
        }
        self.frontend.configure(config).map_err(ClientError::Refused)?;
        let channel = if config.protocol_features.contains(ProtocolFeatures::BACKEND_REQ) {
            Some(self.open_channel()?)
        } else {
            None
        };
        let tokens: Vec<FdToken> = channel.into_iter().collect();
        let result = self.ask(
            FrontendCode::SetFeatures,
            &tokens,
            |f| start(f, channel),
            |a| match a {
                Answer::Connected(negotiated) => Some(negotiated),
                _ => None,
            },
        );
        // A refusal sent nothing: the handshake may be tried again.
        self.started = !matches!(result, Err(ClientError::Refused(_)));
        let acked = result
            .as_ref()
            .is_ok_and(|n| n.protocol_features.contains(ProtocolFeatures::BACKEND_REQ));
        if !acked {
            self.io.channel = None;
        }
        result
    }

    /// The connect handshake: acks the offered ∩ wanted virtio and protocol features (the state
    /// machine's rules decide which). Wanting BACKEND_REQ opens a back-end channel.
    pub fn handshake(
        &mut self,
        features: VirtioFeatures,
        protocol_features: ProtocolFeatures,
    ) -> Result<Negotiated, ClientError> {
        let config = FrontendConfig {
            features,
            protocol_features,
            host_page_size: page_size(),
            rings_per_queue: self.rings_per_queue,
        };
        self.open(config, Frontend::connect)
    }

    /// The restore handshake after a reconnect or migration: re-establishes `saved` without
    /// asking the back-end anything.
    pub fn restore(&mut self, saved: Negotiated) -> Result<Negotiated, ClientError> {
        let config = FrontendConfig {
            features: saved.features,
            protocol_features: saved.protocol_features,
            host_page_size: page_size(),
            rings_per_queue: self.rings_per_queue,
        };
        self.open(config, |f, channel| f.restore(saved, channel))
    }

    /// The connect handshake for a VMM that set this back-end up before (a VMM restarted or
    /// migrated, a back-end restarted): asks what the back-end offers (GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, ...) and acks the `saved` features again. Back-ends that decide
    /// whether to ack from the GET_* they answered (rust-vmm's `vhost`, crosvm) never ack what
    /// [`Client::restore`] sends; this works with every back-end. Fails with
    /// [`ClientError::FeaturesGone`] when the back-end no longer offers all of `saved` (it was
    /// then set up with what remains; the VMM cannot resume its guest on it).
    pub fn reconnect(&mut self, saved: Negotiated) -> Result<Negotiated, ClientError> {
        let negotiated = self.handshake(saved.features, saved.protocol_features)?;
        // VHOST_F_LOG_ALL is never acked at a handshake: logging starts off, as after restore.
        let features =
            saved.features.difference(VirtioFeatures::LOG_ALL).difference(negotiated.features);
        let protocol_features = saved.protocol_features.difference(negotiated.protocol_features);
        if features.is_empty() && protocol_features.is_empty() {
            Ok(negotiated)
        } else {
            Err(ClientError::FeaturesGone { features, protocol_features })
        }
    }

    /// SET_FEATURES with a new acked set (after [`Client::reset_device`], or what the guest
    /// driver accepted).
    pub fn set_features(&mut self, features: VirtioFeatures) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_features(features)).map(drop)
    }

    /// SET_LOG_BASE (LOG_SHMFD): shares `size` bytes of `fd` from `offset` as the dirty log,
    /// one bit per 4 KiB guest-physical page; returns once the back-end mapped it.
    pub fn set_log_base(
        &mut self,
        fd: BorrowedFd<'_>,
        size: u64,
        offset: u64,
    ) -> Result<(), ClientError> {
        let token = self.dup(fd)?;
        self.call(&[token], |f| f.set_log_base(size, offset, token)).map(drop)
    }

    /// SET_LOG_FD: an eventfd the back-end signals when it marks a page that was clean.
    pub fn set_log_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), ClientError> {
        let token = self.dup(fd)?;
        self.call(&[token], |f| f.set_log_fd(token)).map(drop)
    }

    /// Switches dirty logging on or off: SET_FEATURES with or without VHOST_F_LOG_ALL (spec
    /// "Migration"). Share the log with [`Client::set_log_base`] first.
    pub fn set_logging(&mut self, on: bool) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_logging(on)).map(drop)
    }

    /// A memory table with duplicates of the regions' descriptors in the table, and their
    /// tokens; nothing stays in the table if one cannot be duplicated.
    pub(super) fn dup_table(
        &mut self,
        regions: &[SharedRegion<'_>],
    ) -> Result<(Vec<(Region, FdToken)>, Tokens), ClientError> {
        let mut table = Vec::with_capacity(regions.len());
        for shared in regions {
            match self.dup(shared.fd) {
                Ok(token) => table.push((shared.region, token)),
                Err(error) => {
                    for (_, token) in table {
                        self.io.fds.release(token);
                    }
                    return Err(error);
                }
            }
        }
        let tokens = table.iter().map(|(_, t)| *t).collect();
        Ok((table, tokens))
    }

    /// SET_MEM_TABLE with these regions (at most 8). While postcopy listens it is refused: the
    /// back-end's answer then needs registering, which [`Client::postcopy_set_mem_table`] does.
    pub fn set_mem_table(&mut self, regions: &[SharedRegion<'_>]) -> Result<(), ClientError> {
        if self.frontend.is_postcopy_bound() {
            let code = FrontendCode::SetMemTable;
            let error = FrontendError::PostcopyOutOfOrder { code, needs: "POSTCOPY_END" };
            return Err(ClientError::Refused(error));
        }
        let (table, tokens) = self.dup_table(regions)?;
        self.call(&tokens, |f| f.set_mem_table(&table)).map(drop)
    }

    /// ADD_MEM_REG (CONFIGURE_MEM_SLOTS).
    pub fn add_mem_region(&mut self, shared: SharedRegion<'_>) -> Result<(), ClientError> {
        let token = self.dup(shared.fd)?;
        self.call(&[token], |f| f.add_mem_region(shared.region, token)).map(drop)
    }

    /// REM_MEM_REG (CONFIGURE_MEM_SLOTS).
    pub fn remove_mem_region(&mut self, region: Region) -> Result<(), ClientError> {
        self.call(&[], |f| f.remove_mem_region(region)).map(drop)
    }

    /// Starts a stopped ring (its size, base, addresses, call and kick, then enable), then kicks
    /// it once.
    pub fn start_vring(
        &mut self,
        index: VringIndex,
        start: VringStart<'_>,
    ) -> Result<(), ClientError> {
        let call = start.call.map(|fd| self.dup(fd)).transpose()?;
        let kick = match start.kick.map(|fd| self.dup(fd)).transpose() {
            Ok(kick) => kick,
            Err(error) => {
                if let Some(token) = call {
                    self.io.fds.release(token);
                }
                return Err(error);
            }
        };
        let setup = VringSetup {
            size: start.size,
            base: start.base,
            descriptor: start.descriptor,
            used: start.used,
            available: start.available,
            log: start.log,
            call,
            kick,
        };
        let tokens: Vec<FdToken> = call.into_iter().chain(kick).collect();
        self.call(&tokens, |f| f.start_vring(index, setup))?;
        // One kick once the ring is started and enabled, as front-ends should give it (spec
        // "Starting and stopping rings"): a back-end of the older wording starts a ring at its
        // first kick, and a ring resumed after a stop or a migration has buffers waiting that
        // the guest will not kick for (an RX-only queue). A full counter already kicks.
        if let Some(kick) = start.kick {
            // Only when the write cannot block: the descriptor is the caller's, and a blocking
            // one with a full counter (or a full pipe) would hold this call for good.
            let mut fds = [PollFd::new(&kick, PollFlags::OUT)];
            if poll(&mut fds, Some(&crate::timespec(Duration::ZERO))).is_ok_and(|ready| ready > 0) {
                let _ = rustix::io::write(kick, &1u64.to_ne_bytes());
            }
        }
        Ok(())
    }

    /// Stops a ring and returns the base to resume it from. A back-end that refuses the
    /// SET_VRING_ENABLE(0) sent first still stops the ring at GET_VRING_BASE (spec "Starting and
    /// stopping rings"): its base is returned, since nothing else could resume the ring.
    pub fn stop_vring(&mut self, index: VringIndex) -> Result<VringBase, ClientError> {
        let code = FrontendCode::GetVringBase;
        self.stopped(code, index, |f| f.stop_vring(index))
    }

    /// GET_VRING_BASE_SKIP_DRAIN (GET_VRING_BASE_SKIP_DRAIN): stops a ring without waiting for
    /// its requests in flight, which stay recorded in the inflight area; returns the base.
    pub fn stop_vring_skip_drain(&mut self, index: VringIndex) -> Result<VringBase, ClientError> {
        let code = FrontendCode::GetVringBaseSkipDrain;
        self.stopped(code, index, |f| f.stop_vring_skip_drain(index))
    }

    /// A ring's stop: the base GET_VRING_BASE (`code`) answered, whatever came before it.
    fn stopped(
        &mut self,
        code: FrontendCode,
        index: VringIndex,
        op: impl FnOnce(&mut Frontend) -> Result<(), FrontendError>,
    ) -> Result<VringBase, ClientError> {
        // The back-end answers once the ring's requests in flight are done.
        let outcome = self.settle_call_within(&[], op, self.io.drain_wait())?;
        let base = outcome.answers.into_iter().find_map(|a| match a {
            Answer::VringStopped { index: i, base } if i == index => Some(base),
            _ => None,
        });
        match (base, outcome.failed) {
            (Some(base), _) => Ok(base),
            (None, Some(error)) => Err(ClientError::Failed(error)),
            (None, None) => Err(ClientError::NoAnswer(code)),
        }
    }

    /// SET_VRING_ENABLE.
    pub fn set_vring_enable(&mut self, index: VringIndex, enable: bool) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_vring_enable(index, enable)).map(drop)
    }

    /// GET_CONFIG (CONFIG): `size` bytes of config space at `offset`.
    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>, ClientError> {
        self.ask(
            FrontendCode::GetConfig,
            &[],
            |f| f.get_config(offset, size),
            |a| match a {
                Answer::ConfigRead { offset: o, data } if o == offset => Some(data),
                _ => None,
            },
        )
    }

    /// SET_CONFIG (CONFIG).
    pub fn set_config(
        &mut self,
        offset: u32,
        data: &[u8],
        flags: ConfigFlags,
    ) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_config(offset, data, flags)).map(drop)
    }

    /// RESET_DEVICE (RESET_DEVICE): every ring stops; re-send the features before restarting.
    pub fn reset_device(&mut self) -> Result<(), ClientError> {
        // Running rings stop first, their requests in flight done.
        let outcome = self.settle_call_within(&[], Frontend::reset_device, self.io.drain_wait())?;
        if let Some(error) = outcome.failed {
            return Err(ClientError::Failed(error));
        }
        self.io.handler.device_reset();
        Ok(())
    }

    /// RESET_OWNER, deprecated, for back-ends without RESET_DEVICE: only with every ring
    /// stopped; re-send the features and the memory table before starting rings again.
    pub fn reset_owner(&mut self) -> Result<(), ClientError> {
        self.call(&[], Frontend::reset_owner).map(drop)
    }

    /// SET_STATUS (STATUS).
    pub fn set_status(&mut self, status: u8) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_status(status)).map(drop)
    }

    /// GET_STATUS (STATUS).
    pub fn get_status(&mut self) -> Result<u8, ClientError> {
        self.ask(FrontendCode::GetStatus, &[], Frontend::get_status, |a| match a {
            Answer::Status(status) => Some(status),
            _ => None,
        })
    }

    /// SET_VRING_CALL on a ring, at any time: a new call eventfd, or none (the back-end then
    /// stops signalling, as while a guest masks the queue's interrupt).
    pub fn set_vring_call(
        &mut self,
        index: VringIndex,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ClientError> {
        self.with_optional_fd(fd, |f, token| f.set_vring_call(index, token))
    }

    /// SET_VRING_ERR on a ring, at any time: a new error eventfd, or none.
    pub fn set_vring_err(
        &mut self,
        index: VringIndex,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ClientError> {
        self.with_optional_fd(fd, |f, token| f.set_vring_err(index, token))
    }

    /// A call that hands off a duplicate of `fd`, if there is one.
    fn with_optional_fd(
        &mut self,
        fd: Option<BorrowedFd<'_>>,
        op: impl FnOnce(&mut Frontend, Option<FdToken>) -> Result<(), FrontendError>,
    ) -> Result<(), ClientError> {
        let token = fd.map(|fd| self.dup(fd)).transpose()?;
        let tokens: Vec<FdToken> = token.into_iter().collect();
        self.call(&tokens, |f| op(f, token)).map(drop)
    }

    /// SET_VRING_ADDR on its own (to switch a started ring's used-ring logging, say).
    pub fn set_vring_addr(&mut self, addr: VringAddr) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_vring_addr(addr)).map(drop)
    }

    /// VRING_KICK (INBAND_NOTIFICATIONS): an in-band kick, which also starts a stopped ring.
    pub fn vring_kick(&mut self, index: VringIndex) -> Result<(), ClientError> {
        self.call(&[], |f| f.vring_kick(index)).map(drop)
    }

    /// SEND_RARP (RARP): a virtio-net back-end announces `mac` (after a migration).
    pub fn send_rarp(&mut self, mac: [u8; 6]) -> Result<(), ClientError> {
        self.call(&[], |f| f.send_rarp(mac)).map(drop)
    }

    /// NET_SET_MTU (NET_MTU).
    pub fn net_set_mtu(&mut self, mtu: u16) -> Result<(), ClientError> {
        self.call(&[], |f| f.net_set_mtu(mtu)).map(drop)
    }

    /// SET_VRING_ENDIAN (CROSS_ENDIAN): a legacy ring's byte order, before it starts.
    pub fn set_vring_endian(
        &mut self,
        index: VringIndex,
        big_endian: bool,
    ) -> Result<(), ClientError> {
        self.call(&[], |f| f.set_vring_endian(index, big_endian)).map(drop)
    }

    /// GPU_SET_SOCKET: hands the back-end the vhost-user-gpu socket (a duplicate of `fd`).
    pub fn gpu_set_socket(&mut self, fd: BorrowedFd<'_>) -> Result<(), ClientError> {
        let token = self.dup(fd)?;
        self.call(&[token], |f| f.gpu_set_socket(token)).map(drop)
    }

    /// GET_SHMEM_CONFIG (SHMEM): the size of each shared-memory region, by shmid (0: none).
    pub fn get_shmem_config(&mut self) -> Result<Vec<u64>, ClientError> {
        self.ask(FrontendCode::GetShmemConfig, &[], Frontend::get_shmem_config, |a| match a {
            Answer::ShmemConfig(sizes) => Some(sizes),
            _ => None,
        })
    }

    /// SET_DEVICE_STATE_FD (DEVICE_STATE), every ring stopped: the back-end saves into or loads
    /// from `fd` (taken). Returns the back-end's own end to transfer over instead, if it sent one.
    pub fn set_device_state_fd(
        &mut self,
        direction: TransferDirection,
        fd: OwnedFd,
    ) -> Result<Option<OwnedFd>, ClientError> {
        let token = self.io.fds.insert(fd)?;
        let code = FrontendCode::SetDeviceStateFd;
        self.ask(
            code,
            &[token],
            |f| f.set_device_state_fd(direction, token),
            |a| match a {
                Answer::DeviceStateFd { fd, .. } => Some(fd),
                _ => None,
            },
        )
    }

    /// CHECK_DEVICE_STATE (DEVICE_STATE), once the transfer reached EOF.
    pub fn check_device_state(&mut self) -> Result<(), ClientError> {
        self.call(&[], Frontend::check_device_state).map(drop)
    }

    /// GET_INFLIGHT_FD (INFLIGHT_SHMFD): the inflight area the back-end allocated for
    /// `num_queues` queues of `queue_size`, and its descriptor (none when the size is 0).
    pub fn get_inflight_fd(
        &mut self,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<(InflightDesc, Option<OwnedFd>), ClientError> {
        let code = FrontendCode::GetInflightFd;
        self.ask(
            code,
            &[],
            |f| f.get_inflight_fd(num_queues, queue_size),
            |a| match a {
                Answer::InflightFd { desc, fd } => Some((desc, fd)),
                _ => None,
            },
        )
    }

    /// SET_INFLIGHT_FD (INFLIGHT_SHMFD): hands the inflight area back to the back-end.
    pub fn set_inflight_fd(
        &mut self,
        desc: InflightDesc,
        fd: BorrowedFd<'_>,
    ) -> Result<(), ClientError> {
        let token = self.dup(fd)?;
        self.call(&[token], |f| f.set_inflight_fd(desc, token)).map(drop)
    }

    /// GET_SHARED_OBJECT (SHARED_OBJECT): the object's dma-buf descriptor.
    pub fn get_shared_object(&mut self, uuid: Uuid) -> Result<OwnedFd, ClientError> {
        let code = FrontendCode::GetSharedObject;
        self.ask(
            code,
            &[],
            |f| f.get_shared_object(uuid),
            |a| match a {
                Answer::SharedObject { uuid: u, fd } if u == uuid => Some(fd),
                _ => None,
            },
        )
    }
}
