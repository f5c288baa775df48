//! What a session offers: the device's spec, less what this transport does not carry out.
//!
//! A feature is offered only when a front-end that acks it gets what the spec promises. The
//! executor has no userfaultfd (PAGEFAULT), no IOTLB (VIRTIO_F_ACCESS_PLATFORM), and no device
//! callback for NET_SET_MTU or SEND_RARP. A device without shared-memory regions has nothing to
//! map (SHMEM), one without config space nothing to read (CONFIG). Dirty logging
//! (VHOST_F_LOG_ALL with LOG_SHMFD) is the device's to offer: the transport maps the log and
//! marks every write made through `vm-memory` and [`Writer`](crate::virtq::Writer), so a device
//! offers it when its data path writes guest memory only that way ([`crate::dirty`]). Without
//! LOG_SHMFD there is no log to mark (the legacy log without a descriptor is not supported), so
//! VHOST_F_LOG_ALL is not offered either. INFLIGHT_SHMFD (and GET_VRING_BASE_INFLIGHT and
//! GET_VRING_BASE_SKIP_DRAIN, built on it) is the device's to offer: the transport allocates and
//! maps the area and hands each queue its region; recording chains in it is the device's
//! virtqueue's ([`Virtqueue::track_inflight`](crate::virtq::Virtqueue::track_inflight)). Those
//! are removed from the device's spec before `Backend` sees it, so GET_FEATURES and
//! GET_PROTOCOL_FEATURES never promise them.
//!
//! This module must not decide what a device offers: only what the transport cannot honour.

use vhu_core::backend::BackendSpec;
use vhu_core::{ProtocolFeatures, VirtioFeatures};

/// Protocol features no session carries out, whatever the device offers.
pub const UNPERFORMED_PROTOCOL_FEATURES: ProtocolFeatures =
    ProtocolFeatures::PAGEFAULT.union(ProtocolFeatures::NET_MTU).union(ProtocolFeatures::RARP);

/// Virtio features that need the transport, which it does not carry out.
pub const UNPERFORMED_FEATURES: VirtioFeatures = VirtioFeatures::ACCESS_PLATFORM;

/// `spec` as a session offers it.
pub(super) fn offered(mut spec: BackendSpec) -> BackendSpec {
    spec.protocol_features.remove(UNPERFORMED_PROTOCOL_FEATURES);
    if spec.shmem_sizes.iter().all(|size| *size == 0) {
        spec.protocol_features.remove(ProtocolFeatures::SHMEM);
    }
    if spec.config_size == 0 {
        spec.protocol_features.remove(ProtocolFeatures::CONFIG);
    }
    spec.features.remove(UNPERFORMED_FEATURES);
    if !spec.protocol_features.contains(ProtocolFeatures::LOG_SHMFD) {
        spec.features.remove(VirtioFeatures::LOG_ALL);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_without_their_substance_are_not_offered() {
        let mut spec = BackendSpec::new(1, 256);
        spec.protocol_features |= ProtocolFeatures::SHMEM | ProtocolFeatures::PAGEFAULT;
        spec.features |= VirtioFeatures::LOG_ALL;
        let first = offered(spec.clone());
        assert!(!first.protocol_features.contains(ProtocolFeatures::SHMEM));
        assert!(!first.protocol_features.contains(ProtocolFeatures::CONFIG));
        assert!(!first.protocol_features.contains(ProtocolFeatures::PAGEFAULT));
        assert!(!first.features.contains(VirtioFeatures::LOG_ALL), "no log without LOG_SHMFD");
        spec.protocol_features |= ProtocolFeatures::LOG_SHMFD;
        let logged = offered(spec.clone());
        assert!(logged.features.contains(VirtioFeatures::LOG_ALL));
        assert!(logged.protocol_features.contains(ProtocolFeatures::LOG_SHMFD));
        spec.shmem_sizes.extend([0, 0x1000]);
        spec.config_size = 4;
        let offered = offered(spec);
        assert!(offered
            .protocol_features
            .contains(ProtocolFeatures::SHMEM | ProtocolFeatures::CONFIG));
    }
}
