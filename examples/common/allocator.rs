//! The examples' and benches' global allocator.
//!
//! glibc's malloc hands large freed blocks back to the OS, so every training step pays page
//! faults (and the kernel's zeroing) to get its activations' memory again: 7–10 % of a
//! MiniLM step on 2 cores (BENCHMARKS.md). mimalloc keeps freed memory for reuse. A program
//! that uses burn-lora as a library chooses its own allocator; this is the one we measure with.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
