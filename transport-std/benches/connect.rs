//! Side-by-side benchmark of two vhost-user stacks over real Unix sockets:
//!
//! - **ours**: `vhu_transport_std::Client` driving `vhu_transport_std::Daemon` (the test device of
//!   the daemon tests: two queues on worker threads);
//! - **theirs**: rust-vmm's `vhost` `Frontend` driving a `vhost-user-backend` `VhostUserDaemon`
//!   (the two-queue device of the interop test).
//!
//! Measured: the time from `connect` to both rings started (handshake with MQ, REPLY_ACK, CONFIG
//! and CONFIGURE_MEM_SLOTS; SET_MEM_TABLE with one memfd region; per ring SET_VRING_NUM, _BASE,
//! _ADDR, _CALL, _KICK and _ENABLE, each acknowledged), and GET_CONFIG round trips on a connected
//! session. Resources a VMM has before it connects (memfd, eventfds, a daemon listening) are
//! created outside the timed part; `vhost-user-backend` starts its worker thread when its daemon is
//! created, ours when a ring starts, so ours pays for two thread spawns inside the timing. The
//! means over every timed iteration and the ratio ours/theirs are printed at the end. The two
//! cross pairs (our client with their daemon, their front-end with our daemon) are timed too, so
//! the front-ends' share can be told from the back-ends'.
//!
//! `connect count ours|theirs N` skips the timing and only makes N GET_CONFIG round trips on one
//! stack's connected pair, for an instruction counter: under
//! `valgrind --tool=callgrind`, the difference of two counts (say N = 200 and N = 1200) divided
//! by the difference of N is what one round trip costs in user space, client and back-end
//! together, free of the set-up and of a noisy machine's timing. `connect count-connect
//! ours|theirs N` does the same for N connects to both rings started.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/peer/mod.rs"]
mod peer;

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhu_transport_std::client::{eventfd, Client, GuestRegion, VringStart};
use vhu_transport_std::vhu_core::{ProtocolFeatures, VirtioFeatures, VringIndex};
use vmm_sys_util::eventfd::EventFd;

const TIMEOUT: Duration = Duration::from_secs(5);
const RAM: u64 = 0x10_0000;
const SIZE: u16 = 64;

/// Total time and iterations of the timed parts.
#[derive(Default)]
struct Tally {
    total: Cell<Duration>,
    iters: Cell<u64>,
}

impl Tally {
    fn add(&self, elapsed: Duration, iters: u64) {
        self.total.set(self.total.get() + elapsed);
        self.iters.set(self.iters.get() + iters);
    }

    fn mean(&self) -> Duration {
        let iters = u32::try_from(self.iters.get().max(1)).unwrap_or(u32::MAX);
        self.total.get() / iters
    }
}

fn ring(q: u8) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}

fn our_protocol() -> ProtocolFeatures {
    ProtocolFeatures::MQ
        | ProtocolFeatures::REPLY_ACK
        | ProtocolFeatures::CONFIG
        | ProtocolFeatures::CONFIGURE_MEM_SLOTS
}

fn their_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

/// Ours: connect, handshake, memory, both rings started.
fn our_session(path: &std::path::Path, ram: &GuestRegion, rings: &[(OwnedFd, OwnedFd)]) -> Client {
    our_session_on(Client::connect(path).expect("connect"), ram, rings)
}

fn our_session_on(mut client: Client, ram: &GuestRegion, rings: &[(OwnedFd, OwnedFd)]) -> Client {
    client.set_timeout(TIMEOUT).expect("timeout");
    let features = VirtioFeatures::VERSION_1 | VirtioFeatures::PROTOCOL_FEATURES;
    client.handshake(features, our_protocol()).expect("handshake");
    client.set_mem_table(&[ram.share()]).expect("set_mem_table");
    for (q, (call, kick)) in rings.iter().enumerate() {
        let q = q as u8;
        let descriptor = ram.host_address(ring(q)).expect("ring");
        let start = VringStart::split(SIZE, descriptor, call.as_fd(), kick.as_fd());
        client.start_vring(VringIndex(q), start).expect("start_vring");
    }
    client
}

