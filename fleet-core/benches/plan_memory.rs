//! Peak heap while planning a 10,000-instance fleet, counted by a global allocator, and
//! the median planning time over repeated runs. `make bench` (or
//! `cargo bench -p fleet-core --bench plan_memory`).

// fleet-core's clippy.toml forbids clock reads in the library; a benchmark times itself.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[path = "fleet.rs"]
mod fleet;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    // `cargo test --benches` runs this with no `--bench` flag: keep that quick.
    let n = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        500
    };
    for churn in [false, true] {
        let f = fleet::fleet(n, churn);
        let inputs = LIVE.load(Ordering::Relaxed);
        PEAK.store(inputs, Ordering::Relaxed);
        let plan = fleet::run(&f);
        let peak = PEAK.load(Ordering::Relaxed);
        drop(plan);
        let mut times: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                let p = fleet::run(&f);
                let e = t.elapsed().as_secs_f64() * 1e3;
                drop(p);
                e
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "plan {n} instances ({}): median {:.2} ms over 21 runs; peak heap {:.1} MiB (inputs {:.1} MiB + planning {:.1} MiB)",
            if churn { "churn" } else { "steady" },
            times[10],
            mib(peak),
            mib(inputs),
            mib(peak - inputs)
        );
    }
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        println!(
            "peak RSS of the whole benchmark process: {:.1} MiB",
            ru.ru_maxrss as f64 / 1024.0
        );
    }
}
