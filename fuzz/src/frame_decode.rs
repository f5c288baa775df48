//! `frame_decode`: raw bytes and an fd count through [`FrameDecoder`] and every parser, and the
//! same stream through transport-std's [`FrameReader`] over a real socket pair.
//!
//! Invariants: nothing panics; the decoder never yields a frame longer than its limit; whatever
//! parses encodes again and re-parses to the same value with the same descriptors. The reader,
//! greedy and exact, fed the stream in chunks of every size (each frame's descriptors on its
//! first chunk), yields exactly the decoder's frames, each with its own descriptors, then fails
//! where the decoder fails (a bad header) or reports the end: clean at a frame boundary,
//! unexpected inside a frame.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use vhu_core::message::{
    ConfigFlags, InflightDesc, Iotlb, IotlbKind, IotlbPerm, LogBase, MemoryTable, PackedBase,
    Region, VringAddr, VringAddrFlags, VringBase, VringFd,
};

use rustix::event::{eventfd, EventfdFlags};
use vhu_core::limits::MAX_FDS_PER_MSG;
use vhu_core::{
    BackendReply, BackendRequest, FdToken, FrameDecoder, FrontendCode, Progress, ProtocolFeatures,
    Reply, Request, VirtioFeatures, VringIndex,
};
use vhu_transport_std::frame_reader::{FrameReader, ReadAhead};
use vhu_transport_std::scm::{send, RecvOutcome, ScmError};

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/frame_decode";

/// Runs one input. The first byte chooses how many fds arrive with each frame (0–9).
pub fn run(data: &[u8]) {
    let Some((&fd_byte, mut stream)) = data.split_first() else {
        return;
    };
    let fd_count = usize::from(fd_byte % 10);
    let fds: Vec<FdToken> = (0..fd_count as u32).map(FdToken).collect();
    let whole = stream;
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut end = Ok(());
    while !stream.is_empty() {
        let (used, progress) = match decoder.push(stream) {
            Ok(pushed) => pushed,
            Err(error) => {
                end = Err(error);
                break;
            }
        };
        stream = &stream[used..];
        if let Progress::Ready(len) = progress {
            let frame = decoder.frame().expect("Ready means a frame is available");
            assert_eq!(frame.len(), len);
            assert!(len <= vhu_core::limits::MAX_FRAME_SIZE);
            check_frame(frame, &fds);
            frames.push(len);
            decoder.clear();
        }
    }
    let tail = if end.is_ok() { whole.len() - frames.iter().sum::<usize>() } else { 0 };
    for read_ahead in [ReadAhead::Greedy, ReadAhead::Exact] {
        through_reader(whole, &frames, &end, tail, fd_byte, read_ahead);
    }
}

/// Frames that carry descriptors: the kernel refuses to hold more in flight on sockets than
/// the sender's open-file limit (`ETOOMANYREFS` without CAP_SYS_RESOURCE), so a writer far
/// ahead of its reader with descriptors on every frame would stop early, by chance.
const FRAMES_WITH_FDS: usize = 32;

