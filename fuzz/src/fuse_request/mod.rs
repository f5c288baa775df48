//! `fuse_request`: FUSE requests through [`Server`] over an in-memory file system.
//!
//! Every session starts with a valid INIT (protocol 7.27 to 7.38, any flags), so the dispatch is
//! reached. Then come up to 64 requests, each either raw bytes or a structured request: an
//! opcode (any number below 64), node id, handle, names (known, arbitrary, unterminated or too
//! long), offsets, sizes and data, built into a `fuse_in_header` with the right `len` and the
//! body that opcode expects, optionally with request extensions or with its arguments cut
//! short. The file system is `MemFs`: deterministic, bounded, and no host I/O.
//!
//! Invariants checked after every request:
//! - nothing panics; a request shorter than a header is refused without a reply, and any refused
//!   request leaves the reply buffer empty;
//! - every reply starts with a `fuse_out_header` whose `len` equals the bytes written (and the
//!   value `handle` returns) and whose `unique` is the request's; `error` is 0 or a negative
//!   errno in range, and an error reply is the bare header;
//! - FORGET, BATCH_FORGET and INTERRUPT get no reply, every other request gets one (when the
//!   reply space holds at least a header);
//! - successful replies have the size their opcode defines; READ and READDIR replies stay within
//!   the requested size and READDIR records are well formed;
//! - the file system's tree stays consistent;
//! - SETUPMAPPING and REMOVEMAPPING ask the DAX window (a model, `window`) only for what the
//!   vhost-user spec allows, and the server's record of it stays true.

mod build;
mod input;
mod reply;
mod seeds;
#[cfg(test)]
mod tests;
mod window;

pub use seeds::seeds;

use vhu_device_fs::fuse::abi::{InHeader, InitIn, InitOut};
use vhu_device_fs::fuse::{Opcode, Server, ServerConfig};
use zerocopy::{FromBytes, IntoBytes};

use crate::cursor::Cursor;
use crate::memfs::MemFs;
use input::{Req, Session};
use reply::{check_payload, exchange};

/// Directory of the seed corpus, relative to this crate's manifest.
pub const CORPUS_DIR: &str = "corpus/fuse_request";

/// Longer inputs are ignored.
const MAX_INPUT: usize = 64 << 10;
const MAX_REQUESTS: usize = 64;
/// Raw requests and structured data are at most this long.
const MAX_RAW: usize = 8 << 10;
/// Reply space when the input does not ask for a small one: more than any reply.
const BIG_REPLY: usize = (1 << 20) + 4096;
/// Highest errno a reply may carry (`MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// What one input did, for the tests.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Replies with `error == 0`.
    ok: usize,
    /// Error replies.
    errors: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    session(data);
}

fn session(data: &[u8]) -> Option<Stats> {
    if data.len() > MAX_INPUT {
        return None;
    }
    let session = Session::decode(&mut Cursor::new(data))?;
    let config = ServerConfig::for_queue_size(session.queue_size);
    // Every 1st, 2nd or 3rd call to the window is refused, or none.
    let window = std::sync::Arc::new(window::ModelWindow::new((session.init_flags2 >> 28) & 3));
    let server = Server::new(MemFs::new(), config).with_window(window.clone());
    let mut stats = Stats::default();

    // A valid INIT first, so the requests reach the dispatch.
    let minor = 27 + u32::from(session.minor % 12);
    let init = InitIn {
        major: 7,
        minor,
        max_readahead: 1 << 17,
        flags: session.init_flags,
        flags2: session.init_flags2,
        ..InitIn::default()
    };
    let mut request = InHeader {
        len: (size_of::<InHeader>() + size_of::<InitIn>()) as u32,
        opcode: Opcode::Init as u32,
        unique: 1,
        ..InHeader::default()
    }
    .as_bytes()
    .to_vec();
    request.extend_from_slice(init.as_bytes());
    let (error, payload) =
        exchange(&server, &request, BIG_REPLY, &mut stats).expect("INIT replies");
    assert_eq!(error, 0, "a valid INIT succeeds");
    let out = InitOut::read_from_bytes(&payload).expect("INIT replies with fuse_init_out");
    assert_eq!((out.major, out.max_write), (7, config.max_write()));
    assert_eq!(server.negotiated_minor(), Some(minor));

    for (req, space) in &session.requests {
        let space = if *space < 240 { BIG_REPLY } else { usize::from(*space - 240) * 8 };
        match req {
            Req::Raw(bytes) => {
                exchange(&server, bytes, space, &mut stats);
            }
            Req::Structured(s) => {
                let bytes = s.build();
                if let Some((0, payload)) = exchange(&server, &bytes, space, &mut stats) {
                    check_payload(s, &payload, config);
                }
            }
        }
        server.fs().check();
        window.check(&server.mapped_ranges());
    }
    Some(stats)
}
