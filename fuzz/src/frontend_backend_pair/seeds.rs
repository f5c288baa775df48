//! The `frontend_backend_pair` seed corpus: whole sessions a VMM runs against the back-end,
//! every answer the fitting success, written as scripts.

use vhu_core::message::{ConfigFlags, TransferDirection};
use vhu_core::{ProtocolFeatures, VirtioFeatures};

use super::script::encode;
use super::{Api, Device, Op};
use crate::frontend_model::{Config, Ring, Saved, Vmm};

/// Two queues, the rich protocol offer, every optional feature, a 40-byte config space, 16 slots.
pub(super) fn device() -> Device {
    Device { queues: 1, toggle: 0, features: 0, config_size: 40, slots: 8 }
}

/// A front-end for VERSION_1 and EVENT_IDX devices, the default protocol features, bit 30 wanted.
pub(super) fn config() -> Config {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::RING_EVENT_IDX;
    Config { device_features: features.bits(), toggle: 0, protocol_features: true }
}

fn ring(base: u32) -> Ring {
    Ring { size: 8, raw_size: 0, base, log: false, call: true, kick: true }
}

/// Connects and lets the handshake run.
fn connect() -> Vec<Op> {
    vec![Op::Vmm(Vmm::Connect(true)), Op::Pump]
}

/// One 1 MiB region, then rings 0 and 1 started from `base` and enabled.
fn memory_and_rings(base: u32) -> Vec<Op> {
    [
        Vmm::SetMemTable(vec![(0, 16)]),
        Vmm::StartVring(0, ring(base)),
        Vmm::SetVringEnable(0, true),
        Vmm::StartVring(1, ring(base)),
        Vmm::SetVringEnable(1, true),
    ]
    .into_iter()
    .map(Op::Vmm)
    .chain([Op::Pump])
    .collect()
}

/// Calls, then everything moves.
fn calls(calls: impl IntoIterator<Item = Vmm>) -> Vec<Op> {
    calls.into_iter().map(Op::Vmm).chain([Op::Pump]).collect()
}

/// The device processes a few buffers, then QEMU disables ring 0 and stops both.
fn stop_rings() -> Vec<Op> {
    let mut ops = vec![Op::Process(0, 5), Op::Process(1, 2)];
    ops.extend(calls([Vmm::SetVringEnable(0, false), Vmm::StopVring(0), Vmm::StopVring(1)]));
    ops
}

/// The scripts of the corpus, by name.
pub(super) fn scripts() -> Vec<(&'static str, Vec<Op>)> {
    let running = [connect(), memory_and_rings(0)].concat();
    let features = VirtioFeatures::VERSION_1
        | VirtioFeatures::PROTOCOL_FEATURES
        | VirtioFeatures::RING_EVENT_IDX;
    let protocol = ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::RESET_DEVICE
        | ProtocolFeatures::STATUS;
    let saved = Saved {
        last: false,
        offered: features.bits(),
        features: features.bits(),
        protocol: protocol.bits() as u32,
        supported_only: true,
        queues: Some(2),
        slots: Some(16),
    };
    vec![
        ("qemu_rings_running", running.clone()),
        ("qemu_start_stop", [running.clone(), stop_rings()].concat()),
        ("restore_reply_ack", [calls([Vmm::Restore(saved, true)]), memory_and_rings(9)].concat()),
        (
            "hotplug_add_mem_reg",
            [
                connect(),
                calls([Vmm::SetMemTable(vec![(0, 16)])]),
                calls([Vmm::AddRegion(1, 16), Vmm::AddRegion(2, 4)]),
                calls([Vmm::RemoveRegion(2)]),
            ]
            .concat(),
        ),
        (
            "device_state_save",
            [
                running.clone(),
                stop_rings(),
                calls([Vmm::SetDeviceStateFd(TransferDirection::Save), Vmm::CheckDeviceState]),
            ]
            .concat(),
        ),
        (
            "setup_config_channel",
            [
                vec![Op::Setup { pages: 16, rings: 2, base: 3 }, Op::Process(0, 4)],
                calls([
                    Vmm::GetConfig(0, 16),
                    Vmm::SetConfig(4, vec![1, 2, 3, 4], ConfigFlags::Writable),
                    Vmm::SetStatus(0xf),
                    Vmm::GetStatus,
                    Vmm::SetLogging(true),
                ]),
                vec![
                    Op::Api(Api::ConfigChange),
                    Op::Api(Api::VringCall(0)),
                    Op::Api(Api::VringCall(1)),
                    Op::Pump,
                ],
            ]
            .concat(),
        ),
    ]
}

/// The seed corpus: a name and an input for each file of [`super::CORPUS_DIR`].
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    scripts().into_iter().map(|(name, ops)| (name, encode(&device(), &config(), &ops))).collect()
}
