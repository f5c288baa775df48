//! The VMM side a fuzzer chooses: front-end configurations, saved negotiations, rings, answers
//! to back-end requests, and every call on a [`Frontend`], made with fresh tokens and drained.

use arbitrary::Arbitrary;
use vhu_core::frontend::SUPPORTED_PROTOCOL_FEATURES;
use vhu_core::frontend::{BackendAnswer, Frontend, FrontendConfig, Negotiated, VringSetup};
use vhu_core::message::{
    ConfigFlags, InflightDesc, Iotlb, IotlbKind, IotlbPerm, Region, TransferDirection, Uuid,
    VringAddr, VringAddrFlags, VringBase,
};
use vhu_core::{FdToken, ProtocolFeatures, VirtioFeatures, VringIndex};

use super::{region, Drained, Model, RAM};

pub(crate) mod script;

/// How the fuzzer picks a saved negotiation for a restore.
#[derive(Arbitrary, Clone, Debug)]
pub(crate) struct Saved {
    /// Use the outcome of the last handshake, if there was one.
    pub(crate) last: bool,
    pub(crate) offered: u64,
    pub(crate) features: u64,
    pub(crate) protocol: u32,
    /// Keep only the protocol bits the front-end supports.
    pub(crate) supported_only: bool,
    pub(crate) queues: Option<u8>,
    pub(crate) slots: Option<u16>,
}

impl Saved {
    pub(crate) fn negotiated(&self, last: Option<Negotiated>) -> Negotiated {
        if let Some(last) = last.filter(|_| self.last) {
            return last;
        }
        let mut protocol = ProtocolFeatures::from_bits_retain(u64::from(self.protocol));
        if self.supported_only {
            protocol &= SUPPORTED_PROTOCOL_FEATURES;
        }
        Negotiated {
            offered_features: VirtioFeatures::from_bits_retain(self.offered),
            features: VirtioFeatures::from_bits_retain(self.features),
            protocol_features: protocol,
            queues: self.queues.map(u16::from),
            max_mem_slots: self.slots,
        }
    }
}

/// How the fuzzer configures a front-end.
#[derive(Arbitrary, Clone, Debug)]
pub(crate) struct Config {
    pub(crate) device_features: u64,
    /// Protocol features toggled from the default set.
    pub(crate) toggle: u32,
    pub(crate) protocol_features: bool,
}

impl Config {
    pub(crate) fn build(&self) -> FrontendConfig {
        let mut config =
            FrontendConfig::new(VirtioFeatures::from_bits_retain(self.device_features));
        config.protocol_features ^= ProtocolFeatures::from_bits_retain(u64::from(self.toggle));
        if !self.protocol_features {
            config.features.remove(VirtioFeatures::PROTOCOL_FEATURES);
        }
        config
    }
}

/// A ring as the VMM sets it up.
#[derive(Arbitrary, Clone, Debug)]
pub(crate) struct Ring {
    /// log2 of the queue size, or a raw size when above 15.
    pub(crate) size: u8,
    pub(crate) raw_size: u16,
    pub(crate) base: u32,
    pub(crate) log: bool,
    pub(crate) call: bool,
    pub(crate) kick: bool,
}

/// The VMM's answer to the oldest back-end request.
#[derive(Arbitrary, Clone, Debug)]
pub(crate) enum Answer {
    Done(Option<u8>),
    SharedObject(Option<u8>),
}

