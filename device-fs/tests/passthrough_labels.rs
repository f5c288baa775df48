//! Security labels (`--security-label`): the guest's security context on CREATE, MKDIR, MKNOD
//! and SYMLINK (a request extension from 7.38, the last argument for 7.36 and 7.37) is stored on
//! the new inode; a malformed one is EINVAL; a label that
//! cannot be stored undoes the creation; without the capability negotiated nothing is stored.

mod support;

use support::{args, cstr, Harness};
use vhu_device_fs::fuse::abi::{CreateIn, InitFlags, InitOut, MkdirIn, MknodIn};
use vhu_device_fs::fuse::Opcode;
use vhu_device_fs::passthrough::Negotiation;
use zerocopy::{FromBytes, IntoBytes};

const EINVAL: i32 = 22;
const EPERM: i32 = 1;
const NAME: &str = "security.selinux";

/// A security-context extension record with one context.
fn secctx(name: &str, value: &[u8]) -> Vec<u8> {
    let mut body = (value.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&cstr(name));
    body.extend_from_slice(value);
    while (body.len() + 8) % 8 != 0 {
        body.push(0);
    }
    let mut record = ((body.len() + 8) as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&1u32.to_le_bytes()); // type: one context
    record.extend_from_slice(&body);
    record
}

fn harness(tag: &str, labels: Negotiation, map: Option<&str>) -> Harness {
    let mut h = Harness::with(tag, |c| {
        c.security_label = labels;
        c.xattrmap = map.map(|m| m.parse().expect("map"));
    });
    let out = h.init();
    let flags = InitFlags::from_bits_retain(u64::from(out.flags) | (u64::from(out.flags2) << 32));
    assert_eq!(flags.contains(InitFlags::SECURITY_CTX), labels != Negotiation::Never);
    h
}

fn label_of(h: &Harness, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(h.share().join(name), NAME, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn create(h: &mut Harness, name: &str, ext: &[u8]) -> support::Reply {
    let c = CreateIn { flags: 0o101, mode: 0o100644, ..CreateIn::default() };
    h.call_ext(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr(name)]), ext)
}

#[test]
fn every_kind_of_creation_is_labelled() {
    let mut h = harness("labels-on", Negotiation::Auto, None);
    let label = b"system_u:object_r:test_t:s0\0";
    let r = create(&mut h, "f", &secctx(NAME, label));
    if r.errno() == 95 {
        eprintln!("the temporary directory's file system has no security xattrs; skipped");
        return;
    }
    r.entry();
    assert_eq!(label_of(&h, "f").as_deref(), Some(&label[..]));
    let m = MkdirIn { mode: 0o755, umask: 0 };
    h.call_ext(Opcode::Mkdir, 1, &args(&[m.as_bytes(), &cstr("d")]), &secctx(NAME, b"dir")).entry();
    assert_eq!(label_of(&h, "d").as_deref(), Some(&b"dir"[..]));
    let n = MknodIn { mode: 0o010644, ..MknodIn::default() };
    h.call_ext(Opcode::Mknod, 1, &args(&[n.as_bytes(), &cstr("p")]), &secctx(NAME, b"fifo"))
        .entry();
    assert_eq!(label_of(&h, "p").as_deref(), Some(&b"fifo"[..]));
    let body = args(&[&cstr("l"), &cstr("f")]);
    h.call_ext(Opcode::Symlink, 1, &body, &secctx(NAME, b"link")).entry();
    assert_eq!(label_of(&h, "l").as_deref(), Some(&b"link"[..]), "the link itself");
    assert_eq!(label_of(&h, "f").as_deref(), Some(&label[..]), "not its target");
    // No context (no LSM labels it): created unlabelled.
    let mut none = 8u32.to_le_bytes().to_vec();
    none.extend_from_slice(&0u32.to_le_bytes());
    create(&mut h, "plain", &none).entry();
    assert_eq!(label_of(&h, "plain"), None);
}

#[test]
fn malformed_contexts_and_refused_labels() {
    let mut h = harness("labels-bad", Negotiation::Auto, None);
    let mut bad = secctx(NAME, b"x");
    bad[8] = 200; // the value would run past the record
    assert_eq!(create(&mut h, "f", &bad).errno(), EINVAL);
    assert!(!h.share().join("f").exists());
    // A map that refuses security.* names: the creation is undone.
    let mut h = harness(
        "labels-refused",
        Negotiation::Auto,
        Some(":bad:all:security.:security.: :ok:all:::"),
    );
    assert_eq!(create(&mut h, "g", &secctx(NAME, b"x")).errno(), EPERM);
    assert!(!h.share().join("g").exists(), "no unlabelled file is left");
    assert_eq!(h.server.fs().handles().len(), 0);
    // Only LSM label names: a "label" that would grant host privileges is refused.
    let mut h = harness("labels-names", Negotiation::Auto, None);
    for name in ["security.capability", "trusted.overlay.opaque", "user.x"] {
        assert_eq!(
            create(&mut h, "c", &secctx(name, b"\x01\x00\x00\x02")).errno(),
            EPERM,
            "{name}"
        );
        assert!(!h.share().join("c").exists(), "{name}: undone");
        let mut buf = [0u8; 8];
        assert!(rustix::fs::getxattr(h.share(), name, &mut buf).is_err());
    }
}

