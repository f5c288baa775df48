//! A guest's migration from one virtio-fs back-end to another, as a VMM carries it out over
//! vhost-user (spec "Migration" and "Migrating back-end state"), with guest memory that both
//! back-ends map from the same memfd (so no page has to be copied, only accounted for).
//!
//! [`GuestFs::migrate_to`]: dirty logging on at the source while memory would be copied, the
//! rings stopped (the device suspended), the back-end's state saved, logging off; at the
//! destination the same features and memory, the state loaded, and the rings started where they
//! stopped — no FUSE INIT: the guest's session, nodes and handles continue. It must not
//! interpret the state (the back-end's format).

use std::path::Path;

use vhu_transport_std::client::{Client, LogBuffer, VringStart};
use vhu_transport_std::dirty::LOG_PAGE;
use vhu_transport_std::vhu_core::VringIndex;

use super::{GuestError, GuestFs, TIMEOUT};

/// What a migration moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// Bytes of back-end state.
    pub state_bytes: usize,
    /// Guest-physical addresses of the pages the source marked dirty while logging.
    pub dirty_pages: Vec<u64>,
}

impl GuestFs {
    /// Moves this guest from its back-end to the one listening on `socket` (see the module
    /// docs). `while_logging` runs at the source with dirty logging on, as the guest keeps
    /// running while a VMM copies its memory; the pages it made the source write come back in
    /// [`Migrated::dirty_pages`].
    pub fn migrate_to(
        mut self,
        socket: impl AsRef<Path>,
        while_logging: impl FnOnce(&mut Self) -> Result<(), GuestError>,
    ) -> Result<(Self, Migrated), GuestError> {
        let log = LogBuffer::new(self.ram.region().size)?;
        self.client.set_log_base(log.fd(), log.size(), 0)?;
        self.client.set_logging(true)?;
        while_logging(&mut self)?;
        let mut bases = Vec::with_capacity(self.rings.len());
        for i in 0..self.rings.len() {
            bases.push(self.client.stop_vring(ring_index(i)?)?);
        }
        let state = self.client.save_state()?;
        self.client.set_logging(false)?;
        let dirty_pages = log.take_dirty().into_iter().map(|page| page * LOG_PAGE).collect();

        let mut client = Client::connect(socket)?;
        client.set_timeout(TIMEOUT)?;
        let source = self.client.negotiated().ok_or(GuestError::Migration("not connected"))?;
        let here = client.handshake(source.features, source.protocol_features)?;
        if (here.features, here.protocol_features) != (source.features, source.protocol_features) {
            return Err(GuestError::Migration("the destination does not offer the same features"));
        }
        // The DAX window is the destination's now (the source's mappings went with it; a
        // state saved with mappings in place is refused): mapped through its channel, of the
        // same size.
        let dax = super::dax::window(&mut client, here.protocol_features)?;
        if dax.as_ref().map(|w| w.len()) != self.dax.as_ref().map(|w| w.len()) {
            return Err(GuestError::Migration("the destination's DAX window differs"));
        }
        client.set_mem_table(&[self.ram.share()])?;
        client.load_state(&state)?;
        for (i, (ring, base)) in self.rings.iter().zip(bases).enumerate() {
            let start = ring.start(self.ram.host_address(ring.layout().ring)?);
            client.start_vring(ring_index(i)?, VringStart { base, ..start })?;
        }
        // The source's connection closes here; the destination serves from now on.
        self.client = client;
        self.dax = dax;
        Ok((self, Migrated { state_bytes: state.len(), dirty_pages }))
    }
}

/// Request queue `i` (the first is queue 1; queue 0 is high priority).
fn ring_index(i: usize) -> Result<VringIndex, GuestError> {
    u8::try_from(i + 1).map(VringIndex).map_err(|_| GuestError::TooLarge(i + 1))
}