/// The stream through a [`FrameReader`]: `frames` are the decoder's frame lengths, `end` how it
/// ended, `tail` the bytes of an unfinished last frame.
fn through_reader(
    stream: &[u8],
    frames: &[usize],
    end: &Result<(), vhu_core::WireError>,
    tail: usize,
    seed: u8,
    read_ahead: ReadAhead,
) {
    let fds_per_frame = usize::from(seed % 10).min(MAX_FDS_PER_MSG);
    let (writer, reader_end) = UnixStream::pair().expect("socket pair");
    let fd = eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
    // Chunk sizes from a small generator seeded by the input: 1 byte up to a few frames.
    let mut state = u32::from(seed) ^ (stream.len() as u32).wrapping_mul(0x9e37_79b9) | 1;
    let mut chunk = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        1 + (state % 97) as usize * if state % 7 == 0 { 60 } else { 1 }
    };
    // The writer runs ahead on its own thread: a stream larger than the socket's buffer does not
    // block it while the reader has not started.
    let owned = stream.to_vec();
    let frame_lens = frames.to_vec();
    let sender = std::thread::spawn(move || {
        let attached: Vec<BorrowedFd<'_>> = (0..fds_per_frame).map(|_| fd.as_fd()).collect();
        let mut at = 0;
        // Complete frames: descriptors on the first chunk of each of the first frames; no chunk
        // spans two frames unless no frame has descriptors.
        for (index, len) in frame_lens.into_iter().enumerate() {
            let frame_end = at + len;
            let mut first = index < FRAMES_WITH_FDS;
            while at < frame_end {
                let n = chunk().min(frame_end - at);
                let with: &[BorrowedFd<'_>] = if first { &attached } else { &[] };
                if send(&writer, &owned[at..at + n], with).is_err() {
                    return;
                }
                first = false;
                at += n;
            }
        }
        while at < owned.len() {
            let n = chunk().min(owned.len() - at);
            if send(&writer, &owned[at..at + n], &[]).is_err() {
                return;
            }
            at += n;
        }
    });
    let mut reader = FrameReader::new(read_ahead);
    let mut at = 0;
    for (index, &len) in frames.iter().enumerate() {
        match reader.recv(&reader_end) {
            Ok(RecvOutcome::Frame(got)) => assert_eq!(got, len, "{read_ahead:?}"),
            other => panic!("{read_ahead:?}: a frame of {len} bytes, got {other:?}"),
        }
        assert_eq!(reader.frame(), Some(&stream[at..at + len]), "{read_ahead:?}");
        let expected = if index < FRAMES_WITH_FDS { fds_per_frame } else { 0 };
        assert_eq!(reader.fds().len(), expected, "{read_ahead:?}: the frame's own descriptors");
        at += len;
    }
    // The end of the stream comes once the writer is done; should the reader stop early, its
    // socket closes before the writer is waited for, so a writer with more to send never blocks.
    let last = reader.recv(&reader_end);
    drop(reader_end);
    sender.join().expect("sender");
    match (end, last) {
        (Err(_), Err(ScmError::Wire(_))) => {}
        (Ok(()), Ok(RecvOutcome::Closed)) if tail == 0 => assert!(reader.is_idle()),
        (Ok(()), Err(ScmError::UnexpectedEof { got, .. })) if tail > 0 => assert_eq!(got, tail),
        (end, last) => panic!("{read_ahead:?}: decoder ended {end:?}, reader {last:?}"),
    }
}

/// Every parser on one frame; round-trips whatever parses.
pub fn check_frame(frame: &[u8], fds: &[FdToken]) {
    let mut buf = vec![0u8; vhu_core::limits::MAX_FRAME_SIZE];
    if let Ok(incoming) = Request::parse(frame, fds) {
        let len = incoming.message.encode_into(incoming.need_reply, &mut buf).expect("re-encodes");
        let fds = incoming.message.fds();
        let again = Request::parse(&buf[..len], &fds).expect("re-parses");
        assert_eq!(again, incoming);
    }
    if let Ok(reply) = Reply::parse(frame, fds) {
        let len = reply.encode_into(&mut buf).expect("re-encodes");
        let fds = reply.fds();
        let again = Reply::parse(&buf[..len], &fds).expect("re-parses");
        assert_eq!(again, reply);
    }
    if let Ok(incoming) = BackendRequest::parse(frame, fds) {
        let len = incoming.message.encode_into(incoming.need_reply, &mut buf).expect("re-encodes");
        let again = BackendRequest::parse(&buf[..len], &incoming.message.fds()).expect("re-parses");
        assert_eq!(again, incoming);
    }
    if let Ok(reply) = BackendReply::parse(frame, fds) {
        let len = reply.encode_into(&mut buf).expect("re-encodes");
        let fds: Vec<_> = reply.fds().into_iter().collect();
        assert_eq!(BackendReply::parse(&buf[..len], &fds).expect("re-parses"), reply);
    }
}

