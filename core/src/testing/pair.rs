//! A `Frontend` and a `Backend` wired together in memory: every request the front-end emits is
//! encoded and fed to the back-end as a frame, the back-end's actions are carried out by a
//! simulated driver, and its replies are encoded and fed back. Descriptors cross the "socket" as
//! fresh tokens on the receiving side, so each side's token balance is checked on its own.

use std::collections::{BTreeMap, VecDeque};
use std::vec;
use std::vec::Vec;

use crate::backend::{
    Action, Backend, BackendOutcome, BackendResult, BackendSpec, Completion,
    Output as BackendOutput,
};
use crate::frontend::{Event, Frontend, FrontendConfig, FrontendError, Negotiated, Output};
use crate::limits::MAX_FRAME_SIZE;
use crate::message::{
    BackendReply, BackendRequest, InflightDesc, Region, TransferDirection, VringBase,
};
use crate::{FdToken, FrontendCode, ProtocolError, Request, VirtioFeatures, VringIndex};

/// Where the simulated driver maps the first region while postcopy listens; each next region
/// 256 MiB further.
pub const POSTCOPY_BASE: u64 = 0x7e00_0000_0000;

/// A front-end event with borrowed data copied out ([`Event`]'s variants, same meaning).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Ev {
    Connected(Negotiated),
    Done(FrontendCode),
    Failed(FrontendError),
    VringStopped {
        index: VringIndex,
        base: VringBase,
    },
    ConfigRead {
        offset: u32,
        data: Vec<u8>,
    },
    Status(u8),
    /// The region sizes by shmid, up to the last non-zero one.
    ShmemConfig(Vec<u64>),
    InflightFd {
        desc: InflightDesc,
        fd: Option<FdToken>,
    },
    DeviceStateFd {
        direction: TransferDirection,
        fd: Option<FdToken>,
    },
    SharedObject,
    BackendRequest {
        request: BackendRequest,
        need_reply: bool,
    },
    PostcopyAdvised {
        userfaultfd: FdToken,
    },
    PostcopyBases(Vec<u64>),
    CryptoSession(Vec<u8>),
}

/// What the simulated back-end driver saw, for assertions (the [`Action`]s of the same names;
/// `Other` for the rest).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Act {
    MapRegion(Region),
    UnmapRegion(Region),
    UnmapAll,
    MapLog { mmap_size: u64 },
    Logging(bool),
    Features(VirtioFeatures),
    StartVring { index: u8, base: VringBase, enabled: bool },
    StopVring(u8),
    Enabled { index: u8, enabled: bool },
    DeviceState(TransferDirection),
    Rarp([u8; 6]),
    Mtu(u16),
    Reset,
    Postcopy(FrontendCode),
    Other,
}

/// A completion the simulated driver owes, with owned data.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Owed {
    Done,
    /// The start of a ring (refused while [`Pair::refuse_starts`] counts).
    Started(VringIndex),
    Stopped(VringIndex),
    Config {
        offset: u32,
        size: u32,
    },
    Inflight,
    DeviceState,
    Userfaultfd,
    /// The regions of a SET_MEM_TABLE: mapped, or, while postcopy listens, mapped and
    /// registered at the bases the pair makes up.
    Mapped,
}

