//! XDP packet counter: one ARRAY map entry `{ packets, last_ifindex }`, every packet passes.
#![no_std]
#![no_main]
#![cfg_attr(not(feature = "non-atomic"), feature(core_intrinsics))]
#![allow(internal_features)]

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::Array, programs::XdpContext};

/// Value of `COUNTER[0]`. Layout shared with `launcher::counter::CounterValue` (the loader checks
/// the map's value size against it). The padding is explicit so userspace reads no undefined bytes.
#[repr(C)]
pub struct CounterValue {
    pub packets: u64,
    pub last_ifindex: u32,
    pub _reserved: u32,
}

#[map(name = "COUNTER")]
static COUNTER: Array<CounterValue> = Array::with_max_entries(1, 0);

#[xdp]
pub fn xdp_counter(ctx: XdpContext) -> u32 {
    if let Some(value) = COUNTER.get_ptr_mut(0) {
        // SAFETY: the pointer comes from the map lookup and stays valid for the program's run.
        unsafe {
            count((&raw mut (*value).packets));
            (*value).last_ifindex = (*ctx.ctx).ingress_ifindex;
        }
    }
    xdp_action::XDP_PASS
}

/// Two CPUs can run this program at once on the same entry: a plain `+=` is a load/add/store and
/// loses counts. The relaxed atomic add compiles to BPF's `lock *(u64 *)(rX + 0) += rY`. Its
/// result must stay unused: LLVM 22 miscompiles a relaxed fetch-add whose result is used.
#[cfg(not(feature = "non-atomic"))]
#[inline(always)]
unsafe fn count(packets: *mut u64) {
    // SAFETY: the caller passes a pointer into the map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            packets, 1,
        );
    }
}

/// The racy load/add/store, built only by `cargo xtask bench` to show that its exactness check
/// can fail (never embedded in the tools).
#[cfg(feature = "non-atomic")]
#[inline(always)]
unsafe fn count(packets: *mut u64) {
    // SAFETY: the caller passes a pointer into the map value.
    unsafe { packets.write_volatile(packets.read_volatile() + 1) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