/// The seed corpus: a name and an input for each file of [`CORPUS_DIR`].
///
/// Each input is an fd-count byte (as [`run`] reads it) followed by one or more encoded frames, so
/// every seed reaches the parsers with the descriptors its message expects.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let region = Region {
        guest_address: 0,
        size: 0x4000_0000,
        user_address: 0x7f00_0000_0000,
        mmap_offset: 0,
        xen: None,
    };
    let regions = [
        region.to_wire(),
        Region { guest_address: 0x1_0000_0000, mmap_offset: 0x4000_0000, ..region }.to_wire(),
    ];
    let table_fds = [FdToken(0), FdToken(1)];
    let fd = FdToken(0);
    let requests: [(&'static str, Request<'_>, bool); 16] = [
        ("get_features", Request::GetFeatures, false),
        (
            "set_features",
            Request::SetFeatures(
                VirtioFeatures::VERSION_1
                    | VirtioFeatures::PROTOCOL_FEATURES
                    | VirtioFeatures::RING_EVENT_IDX,
            ),
            false,
        ),
        (
            "set_protocol_features",
            Request::SetProtocolFeatures(
                ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK | ProtocolFeatures::BACKEND_REQ,
            ),
            false,
        ),
        (
            "set_mem_table",
            Request::SetMemTable { table: MemoryTable::Standard(&regions), fds: &table_fds },
            true,
        ),
        ("add_mem_reg", Request::AddMemReg { region, fd }, true),
        (
            "set_log_base",
            Request::SetLogBase(LogBase::Shared {
                mmap_size: 0x1000,
                mmap_offset: 0,
                fd: Some(fd),
            }),
            true,
        ),
        ("set_vring_num", Request::SetVringNum { index: VringIndex(1), num: 256 }, false),
        (
            "set_vring_addr",
            Request::SetVringAddr(VringAddr {
                index: VringIndex(0),
                flags: VringAddrFlags::LOG,
                descriptor: 0x7f00_0000_1000,
                used: 0x7f00_0000_3000,
                available: 0x7f00_0000_2000,
                log: 0x3000,
            }),
            false,
        ),
        (
            "set_vring_base_packed",
            Request::SetVringBase {
                index: VringIndex(0),
                base: VringBase::packed(PackedBase {
                    avail_index: 7,
                    avail_wrap: true,
                    used_index: 5,
                    used_wrap: false,
                }),
            },
            false,
        ),
        ("get_vring_base", Request::GetVringBase { index: VringIndex(1) }, false),
        (
            "set_vring_kick",
            Request::SetVringKick(VringFd { index: VringIndex(0), fd: Some(fd) }),
            false,
        ),
        (
            "set_vring_call_nofd",
            Request::SetVringCall(VringFd { index: VringIndex(1), fd: None }),
            false,
        ),
        ("set_vring_enable", Request::SetVringEnable { index: VringIndex(1), enable: true }, true),
        (
            "set_config",
            Request::SetConfig { offset: 0, flags: ConfigFlags::Writable, data: &[1, 2, 3, 4] },
            true,
        ),
        (
            "iotlb_update",
            Request::IotlbMsg(Iotlb {
                iova: 0x1000,
                size: 0x1000,
                user_address: 0x7f00_0000_0000,
                perm: IotlbPerm::ReadWrite,
                kind: IotlbKind::Update,
            }),
            true,
        ),
        (
            "get_inflight_fd",
            Request::GetInflightFd(InflightDesc {
                mmap_size: 0,
                mmap_offset: 0,
                num_queues: 2,
                queue_size: 256,
            }),
            false,
        ),
    ];
    let mut buf = vec![0u8; vhu_core::limits::MAX_FRAME_SIZE];
    let mut out = Vec::new();
    for (name, request, need_reply) in requests {
        let len = request.encode_into(need_reply, &mut buf).expect("seed request encodes");
        out.push((name, with_fd_count(request.fds().len(), &buf[..len])));
    }
    // A reply and a back-end request, for the other parsers.
    let reply = Reply::Ack { request: FrontendCode::SetMemTable, status: 0 };
    let len = reply.encode_into(&mut buf).expect("seed reply encodes");
    out.push(("reply_ack", with_fd_count(reply.fds().len(), &buf[..len])));
    // Two frames in one stream: the decoder must reset between them.
    let mut stream = vec![0];
    for request in [Request::GetProtocolFeatures, Request::GetQueueNum] {
        let len = request.encode_into(false, &mut buf).expect("seed request encodes");
        stream.extend_from_slice(&buf[..len]);
    }
    out.push(("two_frames", stream));
    out
}

