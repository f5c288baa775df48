//! The simulated driver and device of the pair: what the driver does for each action and the
//! completion it owes, the device's calls on the back-end channel API, and the comparison of the
//! two sides' views.

use super::*;

/// What the driver does for one action, and the completion it then owes.
pub(super) fn act(
    action: Action<'_>,
    rings: &mut [Option<u32>],
    config: &mut [u8],
) -> Option<Owed> {
    {
        match action {
            Action::StartVring { index, config, .. } => {
                let slot = rings.get_mut(usize::from(index.0)).expect("ring in range");
                assert!(slot.is_none(), "ring {} started twice", index.0);
                *slot = Some(config.base.0);
                Some(Owed::Started(index))
            }
            Action::StopVring { index, .. } => Some(Owed::Stopped(index)),
            Action::ResetDevice => {
                rings.iter_mut().for_each(|ring| *ring = None);
                Some(Owed::Done)
            }
            Action::ReadConfig { offset, size } => {
                let end = offset as usize + size as usize;
                assert!(end <= config.len(), "config read {offset}+{size} outside the space");
                Some(Owed::Config { offset, size })
            }
            Action::WriteConfig { offset, data, .. } => {
                let start = offset as usize;
                let range = start..start + data.len();
                let target = config.get_mut(range).expect("config write inside the space");
                target.copy_from_slice(data);
                Some(Owed::Done)
            }
            Action::MapRegion { .. } => Some(Owed::Mapped(1)),
            Action::UpdateVring { .. }
            | Action::MapLog { .. }
            | Action::SetInflight { .. }
            | Action::CheckDeviceState
            | Action::Iotlb(_)
            | Action::SetBackendChannel(_)
            | Action::PostcopyListen
            | Action::PostcopyEnd => Some(Owed::Done),
            Action::AllocateInflight { .. } => Some(Owed::Inflight),
            Action::SetDeviceStateFd { .. } => Some(Owed::DeviceState),
            Action::GetSharedObject(_) => Some(Owed::SharedObject),
            Action::PostcopyAdvise => Some(Owed::Userfaultfd),
            _ => None,
        }
    }
}

