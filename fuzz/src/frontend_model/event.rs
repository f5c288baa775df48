//! Events the front-end emits: each answers the request whose reply carried it (or the
//! back-end request that surfaced it) and matches what that request asked for.

use vhu_core::frontend::{Event, FrontendError};
use vhu_core::{BackendCode, FrontendCode, ProtocolFeatures, VirtioFeatures};

use super::model::{Detail, Ev, Model, Step, Unanswered};

impl Model {
    pub(super) fn on_event(&mut self, event: Event<'_>, step: Step) -> Ev {
        // Events that answer a request come only from the reply to it.
        let answered = |code: FrontendCode| match step {
            Step::Reply(Some(sent)) if sent.code == code => sent,
            _ => panic!("event answering {code} in step {step:?}"),
        };
        match event {
            Event::Connected(negotiated) => {
                assert!(!self.connected, "connected twice");
                self.connected = true;
                assert_eq!(
                    negotiated.protocol_features,
                    self.sent_protocol.unwrap_or(ProtocolFeatures::empty()),
                    "reported protocol features differ from those sent"
                );
                assert_eq!(Some(negotiated.features), self.sent_features, "features differ");
                assert!(!negotiated.features.contains(VirtioFeatures::LOG_ALL));
                self.negotiated = Some(negotiated);
                Ev::Connected(negotiated)
            }
            Event::Done(code) => {
                let confirmed = |sent: &super::model::Sent| {
                    sent.code == FrontendCode::GetFeatures && sent.detail == Detail::Confirms(code)
                };
                if !matches!(step, Step::Reply(Some(sent)) if confirmed(&sent)) {
                    answered(code);
                }
                match code {
                    FrontendCode::PostcopyListen => self.postcopy_listening = true,
                    FrontendCode::PostcopyEnd => self.postcopy_listening = false,
                    _ => {}
                }
                Ev::Done(code)
            }
            Event::Failed(error) => {
                assert!(matches!(step, Step::Reply(Some(_))), "{error:?} outside a reply");
                if let FrontendError::Nack { request, status } = error {
                    answered(request);
                    assert_ne!(status, 0, "a failure with status 0");
                }
                Ev::Failed(error)
            }
            Event::VringStopped { index, base } => {
                let Step::Reply(Some(sent)) = step else {
                    panic!("VringStopped outside a reply");
                };
                assert!(matches!(
                    sent.code,
                    FrontendCode::GetVringBase | FrontendCode::GetVringBaseSkipDrain
                ));
                assert_eq!(sent.detail, Detail::Vring(index), "stopped another ring");
                Ev::VringStopped { index, base }
            }
            Event::ConfigRead { offset, data } => {
                let sent = answered(FrontendCode::GetConfig);
                let size = u32::try_from(data.len()).expect("config fits u32");
                assert_eq!(sent.detail, Detail::Config { offset, size }, "config read mismatch");
                Ev::ConfigRead { offset, data: data.to_vec() }
            }
            Event::Status(status) => {
                answered(FrontendCode::GetStatus);
                Ev::Status(status)
            }
            Event::InflightFd { desc, fd } => {
                answered(FrontendCode::GetInflightFd);
                assert_eq!(desc.mmap_size == 0, fd.is_none(), "inflight fd without area");
                if let Some(fd) = fd {
                    self.ledger.left(fd);
                }
                Ev::InflightFd { desc, fd }
            }
            Event::DeviceStateFd { direction, fd } => {
                let sent = answered(FrontendCode::SetDeviceStateFd);
                assert_eq!(sent.detail, Detail::DeviceState);
                if let Some(fd) = fd {
                    self.ledger.left(fd);
                }
                Ev::DeviceStateFd { direction, fd }
            }
            Event::SharedObject { fd, .. } => {
                answered(FrontendCode::GetSharedObject);
                self.ledger.left(fd);
                Ev::SharedObject
            }
            Event::BackendRequest { request, need_reply } => {
                assert!(
                    matches!(step, Step::BackendRequest { accepted: true, .. }),
                    "back-end request event in step {step:?}"
                );
                for fd in request.fds() {
                    self.ledger.left(fd);
                }
                let lookup = request.code() == BackendCode::SharedObjectLookup;
                assert!(!lookup || need_reply, "a lookup always waits for its answer");
                self.backend_pending.push_back(Unanswered::Surfaced(request.code(), need_reply));
                Ev::BackendRequest { request, need_reply }
            }
            Event::PostcopyAdvised { userfaultfd } => {
                answered(FrontendCode::PostcopyAdvise);
                self.ledger.left(userfaultfd);
                Ev::PostcopyAdvised { userfaultfd }
            }
            Event::PostcopyBases(bases) => {
                let sent = answered(FrontendCode::SetMemTable);
                let Detail::Table(n) = sent.detail else {
                    panic!("bases for a table not sent in its postcopy form")
                };
                assert_eq!(bases.len(), usize::from(n), "bases for another number of regions");
                assert!(!sent.need_reply, "a postcopy table goes without NEED_REPLY");
                self.bases_reported = true;
                Ev::PostcopyBases(bases.to_vec())
            }
            Event::CryptoSession(session) => {
                answered(FrontendCode::CreateCryptoSession);
                assert_eq!(session.len(), self.crypto_sent, "a session of another size");
                Ev::CryptoSession(session.to_vec())
            }
            other => panic!("unknown event {other:?}"),
        }
    }
}
