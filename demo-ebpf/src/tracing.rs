//! A raw tracepoint program for the tests of the sandbox's bpf() gateway: counts the execs
//! (`sched_process_exec`) of the whole machine in `EXECS[0]`. Built next to the XDP counter but
//! never embedded in the tools (its program type needs CAP_PERFMON).
#![no_std]
#![no_main]

use aya_ebpf::{macros::map, macros::raw_tracepoint, maps::Array, programs::RawTracePointContext};

#[map(name = "EXECS")]
static EXECS: Array<u64> = Array::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn count_execs(_ctx: RawTracePointContext) -> i32 {
    if let Some(count) = EXECS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from the map lookup and stays valid for the program's run.
        // Racy across CPUs, which the tests (a count above zero) do not mind.
        unsafe { count.write_volatile(count.read_volatile() + 1) }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
