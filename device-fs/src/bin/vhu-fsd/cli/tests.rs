//! The command line, option by option.

use super::*;

fn parse(args: &[&str]) -> Options {
    Options::try_parse_from(std::iter::once("vhu-fsd").chain(args.iter().copied())).expect("parses")
}

/// virtiofsd takes `--cache`, `--sandbox` and `--log-level` values in any case.
#[test]
fn mode_values_are_taken_in_any_case() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let args = ["--socket-path=/s", "--shared-dir", dir, "--cache=Never", "--sandbox=NONE"];
    let settings = parse(&[&args[..], &["--log-level", "Debug"]].concat()).settings().expect("ok");
    assert_eq!(settings.cache, Cache::Never.policy());
    assert_eq!(settings.sandbox, Sandbox::None);
    assert_eq!(settings.log_level, LogLevel::Debug);
}

#[test]
fn virtiofsd_command_lines_parse() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let options = parse(&[
        "--socket-path=/tmp/vfs.sock",
        "--shared-dir",
        dir,
        "--cache=auto",
        "--sandbox",
        "none",
        "--seccomp=none",
        "--thread-pool-size=1",
        "--thread-pool-size=0",
        "--log-level",
        "debug",
    ]);
    let settings = options.settings().expect("supported");
    assert_eq!(settings.socket, Socket::Path("/tmp/vfs.sock".into()));
    assert_eq!(settings.log_level, LogLevel::Debug);
    assert_eq!(settings.num_request_queues, 1);
    assert!(!settings.persistent);
    assert!(!settings.allow_direct_io, "guest O_DIRECT is dropped by default");
    assert!(!settings.killpriv_v2, "KILLPRIV_V2 is off by default");
    let options = parse(&["--socket-path=/s", "--shared-dir", dir, "--allow-direct-io"]);
    assert!(options.settings().expect("supported").allow_direct_io);
    let options = parse(&["--socket-path=/s", "--shared-dir", dir, "--killpriv-v2"]);
    assert!(options.settings().expect("supported").killpriv_v2);
    let last = ["--socket-path=/s", "--shared-dir", dir, "--killpriv-v2", "--no-killpriv-v2"];
    assert!(!parse(&last).settings().expect("supported").killpriv_v2, "the last one wins");
    let last = ["--socket-path=/s", "--shared-dir", dir, "--no-killpriv-v2", "--killpriv-v2"];
    assert!(parse(&last).settings().expect("supported").killpriv_v2, "the last one wins");
    assert!(settings.announce_submounts, "submounts are announced by default");
    assert!(settings.posix_lock && settings.flock, "locks are forwarded by default");
    let mapped = ["--socket-path=/s", "--shared-dir", dir, "--xattrmap=:map::user.virtiofs.:"];
    let s = parse(&mapped).settings().expect("supported");
    assert!(s.xattr && s.xattrmap.is_some(), "--xattrmap implies --xattr");
    assert_eq!(settings.posix_acl, Negotiation::Never, "ACLs are off by default");
    for (flag, want) in
        [("--posix-acl", Negotiation::Always), ("--posix-acl=auto", Negotiation::Auto)]
    {
        let s = parse(&["--socket-path=/s", "--shared-dir", dir, flag]).settings().expect("ok");
        assert_eq!((s.posix_acl, s.xattr), (want, true), "{flag}");
    }
    for (flag, want) in
        [("--security-label", Negotiation::Always), ("--security-label=auto", Negotiation::Auto)]
    {
        let s = parse(&["--socket-path=/s", "--shared-dir", dir, flag]).settings().expect("ok");
        assert_eq!((s.security_label, s.xattr), (want, true), "{flag}: labels are xattrs");
    }
    let never = ["--socket-path=/s", "--shared-dir", dir, "--security-label=never"];
    assert!(!parse(&never).settings().expect("ok").xattr);
    let mixed =
        ["--socket-path=/s", "--shared-dir", dir, "--posix-acl", "--translate-uid=map:0:1:1"];
    assert_eq!(parse(&mixed).settings().err(), Some(CliError::AclWithTranslation));
    let bad = ["vhu-fsd", "--socket-path=/s", "--shared-dir", dir, "--xattrmap=:frob:all:::"];
    assert!(Options::try_parse_from(bad).is_err(), "a bad map is a usage error");
    let off = ["--socket-path=/s", "--shared-dir", dir, "--no-posix-lock", "--no-flock"];
    let s = parse(&off).settings().expect("supported");
    assert!(!s.posix_lock && !s.flock);
    let on = ["--socket-path=/s", "--shared-dir", dir, "--no-flock", "--flock"];
    assert!(parse(&on).settings().expect("supported").flock, "the last one wins");
    let off = ["--socket-path=/s", "--shared-dir", dir, "--no-announce-submounts"];
    assert!(!parse(&off).settings().expect("supported").announce_submounts);
    let on = [
        "--socket-path=/s",
        "--shared-dir",
        dir,
        "--no-announce-submounts",
        "--announce-submounts",
    ];
    assert!(parse(&on).settings().expect("supported").announce_submounts);
}

