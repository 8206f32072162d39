//! The process's memory use, for the stage log: performance work reads where the
//! peak is reached without an external profiler.

/// Resident set size now, in MiB (Linux; `None` elsewhere).
pub fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64 / (1 << 20))
}

/// Peak resident set size so far, in MiB.
pub fn peak_mib() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: on success the struct is initialised; it was zeroed before in any case.
    let usage = unsafe { usage.assume_init() };
    // ru_maxrss is in KiB on Linux.
    (status == 0).then(|| usage.ru_maxrss.max(0) as u64 / 1024)
}
