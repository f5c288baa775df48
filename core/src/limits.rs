//! Capacities of every bounded table and buffer in `vhu-core`.
//!
//! The crate needs no allocator, so each collection has a fixed capacity chosen here, with the spec
//! rule or the peer behaviour it comes from. Nothing else in the crate hard-codes these numbers.

/// Size of the vhost-user message header (`request`, `flags`, `size`, each a native-endian `u32`).
pub const HEADER_SIZE: usize = 12;

/// Largest payload a [`FrameDecoder`](crate::FrameDecoder) accepts by default.
///
/// The spec sets no protocol-wide maximum (`size` is a `u32`); the largest payload it defines is the
/// GET_SHMEM_CONFIG reply (8 + 256 × 8 = 2056 bytes). 4 KiB leaves room for that and matches what
/// rust-vmm's `vhost` accepts, while keeping a frame buffer small enough for the stack.
pub const MAX_PAYLOAD_SIZE: usize = 4096;

/// Largest complete frame (header and payload) the default decoder holds.
pub const MAX_FRAME_SIZE: usize = HEADER_SIZE + MAX_PAYLOAD_SIZE;

/// Most file descriptors one message carries.
///
/// SET_MEM_TABLE carries one per region and at most
/// [`MAX_MEM_TABLE_REGIONS`]; the back-end channel allows at most 8 per message (spec "Back-end
/// communication"; QEMU `VHOST_USER_BACKEND_MAX_FDS`).
pub const MAX_FDS_PER_MSG: usize = 8;

/// Most regions in one SET_MEM_TABLE (spec `VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_MEM_TABLE_REGIONS: usize = 8;

/// Largest device configuration space GET_CONFIG/SET_CONFIG transfer (`VHOST_USER_MAX_CONFIG_SIZE`
/// in QEMU, libvhost-user and DPDK).
pub const MAX_CONFIG_SIZE: usize = 256;

/// Number of shared-memory region sizes in the GET_SHMEM_CONFIG reply
/// (`VHOST_USER_MAX_SHMEM_REGIONS`).
pub const MAX_SHMEM_REGIONS: usize = 256;

/// Number of vrings addressable by the vring-fd messages: their `u64` payload carries the index in
/// bits 0–7 (spec "Ring descriptor" payload of SET_VRING_KICK/CALL/ERR, `VHOST_USER_VRING_IDX_MASK`).
pub const MAX_VRINGS: usize = 256;

/// Largest virtqueue size (virtio 1.x: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: u32 = 32768;

/// Largest opaque CREATE_CRYPTO_SESSION payload accepted (the operation, the session setup data
/// and the keys: QEMU's layout with asymmetric keys is just over 1 KiB).
pub const MAX_CRYPTO_SESSION_SIZE: usize = 2048;

/// Capacity of the back-end's memory-slot table (ADD_MEM_REG). QEMU caps its own slots at 512
/// (`VHOST_USER_MAX_RAM_SLOTS`); back-ends conventionally report 509.
pub const MAX_MEM_SLOTS: usize = 512;

/// Memory slots a back-end reports by default in GET_MAX_MEM_SLOTS (libvhost-user and
/// vhost-user-backend report 509 since front-ends reserve a few).
pub const DEFAULT_MEM_SLOTS: usize = 509;

/// Most vrings one device has: all of them must be addressable by the vring-fd messages.
pub const MAX_QUEUES: usize = MAX_VRINGS;

/// Capacity of the state machines' output queues. One input produces at most
/// `MAX_MEM_TABLE_REGIONS` map actions, `MAX_FDS_PER_MSG` releases, one unmap-all and one reply;
/// per-ring notifications for many rings are not queued but derived from ring state.
pub const MAX_OUTPUTS: usize = 32;
