//! The encoder of [`Request`]: the inverse of its parser, refusing what the parser would refuse, so
//! every encoded frame parses.
//!
//! This module must not validate session state; it only writes bytes.

use super::codec::{self, Encoder};
use super::types::{config_header, index_nofd_word, LogBase, VringIndex};
use super::Request;
use crate::limits::{MAX_CRYPTO_SESSION_SIZE, MAX_MEM_TABLE_REGIONS, MAX_QUEUE_SIZE};
use crate::wire::{self, Code, FrontendCode, HeaderFlags, U32};
use crate::WireError;

impl Request<'_> {
    /// Encodes the request into `buf` and returns the frame length. `need_reply` sets NEED_REPLY.
    ///
    /// The descriptors to send alongside are [`Request::fds`].
    pub fn encode_into(&self, need_reply: bool, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut flags = HeaderFlags::VERSION_1;
        flags.set(HeaderFlags::NEED_REPLY, need_reply);
        let code = self.code();
        self.check_encodable(code)?;
        let mut e = Encoder::new(buf, code.as_u32(), flags);
        let state = |e: &mut Encoder<'_>, index: VringIndex, num: u32| {
            e.put_value(&wire::VringState { index: U32::new(index.as_u32()), num: U32::new(num) });
        };
        match *self {
            Self::GetFeatures
            | Self::SetOwner
            | Self::ResetOwner
            | Self::GetProtocolFeatures
            | Self::GetQueueNum
            | Self::PostcopyAdvise
            | Self::PostcopyListen
            | Self::PostcopyEnd
            | Self::ResetDevice
            | Self::GetMaxMemSlots
            | Self::GetStatus
            | Self::CheckDeviceState
            | Self::GetShmemConfig
            | Self::SetLogFd(_)
            | Self::SetBackendReqFd(_)
            | Self::GpuSetSocket(_) => {}
            Self::SetFeatures(features) => e.put_u64(features.bits()),
            Self::SetProtocolFeatures(features) => e.put_u64(features.bits()),
            Self::SetMemTable { table, .. } => table.encode(&mut e),
            Self::SetLogBase(LogBase::Shared { mmap_size, mmap_offset, .. }) => {
                e.put_u64(mmap_size);
                e.put_u64(mmap_offset);
            }
            Self::SetLogBase(LogBase::Legacy { base }) => e.put_u64(base),
            Self::SetVringNum { index, num } => state(&mut e, index, u32::from(num)),
            Self::SetVringAddr(addr) => e.put_value(&addr.to_wire()),
            Self::SetVringBase { index, base } => state(&mut e, index, base.0),
            Self::GetVringBase { index }
            | Self::VringKick { index }
            | Self::GetVringBaseSkipDrain { index } => state(&mut e, index, 0),
            Self::SetVringKick(v) | Self::SetVringCall(v) | Self::SetVringErr(v) => {
                e.put_u64(index_nofd_word(v.index, v.fd));
            }
            Self::SetVringEnable { index, enable } => state(&mut e, index, u32::from(enable)),
            Self::SetVringEndian { index, big_endian } => {
                state(&mut e, index, u32::from(big_endian));
            }
            Self::SendRarp(mac) => {
                let mut word = [0u8; 8];
                word[..6].copy_from_slice(&mac);
                e.put(&word);
            }
            Self::NetSetMtu(mtu) => e.put_u64(u64::from(mtu)),
            Self::IotlbMsg(msg) => e.put_value(&msg.to_wire()),
            Self::GetConfig { offset, size, flags } => {
                e.put_value(&config_header(offset, size as usize, flags));
                e.put_zeros(size as usize);
            }
            Self::SetConfig { offset, flags, data } => {
                e.put_value(&config_header(offset, data.len(), flags));
                e.put(data);
            }
            Self::CreateCryptoSession(bytes) => e.put(bytes),
            Self::CloseCryptoSession(id) => e.put_u64(id),
            Self::GetInflightFd(desc) | Self::SetInflightFd { desc, .. } => {
                e.put_value(&desc.to_wire());
            }
            Self::AddMemReg { region, .. } | Self::RemMemReg { region, .. } => {
                e.put_u64(0);
                region.encode(&mut e);
            }
            Self::SetStatus(status) => e.put_u64(u64::from(status)),
            Self::GetSharedObject(uuid) => e.put(&uuid.0),
            Self::SetDeviceStateFd { direction, phase, .. } => {
                e.put_value(&wire::DeviceStateTransfer {
                    direction: U32::new(direction as u32),
                    phase: U32::new(phase as u32),
                });
            }
        }
        e.finish()
    }

    /// Refuses to encode what the parser would refuse, so every encoded frame parses.
    fn check_encodable(&self, code: FrontendCode) -> Result<(), WireError> {
        let code = Code::Frontend(code);
        let too_long = |what, got, max| Err(WireError::TooLong { code, what, got, max });
        match *self {
            Self::SetMemTable { table, fds } => {
                if table.len() > MAX_MEM_TABLE_REGIONS {
                    return too_long("region count", table.len(), MAX_MEM_TABLE_REGIONS);
                }
                codec::fds_exact(code, fds, table.len())
            }
            Self::SetVringNum { num, .. } if u32::from(num) > MAX_QUEUE_SIZE => {
                too_long("queue size", usize::from(num), MAX_QUEUE_SIZE as usize)
            }
            Self::GetConfig { size, .. } if size as usize > crate::limits::MAX_CONFIG_SIZE => {
                too_long("config size", size as usize, crate::limits::MAX_CONFIG_SIZE)
            }
            Self::SetConfig { data, .. } if data.len() > crate::limits::MAX_CONFIG_SIZE => {
                too_long("config size", data.len(), crate::limits::MAX_CONFIG_SIZE)
            }
            Self::CreateCryptoSession(bytes)
                if bytes.is_empty() || bytes.len() > MAX_CRYPTO_SESSION_SIZE =>
            {
                too_long("crypto session", bytes.len(), MAX_CRYPTO_SESSION_SIZE)
            }
            _ => Ok(()),
        }
    }
}
