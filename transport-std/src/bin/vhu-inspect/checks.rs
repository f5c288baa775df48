//! The conformance checks: each drives the back-end through one rule of the vhost-user
//! specification (the section is named in the report) and says whether the back-end kept it.
//! Rules come from the spec and from the interoperability failures peers have had (a front-end
//! restoring a session without GET_* that hung on an ack that never came; a back-end that died
//! on a message it did not know).

use std::os::fd::AsFd;
use std::time::Duration;

use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::message::VringBase;
use vhu_transport_std::vhu_core::wire::FrontendCode;
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vhu_transport_std::vm_memory::{Bytes, GuestAddress};

use crate::probe::Offers;
use crate::raw::{Raw, NEED_REPLY};
use crate::target::Target;

/// How long a check waits for one reply.
pub(crate) const WAIT: Duration = Duration::from_secs(3);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pass,
    Fail,
    /// Not applicable to this back-end (a feature it does not offer), or not runnable.
    Skip,
}

pub(crate) struct Check {
    pub(crate) id: &'static str,
    pub(crate) rule: &'static str,
    pub(crate) section: &'static str,
    pub(crate) outcome: Outcome,
    pub(crate) detail: String,
}

fn check(id: &'static str, rule: &'static str, section: &'static str) -> Check {
    Check { id, rule, section, outcome: Outcome::Skip, detail: String::new() }
}

impl Check {
    fn pass(mut self, detail: impl Into<String>) -> Self {
        self.outcome = Outcome::Pass;
        self.detail = detail.into();
        self
    }
    fn fail(mut self, detail: impl Into<String>) -> Self {
        self.outcome = Outcome::Fail;
        self.detail = detail.into();
        self
    }
    fn skip(mut self, detail: impl Into<String>) -> Self {
        self.outcome = Outcome::Skip;
        self.detail = detail.into();
        self
    }
}

/// A fresh raw connection, or why there is none.
fn fresh(target: &mut Target) -> Result<Raw, String> {
    let stream = target.connect()?;
    Raw::new(stream, WAIT).map_err(|e| e.to_string())
}

/// A fresh connection after the handshake a front-end starts with: GET_FEATURES,
/// GET_PROTOCOL_FEATURES, SET_OWNER, SET_PROTOCOL_FEATURES (REPLY_ACK and MQ when offered).
fn handshaken(target: &mut Target, offers: &Offers) -> Result<Raw, String> {
    let mut raw = fresh(target)?;
    raw.ask(FrontendCode::GetFeatures, 0, &[]).ok_or("GET_FEATURES was not answered")?;
    if offers.protocol.is_some() {
        raw.ask(FrontendCode::GetProtocolFeatures, 0, &[])
            .ok_or("GET_PROTOCOL_FEATURES was not answered")?;
    }
    raw.send(FrontendCode::SetOwner.as_u32(), 0, &[]).map_err(|e| e.to_string())?;
    if offers.protocol.is_some() {
        raw.set_u64(FrontendCode::SetProtocolFeatures, acked(offers).bits(), 0)
            .map_err(|e| e.to_string())?;
    }
    Ok(raw)
}

/// The protocol features the checks ack: REPLY_ACK and MQ, when offered.
fn acked(offers: &Offers) -> ProtocolFeatures {
    offers.protocol_features() & (ProtocolFeatures::REPLY_ACK | ProtocolFeatures::MQ)
}

/// Runs every check, each on a connection of its own.
pub(crate) fn run(target: &mut Target, offers: &Offers) -> Vec<Check> {
    let raw_checks: [fn(Raw, &Offers) -> Check; 3] =
        [reply_ack, unknown_request, malformed_payload];
    let mut checks = Vec::new();
    for (run, (id, rule, section)) in raw_checks.into_iter().zip(RAW_CHECKS) {
        let c = check(id, rule, section);
        checks.push(match handshaken(target, offers) {
            Ok(raw) => run(raw, offers),
            Err(e) => c.skip(format!("no connection for it ({e}); give --spawn")),
        });
    }
    checks.push(restore_path(target, offers));
    checks.push(ring_base_kept(target, offers));
    checks.push(postcopy(target, offers));
    checks.push(reconnect(target));
    checks
}