/// CREATE of a name that exists opens the existing file: its label is not the guest's to set.
#[test]
fn an_existing_file_keeps_its_label() {
    let mut h = harness("labels-existing", Negotiation::Auto, None);
    std::fs::write(h.share().join("old"), b"old").expect("host write");
    let c = CreateIn { flags: 0o1, mode: 0o100644, ..CreateIn::default() };
    let r = h.call_ext(
        Opcode::Create,
        1,
        &args(&[c.as_bytes(), &cstr("old")]),
        &secctx(NAME, b"guest"),
    );
    r.entry();
    assert_eq!(label_of(&h, "old"), None, "the label was not changed");
    assert_eq!(std::fs::read(h.share().join("old")).expect("read"), b"old");
}

#[test]
fn without_labels_the_context_is_not_stored() {
    let mut h = harness("labels-off", Negotiation::Never, None);
    create(&mut h, "f", &secctx(NAME, b"x")).entry();
    assert_eq!(label_of(&h, "f"), None);
}

/// A 7.36 or 7.37 guest (Linux 5.17 to 6.2) sends a creation's context as its last argument,
/// not as an extension: labels are offered and the context read from there. A guest before
/// 7.36 has none to send: labels are not offered, and required labels refuse it.
#[test]
fn guests_of_7_36_and_7_37_send_the_context_as_an_argument() {
    let guest = support::linux_guest_flags();
    let claims_labels = |out: &[u8]| {
        let (init, _) = InitOut::read_from_prefix(out).expect("init_out");
        u64::from(init.flags2) << 32 & InitFlags::SECURITY_CTX.bits() != 0
    };
    let mut h = Harness::with("labels-7-37", |c| c.security_label = Negotiation::Auto);
    let out = h.init_with(37, guest.bits()).ok().to_vec();
    assert!(claims_labels(&out), "7.37 gets labels");
    let c = CreateIn { flags: 0o101, mode: 0o100644, ..CreateIn::default() };
    let body = args(&[c.as_bytes(), &cstr("f"), &secctx(NAME, b"arg")]);
    let r = h.call(Opcode::Create, 1, &body);
    if r.errno() == 95 {
        eprintln!("the temporary directory's file system has no security xattrs; skipped");
        return;
    }
    r.entry();
    assert_eq!(label_of(&h, "f").as_deref(), Some(&b"arg"[..]));
    let m = MkdirIn { mode: 0o755, umask: 0 };
    let body = args(&[m.as_bytes(), &cstr("d"), &secctx(NAME, b"dir")]);
    h.call(Opcode::Mkdir, 1, &body).entry();
    assert_eq!(label_of(&h, "d").as_deref(), Some(&b"dir"[..]));
    let body = args(&[&cstr("l"), &cstr("f"), &secctx(NAME, b"link")]);
    h.call(Opcode::Symlink, 1, &body).entry();
    assert_eq!(label_of(&h, "l").as_deref(), Some(&b"link"[..]), "the link itself");
    // No LSM: the bare header, or nothing at all.
    let mut none = 8u32.to_le_bytes().to_vec();
    none.extend_from_slice(&0u32.to_le_bytes());
    let c = CreateIn { flags: 0o101, mode: 0o100644, ..CreateIn::default() };
    h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("plain"), &none])).entry();
    h.call(Opcode::Create, 1, &args(&[c.as_bytes(), &cstr("bare")])).entry();
    assert_eq!((label_of(&h, "plain"), label_of(&h, "bare")), (None, None));
    // A malformed trailing record is refused, as a malformed extension is.
    let body = args(&[c.as_bytes(), &cstr("bad"), &[7u8; 5]]);
    assert_eq!(h.call(Opcode::Create, 1, &body).errno(), EINVAL);
    assert!(!h.share().join("bad").exists());

    let mut h = Harness::with("labels-7-35", |c| c.security_label = Negotiation::Auto);
    let out = h.init_with(35, guest.bits()).ok().to_vec();
    assert!(!claims_labels(&out), "7.35 has no contexts");
    let mut h = Harness::with("labels-7-35-always", |c| c.security_label = Negotiation::Always);
    assert_eq!(h.init_with(35, guest.bits()).errno(), 71, "EPROTO");
}
