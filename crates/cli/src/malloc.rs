//! glibc malloc settings that keep the server's memory flat in the number of requests it runs.
//!
//! glibc raises its mmap threshold each time a large mapped block is freed (up to 32 MiB); from
//! then on, buffers of that size come from the heap arenas instead, where they fragment, and the
//! resident size creeps up with every request processed although the live heap stays the same
//! (bench/README.md: 45.8 MiB peak after 100,000 requests, 53.8 MiB after 1,000,000, with a live
//! heap of 15–21 MiB throughout). Fixing both thresholds at glibc's initial 128 KiB keeps large
//! transient buffers in their own mappings, unmapped when freed, and trims the heap's free top:
//! 40.0 / 40.2 MiB for the same two batches, at the same CPU time per request.
//!
//! `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the environment (glibc's own tunables)
//! leave the thresholds to glibc. Other C libraries are left alone.

/// The fixed threshold, glibc's initial (dynamic) one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the settings; call first thing in `main`. Returns whether they were applied.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let env_set =
            ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"].iter().any(|v| std::env::var_os(v).is_some());
        if !env_set {
            // SAFETY: mallopt only changes malloc's parameters; it is thread-safe and takes no pointers.
            return unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD) == 1
            };
        }
    }
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_accepts_the_thresholds() {
        if ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"].iter().all(|v| std::env::var_os(v).is_none()) {
            assert!(super::tune());
        }
    }
}
