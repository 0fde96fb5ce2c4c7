//! The process's memory allocator.
//!
//! Pointsman allocates through mimalloc: on the proxied-request path it
//! costs about 8% less CPU than glibc's malloc (an alternating wrk A/B
//! run; 9% fewer instructions under callgrind, see BENCHMARKS.md).
//! Loading a large rule set makes a short-lived peak (the parsed YAML next
//! to the compiled snapshot);
//! [`release_free_memory`] hands the freed pages back to the OS afterwards,
//! so the resident size settles on what the live snapshot needs.

/// Every allocation of the binary, its tests and its benches. Built with
/// `no_thp`: mimalloc otherwise asks for transparent huge pages, and each
/// touched 2 MB page then counts whole in the resident size (an idle proxy
/// held ~8 MB of heap instead of ~1.5 MB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns memory that was freed (e.g. by a config load) to the OS.
///
/// Called off the request path, after a compile and swap. Cheap when there
/// is nothing to return.
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any
    // thread at any time; `force` only makes it purge eagerly.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}
