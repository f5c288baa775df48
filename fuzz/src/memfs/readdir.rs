//! Directory listings of the in-memory file system: READDIR and READDIRPLUS records, with the
//! lookup reference READDIRPLUS takes for each record that went in.

use rustix::io::Errno;
use vhu_device_fs::fuse::{AddError, DirBuffer, DirEntry, Entry, FsResult, Handle, NodeId};

use super::{timeout, Kind, State};

impl State {
    pub(super) fn readdir(
        &mut self,
        node: NodeId,
        handle: Handle,
        offset: u64,
        buf: &mut DirBuffer,
        plus: bool,
    ) -> FsResult<()> {
        self.handle(node, handle, true)?;
        let Kind::Dir { entries, parent } = &self.node(node)?.kind else {
            return Err(Errno::NOTDIR);
        };
        let up = if self.nodes.contains_key(parent) { *parent } else { node.0 };
        let mut list: Vec<(Vec<u8>, u64)> = vec![(b".".to_vec(), node.0), (b"..".to_vec(), up)];
        list.extend(entries.iter().map(|(name, &id)| (name.clone(), id)));
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, id)) in list.iter().enumerate().skip(start) {
            let e = DirEntry {
                ino: *id,
                next_offset: i as u64 + 1,
                typ: self.nodes[id].mode >> 12,
                name,
            };
            let result = if !plus {
                buf.add(&e)
            } else if i < 2 {
                buf.add_plus(&e, None)
            } else {
                // The reference is taken only when the record went in.
                let entry = Entry {
                    node: NodeId(*id),
                    generation: 0,
                    attr: self.attr(*id),
                    attr_timeout: timeout(),
                    entry_timeout: timeout(),
                };
                let added = buf.add_plus(&e, Some(&entry));
                if added.is_ok() {
                    self.nodes.get_mut(id).expect("listed node").lookups += 1;
                }
                added
            };
            match result {
                Ok(()) | Err(AddError::BadName) => {}
                Err(AddError::Full) => break,
            }
        }
        Ok(())
    }
}