/// Theirs: the same messages with rust-vmm's front-end.
fn their_session(
    path: &std::path::Path,
    ram: &GuestRegion,
    rings: &[(EventFd, EventFd)],
) -> Frontend {
    let stream = peer::connect_retrying(path, TIMEOUT);
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut frontend = Frontend::from_stream(stream, peer::QUEUES as u64);
    frontend.set_owner().expect("set_owner");
    let features = frontend.get_features().expect("get_features");
    let offered = frontend.get_protocol_features().expect("get_protocol_features");
    frontend.set_protocol_features(offered & their_protocol()).expect("set_protocol_features");
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    frontend.get_queue_num().expect("get_queue_num");
    frontend.get_max_mem_slots().expect("get_max_mem_slots");
    frontend.set_features(features & peer::FEATURES).expect("set_features");
    let region = ram.region();
    let info = VhostUserMemoryRegionInfo {
        guest_phys_addr: region.guest_address,
        memory_size: region.size,
        userspace_addr: region.user_address,
        mmap_offset: 0,
        mmap_handle: ram.fd().as_raw_fd(),
    };
    frontend.set_mem_table(&[info]).expect("set_mem_table");
    for (q, (call, kick)) in rings.iter().enumerate() {
        let descriptor = ram.host_address(ring(q as u8)).expect("ring");
        let layout = VringStart::split(SIZE, descriptor, None, None);
        let config = VringConfigData {
            queue_max_size: SIZE,
            queue_size: SIZE,
            flags: 0,
            desc_table_addr: layout.descriptor,
            avail_ring_addr: layout.available,
            used_ring_addr: layout.used,
            log_addr: None,
        };
        frontend.set_vring_num(q, SIZE).expect("set_vring_num");
        frontend.set_vring_base(q, 0).expect("set_vring_base");
        frontend.set_vring_addr(q, &config).expect("set_vring_addr");
        frontend.set_vring_call(q, call).expect("set_vring_call");
        frontend.set_vring_kick(q, kick).expect("set_vring_kick");
        frontend.set_vring_enable(q, true).expect("set_vring_enable");
    }
    frontend
}

fn socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vhu-bench-{}-{name}.sock", std::process::id()))
}

fn bench_connect(c: &mut Criterion, ours: &Tally, theirs: &Tally, cross: &(Tally, Tally)) {
    let served = common::serve("bench-connect");
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    let our_rings: Vec<(OwnedFd, OwnedFd)> =
        (0..2).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
    let their_rings: Vec<(EventFd, EventFd)> = (0..2)
        .map(|_| (EventFd::new(0).expect("eventfd"), EventFd::new(0).expect("eventfd")))
        .collect();
    let path = socket("peer-connect");
    let mut group = c.benchmark_group("connect_to_rings_started");
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let client = our_session(&served.path, &ram, &our_rings);
                elapsed += start.elapsed();
                drop(client);
                served.wait_ended(1);
            }
            ours.add(elapsed, iters);
            elapsed
        });
    });
    group.bench_function("theirs", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let mut peer = peer::Peer::spawn(&path);
                wait_bound(&path);
                let start = Instant::now();
                let frontend = their_session(&path, &ram, &their_rings);
                elapsed += start.elapsed();
                drop(frontend);
                peer.join(TIMEOUT).expect("peer ends");
            }
            theirs.add(elapsed, iters);
            elapsed
        });
    });
    // Cross pairs, to tell the front-ends' share from the back-ends'.
    group.bench_function("our_client_their_daemon", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let mut peer = peer::Peer::spawn(&path);
                wait_bound(&path);
                let start = Instant::now();
                let stream = peer::connect_retrying(&path, TIMEOUT);
                let client =
                    our_session_on(Client::from_stream(stream).expect("client"), &ram, &our_rings);
                elapsed += start.elapsed();
                drop(client);
                peer.join(TIMEOUT).expect("peer ends");
            }
            cross.0.add(elapsed, iters);
            elapsed
        });
    });
    group.bench_function("their_frontend_our_daemon", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let frontend = their_session(&served.path, &ram, &their_rings);
                elapsed += start.elapsed();
                drop(frontend);
                served.wait_ended(1);
            }
            cross.1.add(elapsed, iters);
            elapsed
        });
    });
    group.finish();
}

/// Waits (bounded) until a daemon thread has bound `path`.
fn wait_bound(path: &std::path::Path) {
    for _ in 0..2500 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn bench_round_trips(c: &mut Criterion, ours: &Tally, theirs: &Tally) {
    let served = common::serve("bench-rtt");
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    let our_rings: Vec<(OwnedFd, OwnedFd)> =
        (0..2).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
    let mut client = our_session(&served.path, &ram, &our_rings);
    let path = socket("peer-rtt");
    let mut peer = peer::Peer::spawn(&path);
    let their_rings: Vec<(EventFd, EventFd)> = (0..2)
        .map(|_| (EventFd::new(0).expect("eventfd"), EventFd::new(0).expect("eventfd")))
        .collect();
    let mut frontend = their_session(&path, &ram, &their_rings);

    let mut group = c.benchmark_group("get_config_round_trip");
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let data = client.get_config(0, 4).expect("get_config");
                std::hint::black_box(data);
            }
            let elapsed = start.elapsed();
            ours.add(elapsed, iters);
            elapsed
        });
    });
    group.bench_function("theirs", |b| {
        let flags = VhostUserConfigFlags::empty();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let data = frontend.get_config(0, 4, flags, &[0; 4]).expect("get_config");
                std::hint::black_box(data);
            }
            let elapsed = start.elapsed();
            theirs.add(elapsed, iters);
            elapsed
        });
    });
    group.finish();
    drop(client);
    served.wait_ended(1);
    drop(frontend);
    peer.join(TIMEOUT).expect("peer ends");
}

