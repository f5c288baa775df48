//! The consistency check of the in-memory file system, run after every request: entries name
//! live nodes, link counts match names, a removed directory stays empty (nothing is created,
//! linked or renamed into it), and every node kept has a reference.

use std::collections::BTreeMap;

use vhu_device_fs::fuse::DirBuffer;

use super::{Kind, State, MAX_FILE, MAX_HANDLES, MAX_NODES, NAME_MAX, ROOT};

impl State {
    /// Panics when the tree is inconsistent.
    pub(super) fn check(&self) {
        let mut names: BTreeMap<u64, u32> = BTreeMap::new();
        for (&id, n) in &self.nodes {
            if let Kind::Dir { entries, .. } = &n.kind {
                // Nothing is created, linked or renamed into a removed directory, and it was
                // empty when it was removed.
                assert!(
                    id == ROOT || n.links > 0 || entries.is_empty(),
                    "node {id}: a removed directory has entries"
                );
                for (name, child) in entries {
                    assert!(DirBuffer::is_valid_name(name) && name.len() <= NAME_MAX);
                    let c = self.nodes.get(child).expect("an entry names a live node");
                    if let Kind::Dir { parent, .. } = c.kind {
                        assert_eq!(parent, id, "a directory's parent lists it");
                    }
                    *names.entry(*child).or_default() += 1;
                }
            }
        }
        for (&id, n) in &self.nodes {
            let named = names.get(&id).copied().unwrap_or(0);
            if id == ROOT {
                assert_eq!(named, 0, "the root has no name");
                continue;
            }
            assert_eq!(n.links, named, "node {id}: link count");
            assert!(!n.is_dir() || named <= 1, "a directory has one name");
            let open = self.handles.values().any(|h| h.node == id);
            assert!(named > 0 || n.lookups > 0 || open, "node {id} kept without a reference");
            if let Kind::File(data) = &n.kind {
                assert!(data.len() as u64 <= MAX_FILE);
            }
        }
        assert!(self.nodes.len() <= MAX_NODES && self.handles.len() <= MAX_HANDLES);
    }
}
