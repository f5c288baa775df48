//! The device-state transfer scenarios (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE), shared by
//! the blocking driver's and the mio server's channel tests.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhu_transport_std::vhu_core::{FdToken, Request, VringIndex};

use super::{Frontend, Shared, TIMEOUT};

/// Device state moves through the front-end's pipe in both directions, more of it than a pipe
/// holds at once, while the front-end reads or writes only after the reply: the back-end never
/// waits for the pipe where it would hold up the front-end.
pub fn device_state_moves_through_the_pipe(fe: &Frontend, shared: &Arc<Mutex<Shared>>) {
    use std::io::{Read, Write};
    use vhu_transport_std::vhu_core::message::{TransferDirection, TransferPhase};
    let state: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    shared.lock().unwrap().state = state.clone();
    // Suspended first: every ring stopped.
    fe.call(Request::GetVringBase { index: VringIndex(0) }, &[]);
    let transfer = |direction| Request::SetDeviceStateFd {
        direction,
        phase: TransferPhase::Stopped,
        fd: FdToken(0),
    };
    let (reader, writer) = UnixStream::pair().expect("a pipe-like pair");
    reader.set_read_timeout(Some(TIMEOUT)).unwrap();
    writer.shutdown(std::net::Shutdown::Read).unwrap();
    let reply = fe.call(transfer(TransferDirection::Save), &[writer.as_fd()]);
    assert_eq!(reply, 0x100, "no error, no back-end descriptor (bit 8)");
    drop(writer);
    let mut saved = Vec::new();
    (&reader).read_to_end(&mut saved).expect("the saved state, to EOF");
    assert_eq!(saved.len(), state.len());
    assert!(saved == state, "the saved bytes are the device's state");
    assert_eq!(fe.call(Request::CheckDeviceState, &[]), 0);

    let (reader, writer) = UnixStream::pair().expect("a pipe-like pair");
    writer.set_write_timeout(Some(TIMEOUT)).unwrap();
    reader.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = fe.call(transfer(TransferDirection::Load), &[reader.as_fd()]);
    assert_eq!(reply, 0x100);
    drop(reader);
    let mut changed = state.clone();
    changed[0] = 0xee;
    (&writer).write_all(&changed).expect("the state to load");
    drop(writer);
    assert_eq!(fe.call(Request::CheckDeviceState, &[]), 0);
    assert!(shared.lock().unwrap().loaded.as_deref() == Some(&changed[..]), "the device loaded it");

    // A whole state already in the pipe, its writer closed, larger than one step takes: no new
    // readiness will come, and the rest is read all the same.
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    rustix::pipe::fcntl_setpipe_size(&writer, 1 << 20).expect("a 1 MiB pipe");
    let whole: Vec<u8> = (0..900_000u32).map(|i| (i % 241) as u8).collect();
    let mut at = 0;
    while at < whole.len() {
        at += rustix::io::write(&writer, &whole[at..]).expect("into the pipe");
    }
    drop(writer);
    assert_eq!(fe.call(transfer(TransferDirection::Load), &[reader.as_fd()]), 0x100);
    drop(reader);
    // Loaded before the front-end asks (CHECK_DEVICE_STATE would read what is left itself).
    let loaded = || shared.lock().unwrap().loaded.as_deref() == Some(&whole[..]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !loaded() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(loaded(), "the device loaded it all without being asked");
    assert_eq!(fe.call(Request::CheckDeviceState, &[]), 0, "loaded to the end");
}

/// A state descriptor that is not a pipe or socket (here a memfd, which would read as EOF or as
/// its whole contents at once) is refused, closed, and leaves nothing for CHECK_DEVICE_STATE —
/// not even the outcome of a save before it that was never checked.
pub fn a_state_fd_that_is_not_a_pipe_is_refused(fe: &Frontend, shared: &Arc<Mutex<Shared>>) {
    use std::io::Read;
    use vhu_transport_std::vhu_core::message::{TransferDirection, TransferPhase};
    shared.lock().unwrap().state = vec![7; 64];
    fe.call(Request::GetVringBase { index: VringIndex(0) }, &[]);
    let save = Request::SetDeviceStateFd {
        direction: TransferDirection::Save,
        phase: TransferPhase::Stopped,
        fd: FdToken(0),
    };
    let (reader, writer) = UnixStream::pair().expect("a pipe-like pair");
    reader.set_read_timeout(Some(TIMEOUT)).unwrap();
    writer.shutdown(std::net::Shutdown::Read).unwrap();
    assert_eq!(fe.call(save, &[writer.as_fd()]), 0x100);
    drop(writer);
    let mut saved = Vec::new();
    (&reader).read_to_end(&mut saved).expect("the saved state, to EOF");
    assert_eq!(saved, vec![7; 64], "saved, and never checked");
    let file = rustix::fs::memfd_create("state", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::io::write(&file, &[1, 2, 3]).expect("some state");
    let load = Request::SetDeviceStateFd {
        direction: TransferDirection::Load,
        phase: TransferPhase::Stopped,
        fd: FdToken(0),
    };
    let reply = fe.call(load, &[file.as_fd()]);
    assert_eq!(reply & 0xff, 22, "EINVAL: {reply:#x}");
    assert_ne!(fe.call(Request::CheckDeviceState, &[]), 0, "no transfer ran");
    assert!(shared.lock().unwrap().loaded.is_none(), "nothing was loaded");
}
