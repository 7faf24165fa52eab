//! Handing freed memory back to the system.

/// glibc keeps freed heap pages resident. Filling the caches frees a lot in small pieces (each
/// object is read whole, then slimmed), which would stay part of the provisioner's resident
/// memory for good; this returns them.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free heap pages back to the kernel; no live allocation is
    // touched, and it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