/// Ids, rules and spec sections of the checks that speak raw messages, in run order.
const RAW_CHECKS: [(&str, &str, &str); 3] = [
    (
        "reply-ack",
        "a request sent with NEED_REPLY is acknowledged with a u64 status",
        "Communication: REPLY_ACK",
    ),
    (
        "unknown-request",
        "a request the back-end does not know is refused with a status (REPLY_ACK), and the \
         connection survives",
        "Communication: REPLY_ACK; Front-end message types",
    ),
    (
        "malformed-payload",
        "a payload of the wrong size is refused or ends the connection, never acted on",
        "Message types: VHOST_USER_SET_VRING_NUM (struct vhost_vring_state)",
    ),
];

fn raw_check(index: usize) -> Check {
    let (id, rule, section) = RAW_CHECKS[index];
    check(id, rule, section)
}

fn reply_ack(mut raw: Raw, offers: &Offers) -> Check {
    let c = raw_check(0);
    if !offers.offers(ProtocolFeatures::REPLY_ACK) {
        return c.skip("REPLY_ACK is not offered");
    }
    if raw.set_u64(FrontendCode::SetProtocolFeatures, acked(offers).bits(), NEED_REPLY).is_err() {
        return c.fail("the connection closed");
    }
    match raw.reply() {
        Some(a) if a.code == FrontendCode::SetProtocolFeatures.as_u32() && a.u64() == Some(0) => {
            c.pass("SET_PROTOCOL_FEATURES acknowledged with 0")
        }
        Some(a) => c.fail(format!("answered code {} with {:?}", a.code, a.u64())),
        None => c.fail("no acknowledgement"),
    }
}

fn unknown_request(mut raw: Raw, offers: &Offers) -> Check {
    let c = raw_check(1);
    if !offers.offers(ProtocolFeatures::REPLY_ACK) {
        return c.skip("REPLY_ACK is not offered: nothing says how to refuse");
    }
    const UNKNOWN: u32 = 0x7f0;
    if raw.send(UNKNOWN, NEED_REPLY, &[]).is_err() {
        return c.fail("the connection closed");
    }
    let answer = raw.reply();
    let alive = raw.alive();
    match (answer, alive) {
        (Some(a), true) if a.code == UNKNOWN && a.u64().is_some_and(|s| s != 0) => {
            c.pass(format!("refused with status {}", a.u64().unwrap_or(0)))
        }
        (None, true) => c.pass("ignored (no reply), the connection still serves"),
        (Some(a), true) => c.fail(format!("accepted: status {:?}", a.u64())),
        (_, false) => c.fail("the back-end closed the connection instead of answering NEED_REPLY"),
    }
}

fn malformed_payload(mut raw: Raw, _offers: &Offers) -> Check {
    let c = raw_check(2);
    // SET_VRING_NUM carries 8 bytes; 4 is malformed.
    if raw.send(FrontendCode::SetVringNum.as_u32(), NEED_REPLY, &64u32.to_le_bytes()).is_err() {
        return c.pass("the back-end closed the connection (the spec allows it)");
    }
    match raw.reply() {
        Some(a) if a.u64() == Some(0) => c.fail("acknowledged as if it were valid"),
        Some(a) => {
            let alive = raw.alive();
            c.pass(format!(
                "refused with status {:?}{}",
                a.u64(),
                if alive { "" } else { ", then closed" }
            ))
        }
        None => c.pass("the back-end closed the connection (the spec allows it)"),
    }
}

