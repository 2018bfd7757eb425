//! The examples' and benches' global allocator.
//!
//! glibc's malloc hands large freed blocks back to the OS, so every training step pays page
//! faults (and the kernel's zeroing of each page) to get its activations' memory again.
//! mimalloc with purging turned off ([`keep_freed_memory`]) keeps freed memory for reuse:
//! MiniLM training +7–10 % and SmolLM2 training +20 % on 2 cores, for a peak RSS 5–10 %
//! higher (BENCHMARKS.md). A program that uses burn-lora as a library chooses its own
//! allocator; this is the one the figures were measured with.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (libmimalloc-sys exports no name
/// for it): milliseconds before freed memory is returned to the OS, -1 for never.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS: the next step's tensors reuse it without page
/// faults. Call first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads options at each purge decision.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}