/// A `Frontend` and a `Backend` wired together; see the module docs.
#[derive(Debug)]
pub struct Pair {
    /// The front-end state machine.
    pub frontend: Frontend,
    /// The back-end state machine.
    pub backend: Backend,
    /// The last token handed out.
    pub next_token: u32,
    /// Tokens that entered the front-end (from the VMM or a received message).
    pub fe_in: Vec<FdToken>,
    /// Tokens that left the front-end.
    pub fe_out: Vec<FdToken>,
    /// Tokens that entered the back-end.
    pub be_in: Vec<FdToken>,
    /// Tokens that left the back-end.
    pub be_out: Vec<FdToken>,
    /// Every request the front-end emitted: code and NEED_REPLY.
    pub sent: Vec<(FrontendCode, bool)>,
    /// Every SET_FEATURES the front-end sent.
    pub set_features: Vec<VirtioFeatures>,
    /// The front-end's events.
    pub events: Vec<Ev>,
    /// What the simulated driver did.
    pub acts: Vec<Act>,
    /// The front-end's answers on the back-end channel, as the back-end parsed them.
    pub backend_replies: Vec<BackendReply>,
    /// The front-end's failure answers to back-end requests of codes it does not know (a test
    /// writes those by hand): each request's code and status.
    pub backend_nacks: Vec<(u32, u64)>,
    /// Results of back-end requests, as the back-end reported them.
    pub backend_results: Vec<BackendResult>,
    /// Why the front-end closed, if it did.
    pub frontend_closed: Option<FrontendError>,
    /// Every input the back-end refused.
    pub backend_errors: Vec<ProtocolError>,
    /// The device's next available index per ring, advanced by `process`.
    pub rings: BTreeMap<u8, u16>,
    /// The device's config space.
    pub config: Vec<u8>,
    /// How many ring starts more the device refuses (EINVAL).
    pub refuse_starts: u32,
    /// The device returns its own fd for a state transfer.
    pub device_state_fd: bool,
    /// The simulated driver acknowledged POSTCOPY_LISTEN and not POSTCOPY_END since.
    pub postcopy_listening: bool,
    /// Frames on their way to the back-end, with the sender's tokens.
    pub to_backend: VecDeque<(Vec<u8>, Vec<FdToken>)>,
    /// Replies on their way to the front-end.
    pub to_frontend: VecDeque<(Vec<u8>, Vec<FdToken>)>,
    /// Back-end requests on their way to the front-end.
    pub channel_to_frontend: VecDeque<(Vec<u8>, Vec<FdToken>)>,
}

impl Pair {
    /// A pair of fresh state machines; `device_config` is the device's config space.
    ///
    /// # Panics
    ///
    /// If the spec is invalid.
    pub fn new(spec: BackendSpec, config: FrontendConfig, device_config: Vec<u8>) -> Self {
        Self {
            frontend: Frontend::new(config),
            backend: Backend::new(spec).expect("valid spec"),
            next_token: 100,
            fe_in: Vec::new(),
            fe_out: Vec::new(),
            be_in: Vec::new(),
            be_out: Vec::new(),
            sent: Vec::new(),
            set_features: Vec::new(),
            events: Vec::new(),
            acts: Vec::new(),
            backend_replies: Vec::new(),
            backend_nacks: Vec::new(),
            backend_results: Vec::new(),
            frontend_closed: None,
            backend_errors: Vec::new(),
            rings: BTreeMap::new(),
            config: device_config,
            device_state_fd: false,
            refuse_starts: 0,
            postcopy_listening: false,
            to_backend: VecDeque::new(),
            to_frontend: VecDeque::new(),
            channel_to_frontend: VecDeque::new(),
        }
    }

    /// A fresh token.
    pub fn token(&mut self) -> FdToken {
        self.next_token += 1;
        FdToken(self.next_token)
    }

    /// A descriptor the VMM creates and passes to a front-end call that succeeds.
    pub fn vmm_fd(&mut self) -> FdToken {
        let fd = self.token();
        self.fe_in.push(fd);
        fd
    }

    /// Descriptors arriving with a message: fresh tokens on the receiving side.
    pub fn receive(&mut self, n: usize) -> Vec<FdToken> {
        (0..n).map(|_| self.token()).collect()
    }

    /// Forgets the logs (requests sent, events, actions).
    pub fn clear_log(&mut self) {
        self.sent.clear();
        self.events.clear();
        self.acts.clear();
    }