#[test]
fn id_translation_rules_and_namespace_maps() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let base = ["--socket-path=/s", "--shared-dir", dir];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        Options::try_parse_from(std::iter::once("vhu-fsd").chain(args)).map(|o| o.settings())
    };
    let s =
        with(&["--translate-uid", "map:1000:100000:10", "--translate-gid=squash-host:0:65534:1"])
            .expect("parses")
            .expect("supported");
    assert_eq!(s.uid_map.to_host(1001), Ok(100001));
    assert_eq!(s.gid_map.to_guest(0), 65534);
    assert!(with(&["--translate-uid", "bogus:1:2:3"]).is_err(), "a bad rule is a usage error");
    let overlap = with(&["--translate-uid=guest:0:5:10", "--translate-uid=guest:5:50:1"]);
    assert!(matches!(overlap, Ok(Err(CliError::TranslateUid(IdMapError::Overlap(_))))));
    // Namespace maps go with the namespace sandbox (the default), and only with it.
    let ns = with(&["--uid-map=:0:100000:65536:", "--gid-map", ":0:100000:65536:"])
        .expect("parses")
        .expect("supported");
    assert_eq!(ns.ns_uid_map, [NsMap { inside: 0, outside: 100000, count: 65536 }]);
    assert_eq!(ns.sandbox, Sandbox::Namespace);
    let chroot = with(&["--sandbox=chroot", "--gid-map=:0:1000:1:"]).expect("parses");
    assert!(
        matches!(chroot, Err(CliError::MapWithoutNamespace(ref option)) if option == "--gid-map :0:1000:1:"),
        "{chroot:?}"
    );
    assert!(with(&["--uid-map=0:1:2"]).is_err());
}

#[test]
fn unsupported_options_are_refused_not_ignored() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let options =
        parse(&["--socket-path=/tmp/x", "--shared-dir", dir, "--inode-file-handles=mandatory"]);
    match options.settings() {
        Err(CliError::NotSupported { option, .. }) => {
            assert_eq!(option, "--inode-file-handles mandatory")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_and_bad_values() {
    assert_eq!(parse(&["--shared-dir=/"]).settings().err(), Some(CliError::NoSocket));
    assert_eq!(parse(&["--socket-path=/tmp/x"]).settings().err(), Some(CliError::NoSharedDir));
    let missing = parse(&["--socket-path=/tmp/x", "--shared-dir=/nonexistent/dir"]).settings();
    let why = missing.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.ends_with("No such file or directory (os error 2)"), "{why}");
    let file = parse(&["--socket-path=/tmp/x", "--shared-dir=/proc/self/status"]).settings();
    let why = file.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.ends_with("not a directory"), "{why}");
    let long = "t".repeat(37);
    assert_eq!(
        parse(&["--socket-path=/tmp/x", "--shared-dir=/", "--tag", &long]).settings().err(),
        Some(CliError::TagTooLong(37))
    );
    assert!(Options::try_parse_from(["vhu-fsd", "--socket-path=/a", "--fd=3"]).is_err());
    assert_eq!(
        parse(&["--fd=3", "--shared-dir=/", "--num-request-queues=0"]).settings().err(),
        Some(CliError::NoRequestQueues)
    );
}

