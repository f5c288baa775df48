//! Feature sets exchanged by GET/SET_FEATURES and GET/SET_PROTOCOL_FEATURES.
//!
//! Bit numbers and masks live only here, as bitflags, so a bit number can never be used as a mask
//! (the libvhost-user `features & VHOST_USER_F_PROTOCOL_FEATURES` bug). This module does not decide
//! which features are offered or accepted; that is the state machines' job.

use bitflags::bitflags;

bitflags! {
    /// Virtio and vhost feature bits (GET_FEATURES / SET_FEATURES payload).
    ///
    /// Only the transport-level bits of the virtio specification and the vhost-specific bits are
    /// named; device-specific bits (0–23) are carried unchanged, since the set must round-trip every
    /// bit the device offers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VirtioFeatures: u64 {
        /// VIRTIO_F_NOTIFY_ON_EMPTY (bit 24, legacy).
        const NOTIFY_ON_EMPTY = 1 << 24;
        /// VHOST_F_LOG_ALL (bit 26): log every write to guest memory (dirty logging for migration).
        const LOG_ALL = 1 << 26;
        /// VIRTIO_F_ANY_LAYOUT (bit 27, legacy).
        const ANY_LAYOUT = 1 << 27;
        /// VIRTIO_RING_F_INDIRECT_DESC (bit 28).
        const RING_INDIRECT_DESC = 1 << 28;
        /// VIRTIO_RING_F_EVENT_IDX (bit 29).
        const RING_EVENT_IDX = 1 << 29;
        /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30): protocol features may be negotiated.
        ///
        /// Never exposed to the guest; without it the back-end enables rings on SET_FEATURES.
        const PROTOCOL_FEATURES = 1 << 30;
        /// VIRTIO_F_VERSION_1 (bit 32).
        const VERSION_1 = 1 << 32;
        /// VIRTIO_F_ACCESS_PLATFORM (bit 33): ring addresses are IOVAs translated by IOTLB_MSG.
        const ACCESS_PLATFORM = 1 << 33;
        /// VIRTIO_F_RING_PACKED (bit 34): changes the SET/GET_VRING_BASE encoding.
        const RING_PACKED = 1 << 34;
        /// VIRTIO_F_IN_ORDER (bit 35).
        const IN_ORDER = 1 << 35;
        /// VIRTIO_F_ORDER_PLATFORM (bit 36).
        const ORDER_PLATFORM = 1 << 36;
        /// VIRTIO_F_SR_IOV (bit 37).
        const SR_IOV = 1 << 37;
        /// VIRTIO_F_NOTIFICATION_DATA (bit 38).
        const NOTIFICATION_DATA = 1 << 38;
        /// VIRTIO_F_NOTIF_CONFIG_DATA (bit 39).
        const NOTIF_CONFIG_DATA = 1 << 39;
        /// VIRTIO_F_RING_RESET (bit 40).
        const RING_RESET = 1 << 40;
        /// VIRTIO_F_ADMIN_VQ (bit 41).
        const ADMIN_VQ = 1 << 41;
        // Device-specific and future bits are kept as they are.
        const _ = !0;
    }
}