    /// Drains the front-end's outputs into the pair's queues and logs.
    pub fn drain_frontend(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME_SIZE];
        while let Some(output) = self.frontend.poll_output() {
            match output {
                Output::Request { request, need_reply } => {
                    self.sent.push((request.code(), need_reply));
                    if let Request::SetFeatures(features) = request {
                        self.set_features.push(features);
                    }
                    let len = request.encode_into(need_reply, &mut buf).expect("request encodes");
                    let fds = request.fds().to_vec();
                    self.fe_out.extend(&fds);
                    self.to_backend.push_back((buf[..len].to_vec(), fds));
                }
                Output::BackendReply(reply) => {
                    let len = reply.encode_into(&mut buf).expect("reply encodes");
                    self.fe_out.extend(reply.fds());
                    let fds: Vec<_> = reply.fds().into_iter().collect();
                    let received = self.receive(fds.len());
                    self.be_in.extend(&received);
                    let parsed = Backend::parse_backend_reply(&buf[..len], &received)
                        .expect("back-end channel reply parses");
                    self.backend_replies.push(parsed);
                    // Answers to requests a test wrote by hand are not the back-end's.
                    if self.backend.is_awaiting_backend_reply() {
                        if let Err(error) =
                            self.backend.handle_backend_reply(&buf[..len], &received)
                        {
                            self.backend_errors.push(error);
                        }
                        self.drive_backend();
                    } else if let BackendReply::SharedObjectLookup { fd: Some(fd), .. } = parsed {
                        self.be_out.push(fd);
                    }
                }
                Output::BackendNack { request, status } => {
                    self.backend_nacks.push((request, status));
                }
                Output::Event(event) => {
                    let event = match event {
                        Event::Connected(n) => Ev::Connected(n),
                        Event::Done(code) => Ev::Done(code),
                        Event::Failed(error) => Ev::Failed(error),
                        Event::VringStopped { index, base } => Ev::VringStopped { index, base },
                        Event::ConfigRead { offset, data } => {
                            Ev::ConfigRead { offset, data: data.to_vec() }
                        }
                        Event::Status(status) => Ev::Status(status),
                        Event::ShmemConfig(config) => {
                            let mut sizes: Vec<u64> =
                                config.memory_sizes.iter().map(|s| s.get()).collect();
                            while sizes.last() == Some(&0) {
                                sizes.pop();
                            }
                            Ev::ShmemConfig(sizes)
                        }
                        Event::InflightFd { desc, fd } => {
                            self.fe_out.extend(fd);
                            Ev::InflightFd { desc, fd }
                        }
                        Event::DeviceStateFd { direction, fd } => {
                            self.fe_out.extend(fd);
                            Ev::DeviceStateFd { direction, fd }
                        }
                        Event::SharedObject { fd, .. } => {
                            self.fe_out.push(fd);
                            Ev::SharedObject
                        }
                        Event::BackendRequest { request, need_reply } => {
                            self.fe_out.extend(request.fds());
                            Ev::BackendRequest { request, need_reply }
                        }
                        Event::PostcopyAdvised { userfaultfd } => {
                            self.fe_out.push(userfaultfd);
                            Ev::PostcopyAdvised { userfaultfd }
                        }
                        Event::PostcopyBases(bases) => Ev::PostcopyBases(bases.to_vec()),
                        Event::CryptoSession(session) => Ev::CryptoSession(session.to_vec()),
                    };
                    self.events.push(event);
                }
                Output::CloseFd(fd) => self.fe_out.push(fd),
                Output::Close(error) => self.frontend_closed = Some(error),
            }
            // A VMM that registers postcopy bases as soon as it hears of them.
            if self.frontend.is_awaiting_registration() {
                let _ = self.frontend.postcopy_bases_registered();
            }
        }
    }

    /// Carries out the back-end's outputs, completing actions like a driver would.
    pub fn drive_backend(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME_SIZE];
        loop {
            let mut owed = None;
            let mut mapped = 0u64;
            while let Some(output) = self.backend.poll_output() {
                match output {
                    BackendOutput::Reply(reply) => {
                        let len = reply.encode_into(&mut buf).expect("reply encodes");
                        let fds = reply.fds().to_vec();
                        self.be_out.extend(&fds);
                        self.to_frontend.push_back((buf[..len].to_vec(), fds));
                    }
                    BackendOutput::Nack { request, status } => {
                        let len = crate::message::encode_status(request, status, &mut buf)
                            .expect("status encodes");
                        self.to_frontend.push_back((buf[..len].to_vec(), Vec::new()));
                    }
                    BackendOutput::BackendRequest { id, request, need_reply } => {
                        let len = request.encode_into(need_reply, &mut buf).expect("encodes");
                        let fds = request.fds().to_vec();
                        self.be_out.extend(&fds);
                        self.channel_to_frontend.push_back((buf[..len].to_vec(), fds));
                        self.backend.handle_backend_sent(id);
                    }
                    BackendOutput::BackendResult(result) => {
                        if let BackendOutcome::SharedObject { fd: Some(fd), .. } = result.outcome {
                            self.be_out.push(fd);
                        }
                        self.backend_results.push(result);
                    }
                    BackendOutput::Action(action) => {
                        let (act, fd, completion) =
                            Self::act(action, &mut self.config, &mut self.rings);
                        match act {
                            Act::MapRegion(_) => mapped += 1,
                            Act::Postcopy(FrontendCode::PostcopyListen) => {
                                self.postcopy_listening = true;
                            }
                            Act::Postcopy(FrontendCode::PostcopyEnd) => {
                                self.postcopy_listening = false;
                            }
                            _ => {}
                        }
                        self.acts.push(act);
                        self.be_out.extend(fd);
                        if completion.is_some() {
                            owed = completion;
                        }
                    }
                    BackendOutput::Close(error) => panic!("back-end closed: {error}"),
                }
            }
            if !self.backend.is_awaiting_completion() {
                return;
            }
            let owed = owed.expect("an action said what completes it");
            let result = match owed {
                Owed::Done => self.backend.handle_completion(Completion::Done(Ok(()))),
                Owed::Started(index) if self.refuse_starts > 0 => {
                    self.refuse_starts -= 1;
                    self.rings.remove(&index.0);
                    self.backend.handle_completion(Completion::Done(Err(22)))
                }
                Owed::Started(_) => self.backend.handle_completion(Completion::Done(Ok(()))),
                Owed::Mapped if self.postcopy_listening => {
                    let bases: Vec<u64> =
                        (0..mapped).map(|i| POSTCOPY_BASE + i * 0x1000_0000).collect();
                    self.backend.handle_completion(Completion::PostcopyMapped(Ok(&bases)))
                }
                Owed::Mapped => self.backend.handle_completion(Completion::Done(Ok(()))),
                Owed::Userfaultfd => {
                    let fd = self.token();
                    self.be_in.push(fd);
                    self.backend.handle_completion(Completion::Userfaultfd(Ok(fd)))
                }
                Owed::Stopped(index) => {
                    let base = VringBase::split(*self.rings.get(&index.0).unwrap_or(&0));
                    self.backend.handle_completion(Completion::VringStopped { index, base })
                }
                Owed::Config { offset, size } => {
                    let range = offset as usize..(offset + size) as usize;
                    let data = self.config.get(range).map(<[u8]>::to_vec);
                    self.backend.handle_completion(Completion::ConfigRead(data.as_deref()))
                }
                Owed::Inflight => {
                    let fd = self.token();
                    self.be_in.push(fd);
                    self.backend.handle_completion(Completion::InflightAllocated(Ok((fd, 0))))
                }
                Owed::DeviceState => {
                    let fd = self.device_state_fd.then(|| self.token());
                    self.be_in.extend(fd);
                    self.backend.handle_completion(Completion::DeviceStateFd(Ok(fd)))
                }
            };
            result.expect("completion accepted");
        }
    }

    /// One action: what to log, the token it hands off, and the completion it owes.
    pub fn act(
        action: Action<'_>,
        config: &mut [u8],
        rings: &mut BTreeMap<u8, u16>,
    ) -> (Act, Option<FdToken>, Option<Owed>) {
        match action {
            Action::MapRegion { region, fd } => {
                (Act::MapRegion(region), Some(fd), Some(Owed::Mapped))
            }
            Action::PostcopyAdvise => {
                (Act::Postcopy(FrontendCode::PostcopyAdvise), None, Some(Owed::Userfaultfd))
            }
            Action::PostcopyListen => {
                (Act::Postcopy(FrontendCode::PostcopyListen), None, Some(Owed::Done))
            }
            Action::PostcopyEnd => {
                (Act::Postcopy(FrontendCode::PostcopyEnd), None, Some(Owed::Done))
            }
            Action::UnmapRegion(region) => (Act::UnmapRegion(region), None, None),
            Action::UnmapAll => (Act::UnmapAll, None, None),
            Action::MapLog { fd, mmap_size, .. } => {
                (Act::MapLog { mmap_size }, Some(fd), Some(Owed::Done))
            }
            Action::SetLogging(on) => (Act::Logging(on), None, None),
            Action::FeaturesAcked(features) => (Act::Features(features), None, None),
            Action::StartVring { index, config, kick, enabled } => {
                rings.insert(index.0, config.base.as_split().expect("split base"));
                let act = Act::StartVring { index: index.0, base: config.base, enabled };
                (act, kick, Some(Owed::Started(index)))
            }
            Action::UpdateVring { .. } => (Act::Other, None, Some(Owed::Done)),
            Action::ReplaceKick { kick, .. } => (Act::Other, kick, None),
            Action::SetVringEnabled { index, enabled } => {
                (Act::Enabled { index: index.0, enabled }, None, None)
            }
            Action::StopVring { index, .. } => {
                (Act::StopVring(index.0), None, Some(Owed::Stopped(index)))
            }
            Action::SetVringCall { fd, .. } | Action::SetVringErr { fd, .. } => {
                (Act::Other, fd, None)
            }
            Action::ReadConfig { offset, size } => {
                (Act::Other, None, Some(Owed::Config { offset, size }))
            }
            Action::WriteConfig { offset, data, .. } => {
                let start = offset as usize;
                config[start..start + data.len()].copy_from_slice(data);
                (Act::Other, None, Some(Owed::Done))
            }
            Action::ResetDevice => (Act::Reset, None, Some(Owed::Done)),
            Action::SendRarp(mac) => (Act::Rarp(mac), None, None),
            Action::SetMtu(mtu) => (Act::Mtu(mtu), None, None),
            Action::AllocateInflight { .. } => (Act::Other, None, Some(Owed::Inflight)),
            Action::SetInflight { fd, .. } => (Act::Other, Some(fd), Some(Owed::Done)),
            Action::SetBackendChannel(fd) => (Act::Other, Some(fd), Some(Owed::Done)),
            Action::SetLogFd(fd) | Action::CloseFd(fd) => (Act::Other, Some(fd), None),
            Action::SetDeviceStateFd { direction, fd, .. } => {
                (Act::DeviceState(direction), Some(fd), Some(Owed::DeviceState))
            }
            Action::CheckDeviceState => (Act::Other, None, Some(Owed::Done)),
            Action::Iotlb(_) => (Act::Other, None, Some(Owed::Done)),
            _ => (Act::Other, None, None),
        }
    }

    /// Runs both sides until nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            self.drain_frontend();
            if let Some((frame, fds)) = self.to_backend.pop_front() {
                let received = self.receive(fds.len());
                self.be_in.extend(&received);
                if let Err(error) = self.backend.handle_frame(&frame, &received) {
                    self.backend_errors.push(error);
                }
                self.drive_backend();
            } else if let Some((frame, fds)) = self.to_frontend.pop_front() {
                let received = self.receive(fds.len());
                self.fe_in.extend(&received);
                let _ = self.frontend.handle_reply(&frame, &received);
            } else if let Some((frame, fds)) = self.channel_to_frontend.pop_front() {
                let received = self.receive(fds.len());
                self.fe_in.extend(&received);
                let _ = self.frontend.handle_backend_request(&frame, &received);
            } else {
                return;
            }
        }
        panic!("the pair never settled");
    }

    /// The device consumes `n` buffers of a started ring.
    pub fn process(&mut self, index: u8, n: u16) {
        let next = self.rings.get_mut(&index).expect("ring started");
        *next = next.wrapping_add(n);
    }

    /// The codes of the requests sent.
    pub fn codes(&self) -> Vec<FrontendCode> {
        self.sent.iter().map(|(code, _)| *code).collect()
    }

    /// # Panics
    ///
    /// If a side holds a token it received.
    pub fn assert_fds_balanced(&self) {
        let sorted = |v: &[FdToken]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(sorted(&self.fe_in), sorted(&self.fe_out), "front-end tokens");
        assert_eq!(sorted(&self.be_in), sorted(&self.be_out), "back-end tokens");
    }

    /// # Panics
    ///
    /// If the front-end closed, the back-end refused an input, something is still in flight,
    /// or a token is held.
    pub fn assert_clean(&self) {
        assert_eq!(self.frontend_closed, None);
        assert!(self.backend_errors.is_empty(), "{:?}", self.backend_errors);
        assert!(self.frontend.is_idle());
        self.assert_fds_balanced();
    }
}