#[test]
fn capabilities_are_json_for_a_file_system() {
    assert!(CAPABILITIES.contains(r#""type": "fs""#));
    assert!(CAPABILITIES.contains(r#""posix-acl-negotiation-mode""#), "--posix-acl=MODE works");
    // libvirt then uses the -o form, which carries <lock> settings.
    assert!(!CAPABILITIES.contains("separate-options"));
}

#[test]
fn cache_policies_and_their_companions() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let base = ["--socket-path=/s", "--shared-dir", dir];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        parse(&args).settings().expect("supported")
    };
    let s = with(&[]);
    assert_eq!(s.cache, CachePolicy::Auto);
    assert!(s.readdirplus && !s.writeback && !s.allow_mmap && !s.preserve_noatime);
    for (flag, policy) in [
        ("--cache=never", CachePolicy::Never),
        ("--cache=metadata", CachePolicy::Metadata),
        ("--cache=always", CachePolicy::Always),
    ] {
        assert_eq!(with(&[flag]).cache, policy, "{flag}");
    }
    let s = with(&["--no-readdirplus", "--writeback", "--allow-mmap", "--preserve-noatime"]);
    assert!(!s.readdirplus && s.writeback && s.allow_mmap && s.preserve_noatime);
    assert!(with(&["--no-readdirplus", "--readdirplus"]).readdirplus, "the last one wins");
    assert!(!with(&["--writeback", "--no-writeback"]).writeback, "the last one wins");
    assert!(!with(&["--xattr", "--no-xattr"]).xattr, "the last one wins");
    assert!(!with(&["--allow-direct-io", "--no-allow-direct-io"]).allow_direct_io);
    for value in ["never", "prefer", "fallback"] {
        with(&[&format!("--inode-file-handles={value}")]);
    }
}

#[test]
fn socket_group_is_a_known_group_of_a_created_socket() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let path = |extra: &str| parse(&["--socket-path=/s", "--shared-dir", dir, extra]).settings();
    assert_eq!(path("--socket-group=root").expect("root exists").socket_group, Some(0));
    assert_eq!(path("--socket-group=4242").expect("a number").socket_group, Some(4242));
    assert_eq!(
        path("--socket-group=no-such-group-here").err(),
        Some(CliError::UnknownGroup("no-such-group-here".into()))
    );
    let fd = parse(&["--fd=3", "--shared-dir", dir, "--socket-group=root"]).settings();
    assert_eq!(fd.err(), Some(CliError::GroupWithFd));
}

#[test]
fn modcaps_edits_name_real_capabilities() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let flag = "--modcaps=+sys_admin:-MKNOD:+cap_dac_read_search";
    let edits = parse(&["--socket-path=/s", "--shared-dir", dir, flag]).settings().expect("ok");
    assert_eq!(
        edits.modcaps,
        [
            CapEdit { add: true, cap: 21 },
            CapEdit { add: false, cap: 27 },
            CapEdit { add: true, cap: 2 },
        ]
    );
    assert!(parse_modcaps("sys_admin").expect_err("no sign").contains("+ or -"));
    assert!(parse_modcaps("+frobnicate").expect_err("unknown").contains("frobnicate"));
}

#[test]
fn thread_pool_sizes() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let size = |n: &str| parse(&["--socket-path=/s", "--shared-dir", dir, n]).settings();
    assert_eq!(size("--thread-pool-size=16").expect("ok").thread_pool_size, 16);
    assert_eq!(size("--thread-pool-size=0").expect("ok").thread_pool_size, 0);
    // A launcher's larger pool is taken, as virtiofsd takes it: no more than a queue's worth
    // of threads could ever have work.
    assert_eq!(size("--thread-pool-size=5000").expect("ok").thread_pool_size, 1024);
}

#[test]
fn migration_options_as_virtiofsd_spells_them() {
    use vhu_device_fs::passthrough::migration::{MigrationMode, OnError};
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let base = ["--socket-path=/tmp/x", "--shared-dir", dir];
    let defaults = parse(&base).settings().expect("valid").migration;
    assert_eq!((defaults.mode, defaults.on_error), (MigrationMode::FindPaths, OnError::Abort));
    assert!(!defaults.verify_handles && !defaults.confirm_paths);
    let all = [
        "--migration-mode=file-handles",
        "--migration-on-error",
        "guest-error",
        "--migration-verify-handles",
        "--migration-confirm-paths",
    ];
    let args: Vec<&str> = base.iter().chain(all.iter()).copied().collect();
    let set = parse(&args).settings().expect("valid").migration;
    assert_eq!((set.mode, set.on_error), (MigrationMode::FileHandles, OnError::GuestError));
    assert!(set.verify_handles && set.confirm_paths);
    let bad: Vec<&str> = base.iter().copied().chain(["--migration-mode=by-magic"]).collect();
    assert!(Options::try_parse_from(std::iter::once("vhu-fsd").chain(bad)).is_err());
}

#[test]
fn dax_window_sizes() {
    use super::values::parse_dax_window;
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let size = |n: &str| parse(&["--socket-path=/s", "--shared-dir", dir, n]).settings();
    assert_eq!(size("--thread-pool-size=0").expect("ok").dax_window, 0, "no window by default");
    assert_eq!(size("--dax-window=8G").expect("ok").dax_window, 8 << 30);
    assert_eq!(parse_dax_window("2m"), Ok(2 << 20));
    assert_eq!(parse_dax_window("4194304"), Ok(4 << 20));
    assert_eq!(parse_dax_window("0"), Ok(0));
    assert!(parse_dax_window("3M").expect_err("not 2 MiB granules").contains("2 MiB"));
    assert!(parse_dax_window("1K").is_err());
    assert!(parse_dax_window("eight").expect_err("no number").contains("not a size"));
    assert!(parse_dax_window("200T").expect_err("too large").contains("128 TiB"));
    assert!(parse_dax_window("99999999999999999999G").is_err());
}