fn restore_path(target: &mut Target, offers: &Offers) -> Check {
    let c = check(
        "restore-path",
        "REPLY_ACK holds for a front-end restoring a session without GET_FEATURES or \
         GET_PROTOCOL_FEATURES",
        "Communication: REPLY_ACK; Migration",
    );
    if !offers.offers(ProtocolFeatures::REPLY_ACK) {
        return c.skip("REPLY_ACK is not offered");
    }
    let mut raw = match fresh(target) {
        Ok(raw) => raw,
        Err(e) => return c.skip(format!("no second connection ({e}); give --spawn")),
    };
    let acked = acked(offers);
    let features =
        offers.features & (VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES).bits();
    for (code, value) in [
        (FrontendCode::SetOwner, None),
        (FrontendCode::SetProtocolFeatures, Some(acked.bits())),
        (FrontendCode::SetFeatures, Some(features)),
    ] {
        let sent = match value {
            Some(v) => raw.set_u64(code, v, NEED_REPLY),
            None => raw.send(code.as_u32(), NEED_REPLY, &[]),
        };
        if sent.is_err() {
            return c.fail(format!("the connection closed before {code:?}"));
        }
        match raw.reply() {
            Some(a) if a.code == code.as_u32() && a.u64() == Some(0) => {}
            Some(a) => return c.fail(format!("{code:?} answered with {:?}", a.u64())),
            None => {
                return c
                    .fail(format!("{code:?} was never acknowledged (a restoring front-end hangs)"))
            }
        }
    }
    c.pass("SET_OWNER, SET_PROTOCOL_FEATURES and SET_FEATURES acknowledged")
}

fn ring_base_kept(target: &mut Target, offers: &Offers) -> Check {
    let c = check(
        "ring-start-stop",
        "a ring started at a base stops at GET_VRING_BASE and returns that base",
        "Ring states; VHOST_USER_GET_VRING_BASE",
    );
    let stream = match target.connect() {
        Ok(s) => s,
        Err(e) => return c.skip(format!("no second connection ({e}); give --spawn")),
    };
    let outcome = (|| -> Result<VringBase, String> {
        let mut client = Client::from_stream(stream).map_err(|e| e.to_string())?;
        client.set_timeout(WAIT).map_err(|e| e.to_string())?;
        let features = VirtioFeatures::from_bits_retain(offers.features)
            & (VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES);
        let protocol = offers.protocol_features()
            & (ProtocolFeatures::MQ
                | ProtocolFeatures::REPLY_ACK
                | ProtocolFeatures::CONFIGURE_MEM_SLOTS);
        client.handshake(features, protocol).map_err(|e| format!("handshake: {e}"))?;
        let ram = GuestRegion::new(0, 1 << 20).map_err(|e| e.to_string())?;
        client.set_mem_table(&[ram.share()]).map_err(|e| format!("SET_MEM_TABLE: {e}"))?;
        // An empty ring whose indexes already stand at 7: nothing to serve.
        let (desc, avail, size) = (0x1_0000u64, 0x1_0000u64 + 16 * 64, 64u16);
        let used = (avail + 6 + 2 * 64 + 3) & !3;
        ram.memory().write_obj(7u16.to_le(), GuestAddress(avail + 2)).map_err(|e| e.to_string())?;
        ram.memory().write_obj(7u16.to_le(), GuestAddress(used + 2)).map_err(|e| e.to_string())?;
        let (call, kick) =
            (eventfd().map_err(|e| e.to_string())?, eventfd().map_err(|e| e.to_string())?);
        let host = ram.host_address(desc).map_err(|e| e.to_string())?;
        let start = VringStart {
            base: VringBase::split(7),
            ..VringStart::split(size, host, call.as_fd(), kick.as_fd())
        };
        client.start_vring(VringIndex(0), start).map_err(|e| format!("starting ring 0: {e}"))?;
        client.stop_vring(VringIndex(0)).map_err(|e| format!("GET_VRING_BASE: {e}"))
    })();
    match outcome {
        Ok(base) if base == VringBase::split(7) => c.pass("started at 7, stopped at 7"),
        Ok(base) => c.fail(format!("started at 7, GET_VRING_BASE said {base:?}")),
        Err(e) => c.fail(e),
    }
}