impl Pair {
    /// The driver answers the completion it owes.
    pub(super) fn complete(&mut self, answer: DriverAnswer) {
        let owed = self.owed.take().unwrap_or(Owed::Done);
        let correct = matches!(answer, DriverAnswer::Correct(_));
        // Owed data the completion borrows; it lives until the completion is handled.
        let bytes: Vec<u8>;
        let bases: Vec<u64>;
        // Where the driver maps each region when the back-end registers them for postcopy.
        let postcopy_bases: Vec<u64> = match owed {
            Owed::Mapped(n) => (0..n as u64).map(|i| 0x7e00_0000_0000 + (i << 28)).collect(),
            _ => Vec::new(),
        };
        // A table's completion has two forms; the back-end takes the one it waits for.
        let mut postcopy = None;
        let completion = match answer {
            DriverAnswer::Correct(advance) => match owed {
                Owed::Done | Owed::Started(_) => Completion::Done(Ok(())),
                Owed::Mapped(_) => {
                    postcopy = Some(Completion::PostcopyMapped(Ok(&postcopy_bases)));
                    Completion::Done(Ok(()))
                }
                Owed::Stopped(index) => {
                    let ring = self.rings.get(usize::from(index.0)).copied().flatten();
                    let base = ring.unwrap_or(0);
                    let base = if self.packed {
                        base
                    } else {
                        u32::from((base as u16).wrapping_add(u16::from(advance)))
                    };
                    Completion::VringStopped { index, base: VringBase(base) }
                }
                Owed::Config { offset, size } => {
                    let range = offset as usize..(offset + size) as usize;
                    bytes = self.config.get(range).map(<[u8]>::to_vec).unwrap_or_default();
                    Completion::ConfigRead(Some(&bytes))
                }
                Owed::Inflight => Completion::InflightAllocated(Ok((self.be.fresh(), 0))),
                Owed::DeviceState => {
                    let fd = (advance % 2 == 1).then(|| self.be.fresh());
                    Completion::DeviceStateFd(Ok(fd))
                }
                Owed::SharedObject => Completion::SharedObject(Ok(self.be.fresh())),
                Owed::Userfaultfd => Completion::Userfaultfd(Ok(self.be.fresh())),
            },
            DriverAnswer::Fail(status) => {
                let status = u64::from(status.max(1));
                match owed {
                    Owed::Config { .. } => Completion::ConfigRead(None),
                    Owed::Inflight => Completion::InflightAllocated(Err(status)),
                    Owed::DeviceState => Completion::DeviceStateFd(Err(status as u8)),
                    Owed::SharedObject => Completion::SharedObject(Err(status)),
                    Owed::Userfaultfd => Completion::Userfaultfd(Err(status)),
                    Owed::Mapped(_) => {
                        postcopy = Some(Completion::PostcopyMapped(Err(status)));
                        Completion::Done(Err(status))
                    }
                    Owed::Done | Owed::Started(_) | Owed::Stopped(_) => {
                        Completion::Done(Err(status))
                    }
                }
            }
            DriverAnswer::Wrong(wrong) => match wrong {
                Wrong::Done(ok) => Completion::Done(if ok { Ok(()) } else { Err(5) }),
                Wrong::Stopped(index, base) => {
                    Completion::VringStopped { index: VringIndex(index % 4), base: VringBase(base) }
                }
                Wrong::Config(data) => {
                    bytes = data.into_iter().take(64).collect();
                    Completion::ConfigRead(Some(&bytes))
                }
                Wrong::ConfigFailed => Completion::ConfigRead(None),
                Wrong::Inflight(ok) => Completion::InflightAllocated(if ok {
                    Ok((self.be.fresh(), 0))
                } else {
                    Err(1)
                }),
                Wrong::DeviceState(fd) => Completion::DeviceStateFd(match fd {
                    Some(true) => Ok(Some(self.be.fresh())),
                    Some(false) => Ok(None),
                    None => Err(3),
                }),
                Wrong::SharedObject(ok) => {
                    Completion::SharedObject(if ok { Ok(self.be.fresh()) } else { Err(2) })
                }
                Wrong::Userfaultfd(ok) => {
                    Completion::Userfaultfd(if ok { Ok(self.be.fresh()) } else { Err(4) })
                }
                Wrong::PostcopyMapped(list) => {
                    bases = list.into_iter().take(8).collect();
                    Completion::PostcopyMapped(Ok(&bases))
                }
            },
        };
        // A token in a completion enters the back-end and leaves it with this input's outputs.
        let token = match completion {
            Completion::InflightAllocated(Ok((fd, _)))
            | Completion::DeviceStateFd(Ok(Some(fd)))
            | Completion::SharedObject(Ok(fd))
            | Completion::Userfaultfd(Ok(fd)) => Some(fd),
            _ => None,
        };
        if let Some(fd) = token {
            self.be.enter(fd, true);
        }
        let mut accepted = self.backend.handle_completion(completion).is_ok();
        if let (false, Some(postcopy)) = (accepted, postcopy) {
            accepted = self.backend.handle_completion(postcopy).is_ok();
        }
        if accepted {
            match completion {
                Completion::VringStopped { index, base } => {
                    self.stop = Some((index, base));
                    if let Some(ring) = self.rings.get_mut(usize::from(index.0)) {
                        *ring = None;
                    }
                }
                // A ring the device could not start is not started (core rolls it back).
                Completion::Done(Err(_)) => {
                    if let Owed::Started(index) = owed {
                        if let Some(ring) = self.rings.get_mut(usize::from(index.0)) {
                            *ring = None;
                        }
                    }
                }
                Completion::ConfigRead(data) => {
                    // The back-end sends the bytes only if there are as many as asked.
                    let asked = match owed {
                        Owed::Config { size, .. } => size as usize,
                        _ => usize::MAX,
                    };
                    self.read = data.filter(|d| d.len() == asked).map(<[u8]>::to_vec);
                }
                _ => {}
            }
        } else {
            // Still owed.
            self.owed = Some(owed);
        }
        if !correct || !accepted {
            self.in_sync = false;
        }
        self.drain_backend();
    }

