//! What a back-end offers: the [`BackendSpec`] a device author fills in, and its validation.

use crate::limits::{
    MAX_CONFIG_SIZE, MAX_MEM_SLOTS, MAX_QUEUES, MAX_QUEUE_SIZE, MAX_SHMEM_REGIONS,
};
use crate::{ProtocolFeatures, VirtioFeatures};

/// The device as the back-end presents it to the front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Number of vrings (1–256).
    pub queues: usize,
    /// Largest queue size the device accepts (a power of two, at most 32768).
    pub max_queue_size: u16,
    /// Virtio features offered in GET_FEATURES. VHOST_USER_F_PROTOCOL_FEATURES is added whenever
    /// protocol features are offered.
    pub features: VirtioFeatures,
    /// Protocol features offered in GET_PROTOCOL_FEATURES.
    pub protocol_features: ProtocolFeatures,
    /// Size of the device config space (0–256 bytes).
    pub config_size: u32,
    /// Memory slots reported by GET_MAX_MEM_SLOTS (at most 512).
    pub max_mem_slots: usize,
    /// Shared-memory region sizes by shmid, for GET_SHMEM_CONFIG (SHMEM).
    pub shmem_sizes: arrayvec::ArrayVec<u64, MAX_SHMEM_REGIONS>,
}

/// A spec the back-end cannot serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The queue count is 0 or above 256.
    #[error("queue count {0} outside 1..=256")]
    Queues(usize),
    /// The maximum queue size is not a power of two in 1..=32768.
    #[error("max queue size {0} is not a power of two in 1..=32768")]
    QueueSize(u16),
    /// The config space is larger than 256 bytes.
    #[error("config size {0} exceeds 256")]
    ConfigSize(u32),
    /// More memory slots than the table holds.
    #[error("{0} memory slots exceed the table's 512")]
    MemSlots(usize),
    /// An offered protocol feature this crate cannot drive.
    #[error("offering {0:?} is not supported")]
    Unsupported(ProtocolFeatures),
    /// An offered protocol feature without the ones it depends on.
    #[error("offering {feature:?} needs {missing:?} offered too")]
    Dependency {
        /// The feature.
        feature: ProtocolFeatures,
        /// What it needs.
        missing: ProtocolFeatures,
    },
    /// VHOST_F_LOG_ALL offered without LOG_SHMFD: the log is shared only as a descriptor
    /// (SET_LOG_BASE, "fd only with LOG_SHMFD"), so a migration would break the session at its
    /// first SET_LOG_BASE.
    #[error("offering VHOST_F_LOG_ALL needs the LOG_SHMFD protocol feature offered too")]
    LogWithoutShmfd,
    /// Two offered protocol features that must not be negotiated together.
    #[error("offering {0:?} together with {1:?} is contradictory")]
    Conflict(ProtocolFeatures, ProtocolFeatures),
    /// A shared-memory region whose size is not a whole number of 4 KiB pages (spec
    /// "VHOST_USER_GET_SHMEM_CONFIG": sizes are page multiples; 4 KiB is the smallest page).
    #[error("shared-memory region {shmid} of {size} bytes is not a whole number of pages")]
    ShmemSize {
        /// The region.
        shmid: u8,
        /// Its size.
        size: u64,
    },
}

/// Protocol features this crate implements and may offer.
///
/// Not offered: CRYPTO_SESSION (its payload is opaque here), XEN_MMAP (Xen grant mappings are not
/// implemented by any driver of this crate).
pub const SUPPORTED_PROTOCOL_FEATURES: ProtocolFeatures = ProtocolFeatures::KNOWN
    .difference(ProtocolFeatures::CRYPTO_SESSION)
    .difference(ProtocolFeatures::XEN_MMAP);

/// Protocol features that are only valid together with others (spec "Protocol features").
pub const DEPENDENCIES: [(ProtocolFeatures, ProtocolFeatures); 4] = [
    (
        ProtocolFeatures::INBAND_NOTIFICATIONS,
        ProtocolFeatures::BACKEND_REQ.union(ProtocolFeatures::REPLY_ACK),
    ),
    (ProtocolFeatures::GET_VRING_BASE_INFLIGHT, ProtocolFeatures::INFLIGHT_SHMFD),
    (
        ProtocolFeatures::GET_VRING_BASE_SKIP_DRAIN,
        ProtocolFeatures::GET_VRING_BASE_INFLIGHT.union(ProtocolFeatures::INFLIGHT_SHMFD),
    ),
    (ProtocolFeatures::BACKEND_SEND_FD, ProtocolFeatures::BACKEND_REQ),
];