fn postcopy(target: &mut Target, offers: &Offers) -> Check {
    let c = check(
        "postcopy",
        "POSTCOPY_ADVISE hands over a userfaultfd, LISTEN and END are acknowledged, and a \
         SET_MEM_TABLE while listening is answered with the back-end's own mapping bases",
        "Migration (postcopy); VHOST_USER_SET_MEM_TABLE",
    );
    if !offers.offers(ProtocolFeatures::PAGEFAULT) {
        return c.skip("PAGEFAULT is not offered");
    }
    let stream = match target.connect() {
        Ok(s) => s,
        Err(e) => return c.skip(format!("no second connection ({e}); give --spawn")),
    };
    let outcome = (|| -> Result<(u64, u64), String> {
        let mut client = Client::from_stream(stream).map_err(|e| e.to_string())?;
        client.set_timeout(WAIT).map_err(|e| e.to_string())?;
        let features = VirtioFeatures::from_bits_retain(offers.features)
            & (VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES);
        // Postcopy is forbidden with memory slots, so they are not asked for.
        let protocol = offers.protocol_features()
            & (ProtocolFeatures::MQ | ProtocolFeatures::REPLY_ACK | ProtocolFeatures::PAGEFAULT);
        client.handshake(features, protocol).map_err(|e| format!("handshake: {e}"))?;
        let userfaultfd = client.postcopy_advise().map_err(|e| format!("POSTCOPY_ADVISE: {e}"))?;
        let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&userfaultfd));
        let kind = std::fs::read_link(fd).map_err(|e| e.to_string())?;
        if kind.to_string_lossy() != "anon_inode:[userfaultfd]" {
            return Err(format!("POSTCOPY_ADVISE handed over {}", kind.display()));
        }
        client.postcopy_listen().map_err(|e| format!("POSTCOPY_LISTEN: {e}"))?;
        let ram = GuestRegion::new(0, 1 << 20).map_err(|e| e.to_string())?;
        let bases = client
            .postcopy_set_mem_table(&[ram.share()], |_| {})
            .map_err(|e| format!("SET_MEM_TABLE while listening: {e}"))?;
        client.postcopy_end().map_err(|e| format!("POSTCOPY_END: {e}"))?;
        let ours = ram.host_address(0).map_err(|e| e.to_string())?;
        Ok((bases.first().copied().unwrap_or(0), ours))
    })();
    match outcome {
        // The back-end is another process: with address-space randomization on, the odds that
        // it mapped the region at the very address the front-end has it are nil.
        Ok((base, ours)) if base == ours && !randomized() => c.skip(format!(
            "the answer names {base:#x}, the front-end's own address; with address-space \
             randomization off that may be chance"
        )),
        Ok((base, ours)) if base == ours => c.fail(format!(
            "SET_MEM_TABLE was answered with the front-end's own address {base:#x}, not the \
             back-end's mapping base: a VMM would resolve the back-end's faults at the wrong \
             place"
        )),
        Ok((base, _)) => c.pass(format!(
            "userfaultfd handed over, region mapped at {base:#x}, LISTEN and END acknowledged"
        )),
        Err(e) => c.fail(e),
    }
}

/// Whether the kernel randomizes where processes map memory.
fn randomized() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").is_ok_and(|v| v.trim() != "0")
}

fn reconnect(target: &mut Target) -> Check {
    let c = check(
        "reconnect",
        "after a front-end disconnects, a new one is served",
        "Introduction (the socket; reconnection)",
    );
    if target.respawns() {
        return c.skip("the back-end is started anew for each connection (--spawn)");
    }
    match fresh(target).map(|mut raw| raw.alive()) {
        Ok(true) => c.pass("a new connection is served"),
        Ok(false) => c.fail("a new connection is accepted but not served"),
        Err(e) => c.skip(format!("the back-end serves one front-end ({e})")),
    }
}