bitflags! {
    /// vhost-user protocol feature bits (GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES payload).
    ///
    /// Numbering follows QEMU master. Bits 20–23 moved while under review: SHMEM was proposed as bit
    /// 20, then 21, and is bit 22 (bit 21 is GPA_ADDRESSES, which changes what every address field
    /// means); GET_VRING_BASE_SKIP_DRAIN (bit 23) was numbered by its latest spec patch. A peer built
    /// on an older numbering (rust-vmm `vhost` 0.16 has SHMEM at bit 21) may mean another feature by
    /// the same bit, so nothing above bit 19 should be offered without checking the peer.
    ///
    /// Unknown bits are kept, so the caller can see and refuse them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ProtocolFeatures: u64 {
        /// VHOST_USER_PROTOCOL_F_MQ (bit 0): GET_QUEUE_NUM.
        const MQ = 1 << 0;
        /// VHOST_USER_PROTOCOL_F_LOG_SHMFD (bit 1): SET_LOG_BASE carries an fd and gets a reply.
        const LOG_SHMFD = 1 << 1;
        /// VHOST_USER_PROTOCOL_F_RARP (bit 2): SEND_RARP.
        const RARP = 1 << 2;
        /// VHOST_USER_PROTOCOL_F_REPLY_ACK (bit 3): NEED_REPLY is honoured on every request.
        const REPLY_ACK = 1 << 3;
        /// VHOST_USER_PROTOCOL_F_NET_MTU (bit 4): NET_SET_MTU.
        const NET_MTU = 1 << 4;
        /// VHOST_USER_PROTOCOL_F_BACKEND_REQ (bit 5): SET_BACKEND_REQ_FD and the back-end channel.
        const BACKEND_REQ = 1 << 5;
        /// VHOST_USER_PROTOCOL_F_CROSS_ENDIAN (bit 6): SET_VRING_ENDIAN.
        const CROSS_ENDIAN = 1 << 6;
        /// VHOST_USER_PROTOCOL_F_CRYPTO_SESSION (bit 7): CREATE/CLOSE_CRYPTO_SESSION.
        const CRYPTO_SESSION = 1 << 7;
        /// VHOST_USER_PROTOCOL_F_PAGEFAULT (bit 8): POSTCOPY_ADVISE/LISTEN/END.
        const PAGEFAULT = 1 << 8;
        /// VHOST_USER_PROTOCOL_F_CONFIG (bit 9): GET/SET_CONFIG and BACKEND_CONFIG_CHANGE_MSG.
        const CONFIG = 1 << 9;
        /// VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD (bit 10): fds on the back-end channel.
        const BACKEND_SEND_FD = 1 << 10;
        /// VHOST_USER_PROTOCOL_F_HOST_NOTIFIER (bit 11): BACKEND_VRING_HOST_NOTIFIER_MSG.
        const HOST_NOTIFIER = 1 << 11;
        /// VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (bit 12): GET/SET_INFLIGHT_FD.
        const INFLIGHT_SHMFD = 1 << 12;
        /// VHOST_USER_PROTOCOL_F_RESET_DEVICE (bit 13): RESET_DEVICE.
        const RESET_DEVICE = 1 << 13;
        /// VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS (bit 14): VRING_KICK, BACKEND_VRING_CALL/ERR.
        ///
        /// Only valid together with BACKEND_REQ and REPLY_ACK.
        const INBAND_NOTIFICATIONS = 1 << 14;
        /// VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS (bit 15): GET_MAX_MEM_SLOTS, ADD/REM_MEM_REG.
        const CONFIGURE_MEM_SLOTS = 1 << 15;
        /// VHOST_USER_PROTOCOL_F_STATUS (bit 16): SET/GET_STATUS.
        const STATUS = 1 << 16;
        /// VHOST_USER_PROTOCOL_F_XEN_MMAP (bit 17): memory regions carry Xen mapping fields.
        const XEN_MMAP = 1 << 17;
        /// VHOST_USER_PROTOCOL_F_SHARED_OBJECT (bit 18): GET_SHARED_OBJECT, BACKEND_SHARED_OBJECT_*.
        const SHARED_OBJECT = 1 << 18;
        /// VHOST_USER_PROTOCOL_F_DEVICE_STATE (bit 19): SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE.
        const DEVICE_STATE = 1 << 19;
        /// VHOST_USER_PROTOCOL_F_GET_VRING_BASE_INFLIGHT (bit 20): only with INFLIGHT_SHMFD; a
        /// prerequisite of GET_VRING_BASE_SKIP_DRAIN. It does not by itself allow skipping the drain.
        const GET_VRING_BASE_INFLIGHT = 1 << 20;
        /// VHOST_USER_PROTOCOL_F_GPA_ADDRESSES (bit 21): "user address" fields carry guest-physical
        /// addresses instead of front-end virtual addresses.
        const GPA_ADDRESSES = 1 << 21;
        /// VHOST_USER_PROTOCOL_F_SHMEM (bit 22): GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP/UNMAP.
        const SHMEM = 1 << 22;
        /// VHOST_USER_PROTOCOL_F_GET_VRING_BASE_SKIP_DRAIN (bit 23): GET_VRING_BASE_SKIP_DRAIN;
        /// only together with GET_VRING_BASE_INFLIGHT and INFLIGHT_SHMFD.
        const GET_VRING_BASE_SKIP_DRAIN = 1 << 23;
        // Unknown bits are kept so they can be refused with their value.
        const _ = !0;
    }
}

impl ProtocolFeatures {
    /// The bits this crate knows (0–23).
    pub const KNOWN: Self = Self::from_bits_retain((1 << 24) - 1);
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for VirtioFeatures {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::from_bits_retain(u.arbitrary()?))
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for ProtocolFeatures {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::from_bits_retain(u.arbitrary()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_numbers_match_the_reference() {
        assert_eq!(VirtioFeatures::PROTOCOL_FEATURES.bits(), 0x4000_0000);
        assert_eq!(VirtioFeatures::LOG_ALL.bits(), 0x0400_0000);
        assert_eq!(VirtioFeatures::VERSION_1.bits(), 0x1_0000_0000);
        assert_eq!(VirtioFeatures::RING_PACKED.bits(), 0x4_0000_0000);
        assert_eq!(ProtocolFeatures::REPLY_ACK.bits(), 0x8);
        assert_eq!(ProtocolFeatures::CONFIGURE_MEM_SLOTS.bits(), 0x8000);
        assert_eq!(ProtocolFeatures::DEVICE_STATE.bits(), 0x8_0000);
        assert_eq!(ProtocolFeatures::GPA_ADDRESSES.bits(), 0x20_0000);
        assert_eq!(ProtocolFeatures::SHMEM.bits(), 0x40_0000);
        assert_eq!(ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN.bits(), 0x80_0000);
        assert_eq!(ProtocolFeatures::KNOWN.bits(), 0xff_ffff);
    }

    #[test]
    fn unknown_bits_survive() {
        let raw = (1u64 << 40) | 0x8;
        let features = ProtocolFeatures::from_bits_retain(raw);
        assert_eq!(features.bits(), raw);
        assert!(!ProtocolFeatures::KNOWN.contains(features));
        let virtio = VirtioFeatures::from_bits_retain(0x1f);
        assert_eq!(virtio.bits(), 0x1f);
    }
}
