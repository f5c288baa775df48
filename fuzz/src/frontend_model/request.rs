//! Requests the front-end emits: the protocol feature each needs, NEED_REPLY, the wire round
//! trip, the tokens they carry, and what their reply must match.

use vhu_core::backend::broken_dependency;
use vhu_core::frontend::SUPPORTED_PROTOCOL_FEATURES;
use vhu_core::{reply_kind, FrontendCode, ProtocolFeatures, ReplyKind, Request, VirtioFeatures};

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
        assert_eq!(
            need_reply,
            self.reply_ack && kind == ReplyKind::AckOnly,
            "{code}: NEED_REPLY must be set exactly when REPLY_ACK was acked and there is no reply"
        );
        let acked = self.sent_protocol.unwrap_or(ProtocolFeatures::empty());
        if let Some(feature) = needs(code) {
            assert!(acked.contains(feature), "{code} sent without {feature:?} acked");
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
                self.reply_ack = features.contains(ProtocolFeatures::REPLY_ACK);
                self.sent_protocol = Some(features);
                Detail::None
            }
            Request::SetFeatures(features) => {
                self.sent_features = Some(features);
                Detail::None
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
            _ => Detail::None,
        };
        if need_reply || kind != ReplyKind::AckOnly {
            self.awaiting = Some(Sent { code, need_reply, detail });
        }
        Frame { bytes: buf[..len].to_vec(), fds: fds.len(), code: code.as_u32() }
    }
}