/// Protocol features that must not be acked together: the newest spec forbids postcopy
/// (PAGEFAULT) once CONFIGURE_MEM_SLOTS is negotiated, and QEMU refuses the combination.
pub const CONFLICTS: [(ProtocolFeatures, ProtocolFeatures); 1] =
    [(ProtocolFeatures::PAGEFAULT, ProtocolFeatures::CONFIGURE_MEM_SLOTS)];

/// The first pair of `features` that must not be acked together.
pub fn conflict(features: ProtocolFeatures) -> Option<(ProtocolFeatures, ProtocolFeatures)> {
    CONFLICTS.iter().copied().find(|(a, b)| features.contains(*a) && features.contains(*b))
}

/// The first dependency `features` breaks, as (feature, missing).
pub fn broken_dependency(
    features: ProtocolFeatures,
) -> Option<(ProtocolFeatures, ProtocolFeatures)> {
    DEPENDENCIES
        .iter()
        .find(|(feature, needs)| features.contains(*feature) && !features.contains(*needs))
        .map(|(feature, needs)| (*feature, needs.difference(features)))
}

/// A [`BackendSpec`] that [`BackendSpec::check`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedSpec(pub(super) BackendSpec);

impl CheckedSpec {
    /// The spec.
    pub fn spec(&self) -> &BackendSpec {
        &self.0
    }
}

impl BackendSpec {
    /// A spec with `queues` rings of at most `max_queue_size` entries, offering VERSION_1 and the
    /// modern baseline of protocol features (MQ, REPLY_ACK, CONFIG, BACKEND_REQ,
    /// CONFIGURE_MEM_SLOTS, RESET_DEVICE, STATUS), no config space and 509 memory slots.
    pub fn new(queues: usize, max_queue_size: u16) -> Self {
        Self {
            queues,
            max_queue_size,
            features: VirtioFeatures::VERSION_1,
            protocol_features: ProtocolFeatures::MQ
                | ProtocolFeatures::REPLY_ACK
                | ProtocolFeatures::CONFIG
                | ProtocolFeatures::BACKEND_REQ
                | ProtocolFeatures::CONFIGURE_MEM_SLOTS
                | ProtocolFeatures::RESET_DEVICE
                | ProtocolFeatures::STATUS,
            config_size: 0,
            max_mem_slots: crate::limits::DEFAULT_MEM_SLOTS,
            shmem_sizes: arrayvec::ArrayVec::new(),
        }
    }

    /// Checks the spec ([`BackendSpec::validate`]) and gives it back as one a
    /// [`Backend`](super::Backend) is built from without failing.
    pub fn check(self) -> Result<CheckedSpec, SpecError> {
        self.validate()?;
        Ok(CheckedSpec(self))
    }

    /// Checks that the back-end can serve this spec.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(SpecError::Queues(self.queues));
        }
        let size = u32::from(self.max_queue_size);
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(SpecError::QueueSize(self.max_queue_size));
        }
        if self.config_size as usize > MAX_CONFIG_SIZE {
            return Err(SpecError::ConfigSize(self.config_size));
        }
        if self.max_mem_slots > MAX_MEM_SLOTS {
            return Err(SpecError::MemSlots(self.max_mem_slots));
        }
        let unsupported = self.protocol_features.difference(SUPPORTED_PROTOCOL_FEATURES);
        if !unsupported.is_empty() {
            return Err(SpecError::Unsupported(unsupported));
        }
        if let Some((feature, missing)) = broken_dependency(self.protocol_features) {
            return Err(SpecError::Dependency { feature, missing });
        }
        if self.features.contains(VirtioFeatures::LOG_ALL)
            && !self.protocol_features.contains(ProtocolFeatures::LOG_SHMFD)
        {
            return Err(SpecError::LogWithoutShmfd);
        }
        // A front-end could ack either, and one that acks both breaks the spec (CONFLICTS).
        if let Some((a, b)) = conflict(self.protocol_features) {
            return Err(SpecError::Conflict(a, b));
        }
        // At most MAX_SHMEM_REGIONS (256) sizes: an index fits a u8.
        let bad = self.shmem_sizes.iter().enumerate().find(|(_, size)| *size % 4096 != 0);
        if let Some((shmid, size)) = bad {
            return Err(SpecError::ShmemSize { shmid: shmid as u8, size: *size });
        }
        Ok(())
    }

    /// The virtio features GET_FEATURES reports.
    pub fn offered_features(&self) -> VirtioFeatures {
        if self.protocol_features.is_empty() {
            self.features
        } else {
            self.features | VirtioFeatures::PROTOCOL_FEATURES
        }
    }
}