/// One call of the VMM on the front-end.
#[derive(Arbitrary, Clone, Debug)]
pub(crate) enum Vmm {
    Connect(bool),
    Restore(Saved, bool),
    SetMemTable(Vec<(u8, u8)>),
    AddRegion(u8, u8),
    /// Remove the region at this position of the front-end's table (or a made-up one).
    RemoveRegion(u8),
    StartVring(u8, Ring),
    StopVring(u8),
    StopVringSkipDrain(u8),
    SetVringEnable(u8, bool),
    SetVringCall(u8, bool),
    SetVringErr(u8, bool),
    SetVringAddr(u8, bool),
    VringKick(u8),
    SetFeatures(u64),
    /// The features the handshake acked, with these bits dropped.
    SetNegotiatedFeatures(u64),
    SetLogging(bool),
    GetConfig(u8, u16),
    SetConfig(u8, Vec<u8>, ConfigFlags),
    SetStatus(u8),
    GetStatus,
    ResetDevice,
    GetSharedObject(u8),
    SetDeviceStateFd(TransferDirection),
    CheckDeviceState,
    SetLogBase(u16),
    SetLogFd,
    GetInflightFd(u8, u16),
    SetInflightFd(u16),
    Answer(Answer),
    PostcopyAdvise,
    PostcopyListen,
    PostcopyEnd,
    ResetOwner,
    /// An IOTLB update (or, odd, an invalidation) of this many pages.
    IotlbMsg(u8, bool),
    /// A session description of 1 + this many bytes (or, past 250, an empty one).
    CreateCryptoSession(u8),
    CloseCryptoSession(u8),
}