/// An input for [`run`]: the fd-count byte, then the frame.
fn with_fd_count(fds: usize, frame: &[u8]) -> Vec<u8> {
    let mut input = vec![u8::try_from(fds).expect("at most 9 fds")];
    input.extend_from_slice(frame);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus files, sorted by name.
    fn corpus() -> Vec<(String, Vec<u8>)> {
        crate::replay::corpus_files(CORPUS_DIR)
    }

    /// Inputs that once crashed the target, kept in `regressions/frame_decode/` (may be absent).
    #[test]
    fn replays_regressions() {
        crate::replay::regressions("frame_decode", run);
    }

    /// Every file of the seed corpus goes through the target without a fuzzer.
    #[test]
    fn replays_corpus() {
        let files = corpus();
        assert!(!files.is_empty(), "the seed corpus is empty");
        for (name, input) in &files {
            println!("replaying {name} ({} bytes)", input.len());
            run(input);
        }
    }

    /// The corpus holds exactly the current seeds; `cargo run -p vhu-fuzz --example write_corpus`
    /// rewrites it.
    #[test]
    fn corpus_matches_seeds() {
        let files = corpus();
        let mut expected: Vec<_> =
            seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
        expected.sort();
        assert_eq!(files, expected, "corpus is stale: run the write_corpus example");
    }

    /// Each seed parses as the message it was made from, so the corpus starts past the parsers' guards.
    #[test]
    fn seeds_parse() {
        let fds: Vec<FdToken> = (0..9).map(FdToken).collect();
        for (name, input) in seeds() {
            let (&count, frame) = input.split_first().expect("fd-count byte");
            let fds = &fds[..usize::from(count)];
            let ok = if name.starts_with("reply") {
                Reply::parse(frame, fds).is_ok()
            } else if name == "two_frames" {
                true
            } else {
                Request::parse(frame, fds).is_ok()
            };
            assert!(ok, "seed {name} does not parse");
        }
    }

    /// A small deterministic corpus: valid frames, and every prefix and bit flip of them.
    #[test]
    fn replays_mutations_of_valid_frames() {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 256];
        let requests = [
            Request::GetFeatures,
            Request::SetVringNum { index: vhu_core::VringIndex(1), num: 256 },
            Request::SetVringKick(vhu_core::message::VringFd {
                index: vhu_core::VringIndex(0),
                fd: Some(FdToken(0)),
            }),
        ];
        for request in requests {
            let len = request.encode_into(true, &mut buf).expect("encodes");
            frames.push(buf[..len].to_vec());
        }
        for frame in &frames {
            for fd_count in [0u8, 1, 9] {
                for cut in 0..=frame.len() {
                    let mut input = vec![fd_count];
                    input.extend_from_slice(&frame[..cut]);
                    run(&input);
                }
                for bit in 0..frame.len() * 8 {
                    let mut input = vec![fd_count];
                    input.extend_from_slice(frame);
                    input[1 + bit / 8] ^= 1 << (bit % 8);
                    run(&input);
                }
            }
        }
    }
}
