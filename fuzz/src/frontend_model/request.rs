//! Requests the front-end emits: the protocol feature each needs, NEED_REPLY, the wire round
//! trip, the tokens they carry, and what their reply must match.

use vhu_core::backend::{broken_dependency, conflict};
use vhu_core::frontend::SUPPORTED_PROTOCOL_FEATURES;
use vhu_core::{reply_kind, FrontendCode, ProtocolFeatures, ReplyKind, Request, VirtioFeatures};

use vhu_core::message::MemoryTable;

use super::model::{Detail, Frame, Model, Sent};

/// The protocol feature each request needs acked before the front-end may send it.
fn needs(code: FrontendCode) -> Option<ProtocolFeatures> {
    use FrontendCode as C;
    use ProtocolFeatures as P;
    Some(match code {
        C::GetQueueNum => P::MQ,
        C::GetMaxMemSlots | C::AddMemReg | C::RemMemReg => P::CONFIGURE_MEM_SLOTS,
        C::SetLogBase => P::LOG_SHMFD,
        C::SetBackendReqFd => P::BACKEND_REQ,
        C::GetConfig | C::SetConfig => P::CONFIG,
        C::GetInflightFd | C::SetInflightFd => P::INFLIGHT_SHMFD,
        C::ResetDevice => P::RESET_DEVICE,
        C::VringKick => P::INBAND_NOTIFICATIONS,
        C::SetStatus | C::GetStatus => P::STATUS,
        C::GetSharedObject => P::SHARED_OBJECT,
        C::SetDeviceStateFd | C::CheckDeviceState => P::DEVICE_STATE,
        C::GetVringBaseSkipDrain => P::GET_VRING_BASE_SKIP_DRAIN,
        C::PostcopyAdvise | C::PostcopyListen | C::PostcopyEnd => P::PAGEFAULT,
        C::CreateCryptoSession | C::CloseCryptoSession => P::CRYPTO_SESSION,
        _ => return None,
    })
}

impl Model {
    pub(super) fn on_request(
        &mut self,
        request: &Request<'_>,
        need_reply: bool,
        buf: &mut [u8],
    ) -> Frame {
        let code = request.code();
        assert!(
            self.awaiting.is_none(),
            "{code} sent while {:?} waits for its reply",
            self.awaiting
        );
        let kind = reply_kind(code);
        let unawaited = self.unawaited.take();
        if std::mem::take(&mut self.confirm_due) {
            assert_eq!(code, FrontendCode::GetFeatures, "dirty logging on, unconfirmed");
        }
        if std::mem::take(&mut self.postcopy_ack_due) {
            // The acknowledgement of postcopy bases: a SET_MEM_TABLE frame carrying a u64 0.
            let empty = Request::SetMemTable { table: MemoryTable::Standard(&[]), fds: &[] };
            assert_eq!(*request, empty, "{code} sent before the postcopy acknowledgement");
            assert!(!need_reply, "the postcopy acknowledgement asks for no reply");
            let len = request.encode_into(false, buf).expect("request encodes");
            assert_eq!(len, 12 + 8, "the acknowledgement is a header and a u64");
            return Frame { bytes: buf[..len].to_vec(), fds: 0, code: code.as_u32() };
        }
        let postcopy_table = code == FrontendCode::SetMemTable && self.postcopy_listening;
        // QEMU sets NEED_REPLY on these whether or not REPLY_ACK was acked; a postcopy table
        // never carries it.
        let always = matches!(
            code,
            FrontendCode::PostcopyListen | FrontendCode::PostcopyEnd | FrontendCode::IotlbMsg
        );
        let expected =
            !postcopy_table && ((self.reply_ack && kind == ReplyKind::AckOnly) || always);
        assert_eq!(
            need_reply, expected,
            "{code}: NEED_REPLY must be set exactly when REPLY_ACK was acked and there is no reply"
        );
        let acked = self.sent_protocol.unwrap_or(ProtocolFeatures::empty());
        if let Some(feature) = needs(code) {
            assert!(acked.contains(feature), "{code} sent without {feature:?} acked");
        }
        if code == FrontendCode::IotlbMsg {
            let features = self.sent_features.unwrap_or(VirtioFeatures::empty());
            assert!(features.contains(VirtioFeatures::ACCESS_PLATFORM), "IOTLB_MSG unnegotiated");
            let needed = ProtocolFeatures::REPLY_ACK | ProtocolFeatures::BACKEND_REQ;
            assert!(acked.contains(needed), "IOTLB_MSG without REPLY_ACK and BACKEND_REQ");
        }
        if let Request::CreateCryptoSession(session) = request {
            self.crypto_sent = session.len();
        }
        let len = request.encode_into(need_reply, buf).expect("request encodes");
        let fds = request.fds();
        let again = Request::parse(&buf[..len], &fds).expect("request re-parses");
        assert_eq!(again.message, *request, "request changed through the wire");
        assert_eq!(again.need_reply, need_reply);
        for fd in &fds {
            self.ledger.left(*fd);
        }
        let detail = match *request {
            Request::SetProtocolFeatures(features) => {
                assert!(self.sent_features.is_none(), "protocol features after SET_FEATURES");
                assert!(SUPPORTED_PROTOCOL_FEATURES.contains(features), "acked {features:?}");
                assert_eq!(broken_dependency(features), None, "acked {features:?}");
                assert_eq!(conflict(features), None, "acked {features:?}");
                self.reply_ack = features.contains(ProtocolFeatures::REPLY_ACK);
                self.sent_protocol = Some(features);
                Detail::None
            }
            Request::SetFeatures(features) => {
                self.sent_features = Some(features);
                self.confirm_due = features.contains(VirtioFeatures::LOG_ALL) && !self.reply_ack;
                Detail::None
            }
            Request::GetFeatures if self.connected => {
                assert!(!self.reply_ack, "a confirmation with REPLY_ACK acked");
                Detail::Confirms(unawaited.expect("GET_FEATURES confirms the request before it"))
            }
            Request::SetVringEnable { .. } => {
                let features = self.sent_features.unwrap_or(VirtioFeatures::empty());
                assert!(
                    features.contains(VirtioFeatures::PROTOCOL_FEATURES),
                    "SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES"
                );
                Detail::None
            }
            Request::GetVringBase { index } | Request::GetVringBaseSkipDrain { index } => {
                Detail::Vring(index)
            }
            Request::GetConfig { offset, size, .. } => Detail::Config { offset, size },
            Request::SetDeviceStateFd { .. } => Detail::DeviceState,
            Request::SetMemTable { table: MemoryTable::Standard(regions), .. }
                if postcopy_table =>
            {
                self.postcopy_table = regions.to_vec();
                // Cannot truncate: a table carries at most 8 regions.
                Detail::Table(regions.len() as u8)
            }
            _ => Detail::None,
        };
        if need_reply || kind != ReplyKind::AckOnly || postcopy_table {
            self.awaiting = Some(Sent { code, need_reply, detail });
        } else {
            self.unawaited = Some(code);
        }
        Frame { bytes: buf[..len].to_vec(), fds: fds.len(), code: code.as_u32() }
    }
}
