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
static GLOBAL: Mimalloc = Mimalloc;

/// The largest alignment every mimalloc block has: block sizes are whole
/// words.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, asked through its plain entry points when the layout's
/// alignment is a word or less (nearly every allocation).
///
/// The `mimalloc` crate calls `mi_malloc_aligned` for every allocation.
/// mimalloc 3 serves that from its fast path only for blocks of at most
/// 1 KiB or of a power-of-two size; any other size (a read buffer of
/// 8 KiB plus a little, a boxed response body) is over-allocated by the
/// alignment and its page marked as holding interior pointers, which
/// slows every free on it. Asking `mi_malloc` for the alignment it gives
/// anyway took a proxied request from 27,018 to 26,539 instructions
/// (callgrind; two such allocations a request).
struct Mimalloc;

// SAFETY: every pointer handed out comes from mimalloc with at least the
// layout's size and alignment (a word or less from `mi_malloc`, which
// aligns every block to a word; more from the `_aligned` calls), and every
// pointer given back is one of those, freed or resized by mimalloc.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: plain allocation calls; any size is valid.
        unsafe {
            match layout.align() <= WORD {
                true => mi_malloc(layout.size()).cast(),
                false => mi_malloc_aligned(layout.size(), layout.align()).cast(),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as in `alloc`.
        unsafe {
            match layout.align() <= WORD {
                true => mi_zalloc(layout.size()).cast(),
                false => mi_zalloc_aligned(layout.size(), layout.align()).cast(),
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator with `layout` (the
        // caller's contract); the block keeps its alignment.
        unsafe {
            match layout.align() <= WORD {
                true => mi_realloc(ptr.cast(), new_size).cast(),
                false => mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    /// Every size and alignment gets a block aligned as asked, zeroed when
    /// asked, and keeps its bytes and alignment through a resize.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_asked_through_alloc_and_realloc() {
        let a = super::Mimalloc;
        for align in [1, 2, 8, 16, 64, 4096] {
            for size in [1, 7, 24, 1000, 1100, 8200, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero layout; every block is freed with the
                // layout (and size) it has.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).all(|i| *p.add(i) == 0));
                    p.write_bytes(0xAB, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xAB));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }
}