    /// A call of the device on the back-end channel API.
    pub(super) fn api(&mut self, api: Api) {
        let mut token = None;
        let mut fresh = |be: &mut Ledger| {
            let fd = be.fresh();
            token = Some(fd);
            fd
        };
        let result = match api {
            Api::ConfigChange => self.backend.send_config_change(),
            Api::ShmemMap(mapping) => {
                let fd = fresh(&mut self.be);
                self.backend.send_shmem_map(mapping, fd)
            }
            Api::ShmemUnmap(mapping) => self.backend.send_shmem_unmap(mapping),
            Api::SharedObjectAdd(b) => self.backend.send_shared_object_add(Uuid([b; 16])),
            Api::SharedObjectRemove(b) => self.backend.send_shared_object_remove(Uuid([b; 16])),
            Api::SharedObjectLookup(b) => self.backend.send_shared_object_lookup(Uuid([b; 16])),
            Api::VringCall(i) => self.backend.send_vring_call(VringIndex(i % 4)),
            Api::VringErr(i) => self.backend.send_vring_err(VringIndex(i % 4)),
            Api::HostNotifier(i, with_fd) => {
                let fd = with_fd.then(|| fresh(&mut self.be));
                self.backend.send_host_notifier(VringIndex(i % 4), 0x1000, 0, fd)
            }
            Api::Iotlb(msg) => self.backend.send_iotlb(msg),
        };
        // A refused call leaves the token with the caller.
        if let (Ok(_), Some(fd)) = (result, token) {
            self.be.enter(fd, true);
        }
        self.drain_backend();
    }

    /// When both sides are idle and nothing failed, they agree on what was negotiated and set up.
    pub(super) fn check_views(&self) {
        let idle = !self.closed
            && self.in_sync
            && self.fe.connected
            && self.frontend.is_idle()
            && self.to_backend.is_empty()
            && self.to_frontend.is_empty()
            && self.channel.is_empty()
            && !self.backend.is_awaiting_completion();
        if !idle {
            return;
        }
        let negotiated = self.frontend.negotiated().expect("connected");
        assert_eq!(
            self.backend.acked_protocol_features(),
            negotiated.protocol_features,
            "protocol features"
        );
        let mut features = negotiated.features;
        features.set(VirtioFeatures::LOG_ALL, self.frontend.is_logging());
        let expected = (!self.features_reset).then_some(features);
        assert_eq!(self.backend.acked_features(), expected, "virtio features");
        // With GPA_ADDRESSES the back-end is told guest addresses where the VMM has its own.
        let gpa = negotiated.protocol_features.contains(ProtocolFeatures::GPA_ADDRESSES);
        let sorted = |regions: &mut dyn Iterator<Item = &Region>, sent: bool| {
            let user = |r: &Region| if sent && gpa { r.guest_address } else { r.user_address };
            let mut list: Vec<_> =
                regions.map(|r| (r.guest_address, r.size, user(r), r.mmap_offset)).collect();
            list.sort_unstable();
            list
        };
        assert_eq!(
            sorted(&mut self.frontend.regions().iter(), true),
            sorted(&mut self.backend.regions().iter(), false),
            "memory regions"
        );
        for index in 0..=u8::MAX {
            let index = VringIndex(index);
            let started = self.backend.vring_state(index).is_some_and(|s| s.started);
            assert_eq!(self.frontend.is_vring_started(index), started, "ring {} started", index.0);
        }
    }
}

/// The tokens an action hands to the driver.
pub(super) fn handed_off(action: &Action<'_>) -> Vec<FdToken> {
    action.fds().into_iter().collect()
}
