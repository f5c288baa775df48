//! Writing a request's answer behind its `fuse_out_header` — a payload, an inline reply, data
//! already placed in the reply's buffers, or an errno — and the request's log line. It decides
//! nothing about what the answer is: the operations do.

use rustix::io::Errno;
use zerocopy::IntoBytes;

use super::{Handled, OpResult, Reply, ServerError};
use crate::fuse::abi::{InHeader, OutHeader};
use crate::fuse::io::ReplyWriter;
use crate::fuse::Opcode;

/// A whole reply as bytes: `fuse_out_header` (with its exact `len`) and `payload`.
pub(super) fn encode_reply(unique: u64, error: i32, payload: &[u8]) -> Vec<u8> {
    // A reply is a header and at most a few pages: far below 4 GiB.
    let len = (size_of::<OutHeader>() + payload.len()) as u32;
    let mut bytes = OutHeader { len, error, unique }.as_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn write_reply<W: ReplyWriter + ?Sized>(
    writer: &mut W,
    unique: u64,
    error: i32,
    payload: &[u8],
) -> Result<usize, ServerError> {
    let need = size_of::<OutHeader>() + payload.len();
    let have = writer.remaining();
    let len = u32::try_from(need).map_err(|_| ServerError::ReplyTooLarge { need, have })?;
    if need > have {
        if error == 0 && have >= size_of::<OutHeader>() {
            // Tell the guest instead of leaving it waiting on an empty reply.
            return write_reply(writer, unique, -Errno::OVERFLOW.raw_os_error(), &[]);
        }
        return Err(ServerError::ReplyTooLarge { need, have });
    }
    let out = OutHeader { len, error, unique };
    writer.write_all(out.as_bytes())?;
    writer.write_all(payload)?;
    Ok(need)
}

/// Logs the request and writes its answer: `result`'s reply or error behind an out header.
/// `result` is borrowed: an inline reply is hundreds of bytes, and moving it here copied them.
pub(super) fn answer<W: ReplyWriter + ?Sized>(
    header: &InHeader,
    opcode: Option<Opcode>,
    result: &OpResult,
    writer: &mut W,
) -> Result<Handled, ServerError> {
    log_request(header, opcode, result);
    let written = match *result {
        Ok(Reply::None) => 0,
        Ok(Reply::Deferred(unique)) => return Ok(Handled::Deferred(unique)),
        Ok(Reply::Payload(ref p)) => write_reply(writer, header.unique, 0, p)?,
        Ok(Reply::Inline(ref p)) => write_reply(writer, header.unique, 0, &p.bytes[..p.len])?,
        Ok(Reply::Placed(n)) => {
            let len = size_of::<OutHeader>() + n;
            let out = OutHeader { len: len as u32, error: 0, unique: header.unique };
            writer.write_all(out.as_bytes())?;
            writer.advance(n)?;
            len
        }
        Err(errno) => write_reply(writer, header.unique, -errno.raw_os_error(), &[])?,
    };
    Ok(Handled::Replied(written))
}

/// Each request at `trace`; one with an opcode the server does not know at `warn`, thinned out
/// once the guest keeps sending them (requests too malformed to have a header are the
/// transport's to report).
fn log_request(header: &InHeader, opcode: Option<Opcode>, result: &OpResult) {
    static UNKNOWN: crate::repeats::Repeats = crate::repeats::Repeats::new();
    let Some(opcode) = opcode else {
        if let Some(count) = UNKNOWN.next() {
            log::warn!(
                "refused request: unknown opcode {} (unique {}, node {}, {} bytes; {count} so \
                 far, later ones logged at powers of two)",
                header.opcode,
                header.unique,
                header.nodeid,
                header.len
            );
        }
        return;
    };
    if log::log_enabled!(log::Level::Trace) {
        let outcome = match result {
            Ok(Reply::Deferred(_)) => "deferred".to_string(),
            Ok(_) => "ok".to_string(),
            Err(errno) => format!("errno {}", errno.raw_os_error()),
        };
        log::trace!(
            "{opcode:?} unique {} node {} uid {} gid {} pid {}: {outcome}",
            header.unique,
            header.nodeid,
            header.uid,
            header.gid,
            header.pid
        );
    }
}
