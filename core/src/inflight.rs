//! Size of the inflight-tracking area (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD).
//!
//! The spec ("Inflight I/O tracking") lays out one region per queue: a header then one descriptor
//! state per ring entry, each region aligned to 64 bytes. This module only computes sizes; the
//! area is allocated and used by the driver.

/// Alignment of each queue's inflight region.
pub const INFLIGHT_ALIGNMENT: u64 = 64;

/// Split rings: header `u64 features, u16 version, u16 desc_num, u16 last_batch_head,
/// u16 used_idx` (16 bytes), then `desc_num` × 16-byte `DescStateSplit`.
const SPLIT_HEADER: u64 = 16;
const SPLIT_DESC: u64 = 16;
/// Packed rings: header `u64 features, u16 version, u16 desc_num, u16 free_head,
/// u16 old_free_head, u16 used_idx, u16 old_used_idx, u8 used_wrap_counter,
/// u8 old_used_wrap_counter, u8 padding[7]` (29 bytes), then `desc_num` × 32-byte
/// `DescStatePacked`.
const PACKED_HEADER: u64 = 29;
const PACKED_DESC: u64 = 32;

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Bytes of one queue's inflight region.
pub fn queue_region_size(queue_size: u16, packed: bool) -> u64 {
    let n = u64::from(queue_size);
    let raw = if packed { PACKED_HEADER + PACKED_DESC * n } else { SPLIT_HEADER + SPLIT_DESC * n };
    align_up(raw, INFLIGHT_ALIGNMENT)
}

/// Bytes of the whole inflight area for `num_queues` queues of `queue_size` entries.
pub fn area_size(num_queues: u16, queue_size: u16, packed: bool) -> u64 {
    u64::from(num_queues) * queue_region_size(queue_size, packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_packed_sizes() {
        // 16 + 16 * 1024 = 16400, aligned to 64 = 16448.
        assert_eq!(queue_region_size(1024, false), 16448);
        // 29 + 32 * 1024 = 32797, aligned to 64 = 32832.
        assert_eq!(queue_region_size(1024, true), 32832);
        assert_eq!(area_size(2, 1024, false), 2 * 16448);
        assert_eq!(area_size(0, 1024, false), 0);
        assert_eq!(queue_region_size(0, false), 64);
        assert_eq!(area_size(u16::MAX, u16::MAX, true), 65535 * align_up(29 + 32 * 65535, 64));
    }
}
