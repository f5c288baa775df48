//! The `backend_session` seed corpus: the request sequences a VMM sends, written as scripts.

use vhu_core::{ProtocolFeatures, VirtioFeatures};

use super::script::encode;
use super::{spec, Api, Comp, Op, Req};

/// The protocol features a QEMU-like front-end acks: those it knows that the back-end offers.
pub(super) fn protocol(reply_ack: bool) -> u32 {
    let mut wanted = ProtocolFeatures::MQ
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::BACKEND_REQ
        | ProtocolFeatures::BACKEND_SEND_FD
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::RESET_DEVICE
        | ProtocolFeatures::STATUS
        | ProtocolFeatures::LOG_SHMFD
        | ProtocolFeatures::INFLIGHT_SHMFD
        | ProtocolFeatures::DEVICE_STATE
        | ProtocolFeatures::SHARED_OBJECT
        | ProtocolFeatures::SHMEM;
    wanted.set(ProtocolFeatures::REPLY_ACK, reply_ack);
    let bits = (wanted & spec().protocol_features).bits();
    u32::try_from(bits).expect("the acked protocol features fit 32 bits")
}

fn req(req: Req) -> Op {
    Op::Request(req, false)
}

/// The handshake: features, protocol features, queue and slot counts, owner, acked features.
fn negotiate(reply_ack: bool) -> Vec<Op> {
    let features = (VirtioFeatures::VERSION_1
        | VirtioFeatures::PROTOCOL_FEATURES
        | VirtioFeatures::RING_EVENT_IDX)
        & spec().features;
    vec![
        req(Req::GetFeatures),
        req(Req::GetProtocolFeatures),
        req(Req::SetProtocolFeatures(protocol(reply_ack))),
        req(Req::GetQueueNum),
        req(Req::GetMaxMemSlots),
        req(Req::SetOwner),
        Op::Request(Req::SetFeatures(features.bits()), reply_ack),
    ]
}

/// One 1 MiB region at guest address 0, mapped by the driver.
fn memory(reply_ack: bool) -> Vec<Op> {
    vec![Op::Request(Req::SetMemTable(vec![(0, 16)]), reply_ack), Op::Complete(Comp::Ok)]
}

/// Configures ring `i` from `base` and starts it with its kick (the device reports the start),
/// then enables it.
fn start(i: u8, base: u32, reply_ack: bool) -> Vec<Op> {
    let desc = 0x100 + 0x40 * u16::from(i);
    let request = |r| Op::Request(r, reply_ack);
    vec![
        request(Req::SetVringNum(i, 256)),
        request(Req::SetVringAddr(i, desc, desc + 0x10, desc + 0x20, false)),
        request(Req::SetVringBase(i, base)),
        request(Req::SetVringCall(i, true)),
        request(Req::SetVringKick(i, true)),
        Op::Complete(Comp::Ok),
        request(Req::SetVringEnable(i, true)),
    ]
}

/// Disables ring `i` and stops it; the driver reports `base`.
fn stop(i: u8, base: u32) -> Vec<Op> {
    vec![
        req(Req::SetVringEnable(i, false)),
        req(Req::GetVringBase(i)),
        Op::Complete(Comp::Stopped(i, base)),
    ]
}

/// The scripts of the corpus, by name.
pub(super) fn scripts() -> Vec<(&'static str, Vec<Op>)> {
    let running =
        [negotiate(false), memory(false), start(0, 0, false), start(1, 0, false)].concat();
    vec![
        ("qemu_rings_running", running.clone()),
        ("qemu_start_stop", [running.clone(), stop(0, 7), stop(1, 9)].concat()),
        (
            "restore_reply_ack",
            [negotiate(true), memory(true), start(0, 7, true), start(1, 9, true)].concat(),
        ),
        (
            "hotplug_add_mem_reg",
            [
                negotiate(false),
                memory(false),
                vec![
                    req(Req::AddMemReg(1, 16)),
                    Op::Complete(Comp::Ok),
                    req(Req::AddMemReg(2, 4)),
                    Op::Complete(Comp::Ok),
                    req(Req::RemMemReg(2, 4, false)),
                ],
            ]
            .concat(),
        ),
        (
            "device_state_save",
            [
                running.clone(),
                stop(0, 3),
                stop(1, 4),
                vec![
                    req(Req::SetDeviceStateFd(false)),
                    Op::Complete(Comp::DeviceState(Some(false))),
                    req(Req::CheckDeviceState),
                    Op::Complete(Comp::Ok),
                ],
            ]
            .concat(),
        ),
        (
            "config_status_reset",
            [
                negotiate(false),
                vec![
                    req(Req::GetConfig(0, 40)),
                    Op::Complete(Comp::Config((0..40).collect())),
                    req(Req::SetConfig(36, vec![1, 2, 3, 4])),
                    Op::Complete(Comp::Ok),
                    req(Req::SetStatus(0xf)),
                    Op::Complete(Comp::Ok),
                    req(Req::GetStatus),
                    req(Req::ResetDevice),
                    Op::Complete(Comp::Ok),
                ],
            ]
            .concat(),
        ),
        (
            "log_inflight_channel",
            [
                negotiate(false),
                memory(false),
                vec![
                    req(Req::SetBackendReqFd),
                    Op::Complete(Comp::Ok),
                    req(Req::SetLogBase(4, true)),
                    Op::Complete(Comp::Ok),
                    req(Req::GetInflightFd(2, 256)),
                    Op::Complete(Comp::Inflight(true)),
                    req(Req::SetInflightFd(4)),
                    Op::Complete(Comp::Ok),
                ],
                start(0, 0, false),
                vec![
                    Op::Api(Api::ConfigChange),
                    Op::Api(Api::VringCall(0)),
                    Op::Api(Api::ShmemMap(true)),
                    Op::Api(Api::SharedObjectAdd),
                ],
            ]
            .concat(),
        ),
    ]
}

/// The seed corpus: a name and an input for each file of [`super::CORPUS_DIR`].
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    scripts().into_iter().map(|(name, ops)| (name, encode(&ops))).collect()
}
