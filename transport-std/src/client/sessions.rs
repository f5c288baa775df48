//! Requests of particular device kinds: IOTLB updates for a device behind a virtual IOMMU
//! (VIRTIO_F_ACCESS_PLATFORM) and the sessions of a crypto device (CRYPTO_SESSION).
//!
//! This module only carries the calls; what is allowed when is core's.

use vhu_core::message::Iotlb;
use vhu_core::FrontendCode;

use super::io::Answer;
use super::{Client, ClientError};

impl Client {
    /// IOTLB_MSG (VIRTIO_F_ACCESS_PLATFORM acked): an update or invalidation of the back-end's
    /// device IOTLB, typically the answer to a miss it reported on the back-end channel.
    pub fn iotlb_msg(&mut self, msg: Iotlb) -> Result<(), ClientError> {
        self.call(&[], |f| f.iotlb_msg(msg)).map(drop)
    }

    /// CREATE_CRYPTO_SESSION (CRYPTO_SESSION): sends the session description as given (for
    /// virtio-crypto, QEMU's `VhostUserCryptoSession` layout) and returns the session as the
    /// back-end returned it, the same size: in QEMU's layout the id the back-end assigned is its
    /// last 8 bytes, negative when it refused.
    pub fn create_crypto_session(&mut self, session: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.ask(
            FrontendCode::CreateCryptoSession,
            &[],
            |f| f.create_crypto_session(session),
            |a| match a {
                Answer::CryptoSession(session) => Some(session),
                _ => None,
            },
        )
    }

    /// CLOSE_CRYPTO_SESSION (CRYPTO_SESSION).
    pub fn close_crypto_session(&mut self, id: u64) -> Result<(), ClientError> {
        self.call(&[], |f| f.close_crypto_session(id)).map(drop)
    }
}
