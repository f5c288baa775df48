//! Host metadata to FUSE attributes: `statx` of an O_PATH fd or of a name in a directory,
//! device-number encoding, STATFS.
//!
//! Conversion only; the one syscall here is the `statx` / `fstatvfs` that produces what is converted.

use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{statx, AtFlags, StatxFlags};
use rustix::io::Errno;

use crate::fuse::abi::{Attr, Kstatfs, Statx, SxTime};

/// The identity of a host inode: (device, inode number).
pub(super) type InodeKey = (u64, u64);

/// What one `statx` tells about a host inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct HostStat {
    /// The attributes, with the host inode number.
    pub(super) attr: Attr,
    /// Host identity.
    pub(super) key: InodeKey,
    /// The mount it was reached through (`STATX_MNT_ID`; 0 on hosts older than Linux 5.8).
    pub(super) mnt_id: u64,
}

/// `statx` of `fd` itself (never following a symlink).
pub(super) fn stat_fd(fd: impl AsFd) -> Result<HostStat, Errno> {
    host_stat(fd, c"", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
}

/// `statx` of `name` in the directory `dir`: never following a symlink or triggering an
/// automount, so it names the inode an O_PATH | O_NOFOLLOW open of the name would.
pub(super) fn stat_at(dir: impl AsFd, name: &CStr) -> Result<HostStat, Errno> {
    host_stat(dir, name, AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT)
}

fn host_stat(fd: impl AsFd, name: &CStr, flags: AtFlags) -> Result<HostStat, Errno> {
    let mask = StatxFlags::BASIC_STATS | StatxFlags::MNT_ID;
    let st = statx(fd, name, flags, mask)?;
    let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
    let attr = Attr {
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        atime: secs(st.stx_atime.tv_sec),
        mtime: secs(st.stx_mtime.tv_sec),
        ctime: secs(st.stx_ctime.tv_sec),
        atimensec: st.stx_atime.tv_nsec,
        mtimensec: st.stx_mtime.tv_nsec,
        ctimensec: st.stx_ctime.tv_nsec,
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: encode_dev(st.stx_rdev_major, st.stx_rdev_minor),
        blksize: st.stx_blksize,
        flags: 0,
    };
    let mnt_id = if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 { st.stx_mnt_id } else { 0 };
    Ok(HostStat { attr, key: (dev, st.stx_ino), mnt_id })
}

/// `statx` of `fd` itself for STATX: the fields of `mask` (and the basic ones), with the
/// AT_STATX_* synchronisation bits of `sync`. Inode number and owner are the host's; the
/// caller makes them the guest's.
pub(super) fn statx_fd(fd: impl AsFd, sync: u32, mask: u32) -> Result<(Statx, InodeKey), Errno> {
    let sync =
        AtFlags::from_bits_retain(sync) & (AtFlags::STATX_FORCE_SYNC | AtFlags::STATX_DONT_SYNC);
    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW | sync;
    let st = statx(fd, c"", flags, StatxFlags::from_bits_truncate(mask) | StatxFlags::BASIC_STATS)?;
    let time = |t: rustix::fs::StatxTimestamp| SxTime {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
        reserved: 0,
    };
    let out = Statx {
        mask: st.stx_mask,
        blksize: st.stx_blksize,
        attributes: st.stx_attributes.bits(),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        mode: st.stx_mode,
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        attributes_mask: st.stx_attributes_mask.bits(),
        atime: time(st.stx_atime),
        btime: time(st.stx_btime),
        ctime: time(st.stx_ctime),
        mtime: time(st.stx_mtime),
        rdev_major: st.stx_rdev_major,
        rdev_minor: st.stx_rdev_minor,
        ..Statx::default()
    };
    let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
    Ok((out, (dev, st.stx_ino)))
}

/// A time in seconds as `fuse_attr` carries it: the field is unsigned, and the kernel reads it
/// back as a signed `time64_t`, so a time before 1970 travels as its two's complement.
fn secs(s: i64) -> u64 {
    s as u64
}

/// The kernel's `new_encode_dev`, the encoding `fuse_attr.rdev` and `fuse_mknod_in.rdev` use.
pub(super) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The kernel's `new_decode_dev`: (major, minor).
pub(super) fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// `fstatvfs` of `fd` as `fuse_kstatfs`.
pub(super) fn statfs_fd(fd: impl AsFd) -> Result<Kstatfs, Errno> {
    let s = rustix::fs::fstatvfs(fd)?;
    let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Kstatfs {
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
        bsize: to_u32(s.f_bsize),
        namelen: to_u32(s.f_namemax),
        frsize: to_u32(s.f_frsize),
        ..Kstatfs::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_round_trips() {
        for (maj, min) in [(0, 0), (8, 1), (259, 3), (4095, 255), (1, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(maj, min)), (maj, min));
        }
        assert_eq!(encode_dev(8, 1), 0x801);
    }
}
