//! What a back-end offers, asked message by message as a front-end's handshake does
//! (spec "Front-end message types"): features, protocol features, queue count, memory slots,
//! config space, shared-memory regions. Only what the back-end offers is asked.

use vhu_transport_std::vhu_core::wire::FrontendCode;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures};

use crate::raw::Raw;

/// Config sizes tried, largest first: GET_CONFIG fails for more than the device has.
const CONFIG_SIZES: [u32; 9] = [256, 128, 64, 60, 40, 36, 32, 16, 8];

#[derive(Debug, Default)]
pub(crate) struct Offers {
    pub(crate) features: u64,
    pub(crate) protocol: Option<u64>,
    pub(crate) queues: Option<u64>,
    pub(crate) mem_slots: Option<u64>,
    pub(crate) config: Option<Vec<u8>>,
    pub(crate) shmem: Option<Vec<u64>>,
    /// The largest power-of-two ring size SET_VRING_NUM accepts (asked with REPLY_ACK).
    pub(crate) max_queue_size: Option<u32>,
}

impl Offers {
    pub(crate) fn protocol_features(&self) -> ProtocolFeatures {
        ProtocolFeatures::from_bits_retain(self.protocol.unwrap_or(0))
    }

    pub(crate) fn offers(&self, p: ProtocolFeatures) -> bool {
        self.protocol_features().contains(p)
    }
}

/// Asks everything on a fresh connection; `Err` when even GET_FEATURES is not answered.
pub(crate) fn probe(raw: &mut Raw) -> Result<Offers, String> {
    let features = raw
        .ask(FrontendCode::GetFeatures, 0, &[])
        .and_then(|a| a.u64())
        .ok_or("GET_FEATURES was not answered")?;
    let mut offers = Offers { features, ..Offers::default() };
    if VirtioFeatures::from_bits_retain(features).contains(VirtioFeatures::PROTOCOL_FEATURES) {
        offers.protocol = raw.ask(FrontendCode::GetProtocolFeatures, 0, &[]).and_then(|a| a.u64());
    }
    let _ = raw.send(FrontendCode::SetOwner.as_u32(), 0, &[]);
    let protocol = offers.protocol_features();
    // Acked so that the GET_* below are allowed; nothing this tool does needs more.
    let acked = protocol
        & (ProtocolFeatures::MQ
            | ProtocolFeatures::REPLY_ACK
            | ProtocolFeatures::CONFIG
            | ProtocolFeatures::CONFIGURE_MEM_SLOTS
            | ProtocolFeatures::SHMEM);
    if offers.protocol.is_some() {
        let _ = raw.set_u64(FrontendCode::SetProtocolFeatures, acked.bits(), 0);
    }
    if acked.contains(ProtocolFeatures::MQ) {
        offers.queues = raw.ask(FrontendCode::GetQueueNum, 0, &[]).and_then(|a| a.u64());
    }
    if acked.contains(ProtocolFeatures::CONFIGURE_MEM_SLOTS) {
        offers.mem_slots = raw.ask(FrontendCode::GetMaxMemSlots, 0, &[]).and_then(|a| a.u64());
    }
    if acked.contains(ProtocolFeatures::CONFIG) {
        offers.config = config(raw);
    }
    if acked.contains(ProtocolFeatures::REPLY_ACK) {
        offers.max_queue_size = max_queue_size(raw);
    }
    if acked.contains(ProtocolFeatures::SHMEM) {
        offers.shmem = raw.ask(FrontendCode::GetShmemConfig, 0, &[]).map(|a| {
            let n = a.payload.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            a.payload
                .get(8..)
                .unwrap_or_default()
                .chunks_exact(8)
                .take(n as usize)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect()
        });
    }
    Ok(offers)
}

/// The largest power of two from 32 768 down to 64 that SET_VRING_NUM on ring 0 acknowledges
/// with 0 (the spec has no message for the maximum; a back-end refuses sizes beyond it).
fn max_queue_size(raw: &mut Raw) -> Option<u32> {
    (6..=15).rev().map(|shift| 1u32 << shift).find(|size| {
        let mut state = [0u8; 8];
        state[4..].copy_from_slice(&size.to_le_bytes());
        raw.ask(FrontendCode::SetVringNum, crate::raw::NEED_REPLY, &state)
            .is_some_and(|a| a.u64() == Some(0))
    })
}

/// The config space: the largest of [`CONFIG_SIZES`] the back-end reads back whole.
fn config(raw: &mut Raw) -> Option<Vec<u8>> {
    for size in CONFIG_SIZES {
        let mut payload = Vec::with_capacity(12 + size as usize);
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(&size.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.resize(12 + size as usize, 0);
        let answer = raw.ask(FrontendCode::GetConfig, 0, &payload)?;
        if answer.payload.len() == 12 + size as usize {
            return Some(answer.payload[12..].to_vec());
        }
    }
    None
}

/// Names of the set bits of a feature word: the spec's, or `bit N` for device-specific ones.
pub(crate) fn virtio_names(bits: u64) -> Vec<String> {
    let known = VirtioFeatures::from_bits_retain(bits);
    let mut names: Vec<String> = known.iter_names().map(|(n, _)| n.to_string()).collect();
    let named = known.iter_names().fold(0u64, |acc, (_, f)| acc | f.bits());
    names.extend((0..64).filter(|b| bits & !named & (1 << b) != 0).map(|b| format!("bit {b}")));
    names
}

/// Names of the set protocol feature bits.
pub(crate) fn protocol_names(bits: u64) -> Vec<String> {
    let known = ProtocolFeatures::from_bits_retain(bits);
    let mut names: Vec<String> = known.iter_names().map(|(n, _)| n.to_string()).collect();
    let named = known.iter_names().fold(0u64, |acc, (_, f)| acc | f.bits());
    names.extend((0..64).filter(|b| bits & !named & (1 << b) != 0).map(|b| format!("bit {b}")));
    names
}