/// `count ours|theirs N`: N round trips on one stack, untimed (module docs).
fn count(stack: &str, n: u64) {
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    match stack {
        "ours" => {
            let served = common::serve("count-rtt");
            let rings: Vec<(OwnedFd, OwnedFd)> =
                (0..2).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
            let mut client = our_session(&served.path, &ram, &rings);
            for _ in 0..n {
                std::hint::black_box(client.get_config(0, 4).expect("get_config"));
            }
            drop(client);
            served.wait_ended(1);
        }
        "theirs" => {
            let path = socket("count-rtt");
            let mut peer = peer::Peer::spawn(&path);
            let rings: Vec<(EventFd, EventFd)> = (0..2)
                .map(|_| (EventFd::new(0).expect("eventfd"), EventFd::new(0).expect("eventfd")))
                .collect();
            let mut frontend = their_session(&path, &ram, &rings);
            let flags = VhostUserConfigFlags::empty();
            for _ in 0..n {
                std::hint::black_box(
                    frontend.get_config(0, 4, flags, &[0; 4]).expect("get_config"),
                );
            }
            drop(frontend);
            peer.join(TIMEOUT).expect("peer ends");
        }
        other => panic!("count: `ours` or `theirs`, not {other:?}"),
    }
    println!("{stack}: {n} GET_CONFIG round trips");
}

/// `count-connect ours|theirs N`: N connects to both rings started, each ended before the
/// next, untimed (module docs). Their back-end daemon is created for each connection (it serves
/// one), so its creation counts with theirs.
fn count_connect(stack: &str, n: u64) {
    let ram = GuestRegion::new(0, RAM).expect("guest memory");
    match stack {
        "ours" => {
            let served = common::serve("count-connect");
            let rings: Vec<(OwnedFd, OwnedFd)> =
                (0..2).map(|_| (eventfd().unwrap(), eventfd().unwrap())).collect();
            for _ in 0..n {
                drop(our_session(&served.path, &ram, &rings));
                served.wait_ended(1);
            }
        }
        "theirs" => {
            let path = socket("count-connect");
            let rings: Vec<(EventFd, EventFd)> = (0..2)
                .map(|_| (EventFd::new(0).expect("eventfd"), EventFd::new(0).expect("eventfd")))
                .collect();
            for _ in 0..n {
                let mut peer = peer::Peer::spawn(&path);
                wait_bound(&path);
                drop(their_session(&path, &ram, &rings));
                peer.join(TIMEOUT).expect("peer ends");
            }
        }
        other => panic!("count-connect: `ours` or `theirs`, not {other:?}"),
    }
    println!("{stack}: {n} connects");
}

fn report(name: &str, ours: &Tally, theirs: &Tally) {
    if ours.iters.get() == 0 || theirs.iters.get() == 0 {
        println!("{name}: not run on both stacks");
        return;
    }
    let (o, t) = (ours.mean(), theirs.mean());
    let per_sec = |d: Duration| 1.0 / d.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "{name}: ours {o:?} ({:.0}/s, {} iterations), theirs {t:?} ({:.0}/s, {} iterations), \
         ratio ours/theirs {:.3}",
        per_sec(o),
        ours.iters.get(),
        per_sec(t),
        theirs.iters.get(),
        o.as_secs_f64() / t.as_secs_f64().max(f64::MIN_POSITIVE),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    if matches!(mode, Some("count" | "count-connect")) {
        let stack = args.get(2).map_or("ours", String::as_str);
        let n = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1000);
        if mode == Some("count") {
            count(stack, n);
        } else {
            count_connect(stack, n);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let connect = (Tally::default(), Tally::default());
    let cross = (Tally::default(), Tally::default());
    let round_trip = (Tally::default(), Tally::default());
    bench_connect(&mut c, &connect.0, &connect.1, &cross);
    bench_round_trips(&mut c, &round_trip.0, &round_trip.1);
    c.final_summary();
    println!("\nmeans over every timed iteration (warm-up included):");
    report("connect_to_rings_started", &connect.0, &connect.1);
    report("get_config_round_trip", &round_trip.0, &round_trip.1);
    println!(
        "cross pairs, connect_to_rings_started: our client + their daemon {:?}, \
         their front-end + our daemon {:?}",
        cross.0.mean(),
        cross.1.mean()
    );
}
