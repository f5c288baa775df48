//! Zero-copy wire structs of the kernel FUSE ABI (`fuse_kernel.h`, protocol 7.45 layouts).
//!
//! Every struct is `#[repr(C)]` over native-endian integers with explicit padding, so it converts to
//! and from bytes with `zerocopy` (no `unsafe`, no `packed`). Sizes are asserted at compile time
//! against the kernel header. This module describes layouts and constants only; it validates nothing.

/// Derives the zerocopy traits and `Debug`/`Default` for a `#[repr(C)]` wire struct and asserts its size.
macro_rules! wire_struct {
    ($(#[$meta:meta])* pub struct $name:ident ($size:expr) {
        $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)*
    }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable,
        )]
        #[repr(C)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
    };
}

mod attr;
mod dir;
mod file;
mod header;
mod lock;
mod mapping;
mod statx;
mod xattr;

pub use attr::*;
pub use dir::*;
pub use file::*;
pub use header::*;
pub use lock::*;
pub use mapping::*;
pub use statx::*;
pub use xattr::*;
