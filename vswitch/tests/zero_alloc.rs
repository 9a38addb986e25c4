//! The forwarding path allocates nothing per packet in the steady state: a counting global
//! allocator watches `Pipeline::process` over a mix of known unicast, flooded broadcast, unknown
//! unicast and malformed frames after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vswitch::switch::gateway::GatewayConfig;
use vswitch::switch::{Actions, NetId, NetworkParams, Pipeline, PortId};
use vswitch::wire::MacAddr;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 8192,
            aging_ms: 300_000,
            // A gateway sees every frame first (it takes only its own).
            gateway: Some(GatewayConfig {
                ip: "10.0.0.1".parse().unwrap(),
                mac: MacAddr([0x02, 0x42, 10, 0, 0, 1]),
                subnet: "10.0.0.0/24".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: "n.vswitch".into(),
                dns_forward: false,
            }),
            egress: true,
        },
    );
    for i in 0..8 {
        assert!(p.add_port(PortId(i), NetId(0), None));
    }
    let mac = |i: u8| [0x02, 0x42, 0, 0, 0, i];
    let mut frames = Vec::new();
    for i in 0..8u8 {
        frames.push((i, frame(mac((i + 1) % 8), mac(i), 1514))); // known unicast after warm-up
        frames.push((i, frame([0xff; 6], mac(i), 60))); // broadcast flood
        frames.push((i, frame(mac(100 + i), mac(i), 60))); // unknown unicast flood
        frames.push((i, vec![0u8; 10])); // runt
    }
    let mut actions = Actions::with_capacity(16);
    // Warm-up: learn every MAC, size the buffers.
    for (now, (port, f)) in frames.iter_mut().enumerate() {
        p.process(now as u64, PortId(u32::from(*port)), f, &mut actions);
    }
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut forwarded = 0usize;
    for round in 0..10_000u64 {
        for (port, f) in frames.iter_mut() {
            p.process(1000 + round, PortId(u32::from(*port)), f, &mut actions);
            forwarded += actions.out.len();
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert!(forwarded > 10_000 * 8, "frames were forwarded: {forwarded}");
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the forwarding path"
    );
}
