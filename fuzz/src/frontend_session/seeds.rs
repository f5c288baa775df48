//! The `frontend_session` seed corpus: whole sessions a VMM runs, each call answered by fitting
//! replies, written as scripts.

use vhu_core::message::TransferDirection;
use vhu_core::{ProtocolFeatures, VirtioFeatures};

use super::script::{encode, Step};
use super::{Fit, Op};
use crate::frontend_model::{Config, Ring, Saved, Vmm};

/// A device offering VERSION_1 and EVENT_IDX, the default protocol features, bit 30 wanted.
pub(super) fn config() -> Config {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::RING_EVENT_IDX;
    Config { device_features: features.bits(), toggle: 0, protocol_features: true }
}

fn vmm(vmm: Vmm) -> Step {
    Step::Op(Op::Vmm(vmm))
}

/// Fitting successes: everything offered, two queues, base 7 for a stopped ring.
fn settle() -> Step {
    Step::Settle(Fit { status: 0, value: 7, small: 2, fd: true })
}

/// A call and the replies that answer it.
fn call(call: Vmm) -> [Step; 2] {
    [vmm(call), settle()]
}

/// Connects: the back-end offers every feature bit.
fn connect() -> Vec<Step> {
    vec![
        vmm(Vmm::Connect(true)),
        Step::Settle(Fit { status: 0, value: u64::MAX, small: 2, fd: true }),
    ]
}

/// A device behind a virtual IOMMU whose VMM wants postcopy (and so no memory slots) and
/// crypto sessions.
fn postcopy_config() -> Config {
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::ACCESS_PLATFORM;
    let toggle = ProtocolFeatures::PAGEFAULT
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
        | ProtocolFeatures::CRYPTO_SESSION;
    Config {
        device_features: features.bits(),
        toggle: toggle.bits() as u32,
        protocol_features: true,
    }
}

fn ring(base: u32) -> Ring {
    Ring { size: 8, raw_size: 0, base, log: false, call: true, kick: true }
}

/// One 1 MiB region, then rings 0 and 1 started from `base`.
pub(super) fn memory_and_rings(base: u32) -> Vec<Step> {
    [
        &call(Vmm::SetMemTable(vec![(0, 16)]))[..],
        &call(Vmm::StartVring(0, ring(base))),
        &call(Vmm::SetVringEnable(0, true)),
        &call(Vmm::StartVring(1, ring(base))),
        &call(Vmm::SetVringEnable(1, true)),
    ]
    .concat()
}

fn stop_rings() -> Vec<Step> {
    [&call(Vmm::SetVringEnable(0, false))[..], &call(Vmm::StopVring(0)), &call(Vmm::StopVring(1))]
        .concat()
}

/// The scripts of the corpus, by name.
pub(super) fn scripts() -> Vec<(&'static str, Vec<Step>)> {
    let running = [connect(), memory_and_rings(0)].concat();
    let saved = Saved {
        last: true,
        offered: 0,
        features: 0,
        protocol: ProtocolFeatures::REPLY_ACK.bits() as u32,
        supported_only: true,
        queues: Some(2),
        slots: None,
    };
    vec![
        ("qemu_rings_running", running.clone()),
        ("qemu_start_stop", [running.clone(), stop_rings()].concat()),
        (
            "restore_reply_ack",
            [
                connect(),
                vec![Step::Op(Op::Reconnect(config()))],
                call(Vmm::Restore(saved, true)).to_vec(),
                memory_and_rings(9),
            ]
            .concat(),
        ),
        (
            "hotplug_add_mem_reg",
            [
                connect(),
                call(Vmm::SetMemTable(vec![(0, 16)])).to_vec(),
                call(Vmm::AddRegion(1, 16)).to_vec(),
                call(Vmm::AddRegion(2, 4)).to_vec(),
                call(Vmm::RemoveRegion(2)).to_vec(),
            ]
            .concat(),
        ),
        (
            "device_state_save",
            [
                running.clone(),
                stop_rings(),
                call(Vmm::SetDeviceStateFd(TransferDirection::Save)).to_vec(),
                call(Vmm::CheckDeviceState).to_vec(),
            ]
            .concat(),
        ),
        (
            "postcopy_crypto_iotlb",
            [
                vec![Step::Op(Op::Reconnect(postcopy_config()))],
                connect(),
                call(Vmm::PostcopyAdvise).to_vec(),
                call(Vmm::PostcopyListen).to_vec(),
                call(Vmm::SetMemTable(vec![(0, 16), (1, 4)])).to_vec(),
                call(Vmm::PostcopyEnd).to_vec(),
                call(Vmm::IotlbMsg(4, false)).to_vec(),
                call(Vmm::CreateCryptoSession(24)).to_vec(),
                call(Vmm::CloseCryptoSession(3)).to_vec(),
                call(Vmm::ResetOwner).to_vec(),
            ]
            .concat(),
        ),
        (
            "config_status_log",
            [
                connect(),
                call(Vmm::SetMemTable(vec![(0, 16)])).to_vec(),
                call(Vmm::GetConfig(0, 16)).to_vec(),
                call(Vmm::SetConfig(4, vec![1, 2, 3, 4], vhu_core::message::ConfigFlags::Writable))
                    .to_vec(),
                call(Vmm::SetStatus(0xf)).to_vec(),
                call(Vmm::GetStatus).to_vec(),
                call(Vmm::SetLogBase(4)).to_vec(),
                call(Vmm::SetLogging(true)).to_vec(),
                call(Vmm::GetInflightFd(2, 256)).to_vec(),
                call(Vmm::SetInflightFd(4)).to_vec(),
            ]
            .concat(),
        ),
    ]
}

/// The seed corpus: a name and an input for each file of [`super::CORPUS_DIR`].
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    scripts().into_iter().map(|(name, steps)| (name, encode(&config(), &steps))).collect()
}