impl Vmm {
    /// Makes the call, with fresh tokens from the model's ledger, and drains the front-end.
    pub(crate) fn apply(
        self,
        frontend: &mut Frontend,
        model: &mut Model,
        last: Option<Negotiated>,
    ) -> Drained {
        let mut fds = Vec::new();
        let mut fresh = |model: &mut Model| {
            let fd = model.ledger.fresh();
            fds.push(fd);
            fd
        };
        let v = VringIndex;
        let result = match self {
            Self::Connect(channel) => {
                let channel = channel.then(|| fresh(model));
                frontend.connect(channel)
            }
            Self::Restore(saved, channel) => {
                let channel = channel.then(|| fresh(model));
                frontend.restore(saved.negotiated(last), channel)
            }
            Self::SetMemTable(regions) => {
                let table: Vec<(Region, FdToken)> = regions
                    .iter()
                    .take(10)
                    .map(|(slot, pages)| (region(*slot, *pages), fresh(model)))
                    .collect();
                frontend.set_mem_table(&table)
            }
            Self::AddRegion(slot, pages) => {
                let fd = fresh(model);
                frontend.add_mem_region(region(slot, pages), fd)
            }
            Self::RemoveRegion(pick) => {
                let regions: Vec<Region> = frontend.regions().iter().copied().collect();
                let chosen = match regions.len() {
                    0 => region(pick, 1),
                    n => regions[usize::from(pick) % n],
                };
                frontend.remove_mem_region(chosen)
            }
            Self::StartVring(index, ring) => {
                let ring_base = RAM + (u64::from(index) << 16);
                let size = if ring.size > 15 { ring.raw_size } else { 1 << ring.size };
                let setup = VringSetup {
                    size,
                    base: VringBase(ring.base),
                    descriptor: ring_base,
                    available: ring_base + 0x4000,
                    used: ring_base + 0x8000,
                    log: ring.log.then_some(0x1000),
                    call: ring.call.then(|| fresh(model)),
                    kick: ring.kick.then(|| fresh(model)),
                };
                frontend.start_vring(v(index), setup)
            }
            Self::StopVring(index) => frontend.stop_vring(v(index)),
            Self::StopVringSkipDrain(index) => frontend.stop_vring_skip_drain(v(index)),
            Self::SetVringEnable(index, enable) => frontend.set_vring_enable(v(index), enable),
            Self::SetVringCall(index, fd) => {
                let fd = fd.then(|| fresh(model));
                frontend.set_vring_call(v(index), fd)
            }
            Self::SetVringErr(index, fd) => {
                let fd = fd.then(|| fresh(model));
                frontend.set_vring_err(v(index), fd)
            }
            Self::SetVringAddr(index, log) => {
                let ring_base = RAM + (u64::from(index) << 16);
                frontend.set_vring_addr(VringAddr {
                    index: v(index),
                    flags: if log { VringAddrFlags::LOG } else { VringAddrFlags::empty() },
                    descriptor: ring_base,
                    used: ring_base + 0x8000,
                    available: ring_base + 0x4000,
                    log: 0x1000,
                })
            }
            Self::VringKick(index) => frontend.vring_kick(v(index)),
            Self::SetFeatures(bits) => {
                frontend.set_features(VirtioFeatures::from_bits_retain(bits))
            }
            Self::SetNegotiatedFeatures(drop) => {
                let features = frontend.negotiated().map_or(VirtioFeatures::empty(), |n| {
                    n.features.difference(VirtioFeatures::from_bits_retain(drop))
                });
                frontend.set_features(features)
            }
            Self::SetLogging(on) => frontend.set_logging(on),
            Self::GetConfig(offset, size) => {
                frontend.get_config(u32::from(offset), u32::from(size % 300))
            }
            Self::SetConfig(offset, data, flags) => {
                let data: Vec<u8> = data.into_iter().take(300).collect();
                frontend.set_config(u32::from(offset), &data, flags)
            }
            Self::SetStatus(status) => frontend.set_status(status),
            Self::GetStatus => frontend.get_status(),
            Self::ResetDevice => frontend.reset_device(),
            Self::GetSharedObject(byte) => frontend.get_shared_object(Uuid([byte; 16])),
            Self::SetDeviceStateFd(direction) => {
                let fd = fresh(model);
                frontend.set_device_state_fd(direction, fd)
            }
            Self::CheckDeviceState => frontend.check_device_state(),
            Self::SetLogBase(pages) => {
                let fd = fresh(model);
                frontend.set_log_base(u64::from(pages) << 12, 0, fd)
            }
            Self::SetLogFd => {
                let fd = fresh(model);
                frontend.set_log_fd(fd)
            }
            Self::GetInflightFd(queues, size) => frontend.get_inflight_fd(u16::from(queues), size),
            Self::SetInflightFd(pages) => {
                let fd = fresh(model);
                let desc = InflightDesc {
                    mmap_size: u64::from(pages) << 12,
                    mmap_offset: 0,
                    num_queues: 2,
                    queue_size: 256,
                };
                frontend.set_inflight_fd(desc, fd)
            }
            Self::PostcopyAdvise => frontend.postcopy_advise(),
            Self::PostcopyListen => frontend.postcopy_listen(),
            Self::PostcopyEnd => frontend.postcopy_end(),
            Self::ResetOwner => frontend.reset_owner(),
            Self::IotlbMsg(pages, invalidate) => frontend.iotlb_msg(Iotlb {
                iova: 0x1000,
                size: u64::from(pages) << 12,
                user_address: RAM,
                perm: IotlbPerm::ReadWrite,
                kind: if invalidate { IotlbKind::Invalidate } else { IotlbKind::Update },
            }),
            Self::CreateCryptoSession(extra) => {
                let len = if extra > 250 { 0 } else { 1 + usize::from(extra) };
                let session: Vec<u8> = (0..len).map(|i| i as u8).collect();
                frontend.create_crypto_session(&session)
            }
            Self::CloseCryptoSession(id) => frontend.close_crypto_session(u64::from(id)),
            Self::Answer(answer) => {
                let answer = match answer {
                    Answer::Done(None) => BackendAnswer::Done(Ok(())),
                    Answer::Done(Some(status)) => BackendAnswer::Done(Err(u64::from(status))),
                    Answer::SharedObject(None) => BackendAnswer::SharedObject(Ok(fresh(model))),
                    Answer::SharedObject(Some(status)) => {
                        BackendAnswer::SharedObject(Err(u64::from(status)))
                    }
                };
                return model.answer(frontend, answer);
            }
        };
        model.call(frontend, &fds, result)
    }
}
