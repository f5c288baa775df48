//! `frame_decode`: raw bytes and an fd count through [`FrameDecoder`] and every parser.
//!
//! Invariants: nothing panics; the decoder never yields a frame longer than its limit; whatever
//! parses encodes again and re-parses to the same value with the same descriptors.

use vhu_core::{BackendReply, BackendRequest, FdToken, FrameDecoder, Progress, Reply, Request};

/// Runs one input. The first byte chooses how many fds arrive with each frame (0–9).
pub fn run(data: &[u8]) {
    let Some((&fd_byte, mut stream)) = data.split_first() else {
        return;
    };
    let fd_count = usize::from(fd_byte % 10);
    let fds: Vec<FdToken> = (0..fd_count as u32).map(FdToken).collect();
    let mut decoder = FrameDecoder::new();
    while !stream.is_empty() {
        let Ok((used, progress)) = decoder.push(stream) else {
            return;
        };
        stream = &stream[used..];
        if let Progress::Ready(len) = progress {
            let frame = decoder.frame().expect("Ready means a frame is available");
            assert_eq!(frame.len(), len);
            assert!(len <= vhu_core::limits::MAX_FRAME_SIZE);
            check_frame(frame, &fds);
            decoder.clear();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
