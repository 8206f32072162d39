//! The process's memory: its use, for the stage log (performance work reads where
//! the peak is reached without an external profiler), and handing memory back to
//! the OS (freed allocations, the input file's mapped pages).

/// What the allocator can do to give freed memory back to the OS; set by the
/// binary, which chooses the allocator (mimalloc returns freed memory only after a
/// delay, and then only on later allocations).
pub struct AllocatorHooks {
    /// Now: what is freed and not yet returned.
    pub release_freed: fn(),
    /// From now on, as soon as it is freed (a few per cent slower).
    pub release_at_once: fn(),
    /// From now on, nothing freed goes back (it is reused instead) until
    /// `release_kept`.
    pub keep_freed: fn(),
    /// What is kept goes back, and freed memory goes back after the allocator's
    /// usual delay again.
    pub release_kept: fn(),
}

static HOOKS: std::sync::OnceLock<AllocatorHooks> = std::sync::OnceLock::new();

pub fn set_allocator_hooks(hooks: AllocatorHooks) {
    let _ = HOOKS.set(hooks);
}

/// Whether memory comes first: [`release_at_once`] was called.
static MEMORY_FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// When memory comes first, returns the memory a finished stage freed: between
/// stages at 100M lines the resident memory otherwise stayed up to 1.8 GB above
/// what was in use. Else it is kept for the stages after: returned, it was faulted
/// in and zeroed again by them (at 10M lines a quarter of the page faults and 2% of
/// the wall time), and the peak, reached in the fold, was the same at 10M and 30M.
pub fn release_freed() {
    if !MEMORY_FIRST.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Some(hooks) = HOOKS.get() {
        (hooks.release_freed)();
    }
}

/// Memory first: freed memory goes back at once, also within a stage, and between
/// stages ([`release_freed`]). At 100M lines (streaming) the peak 5.4 -> 3.4 GiB,
/// the wall time +5%; at 30M lines the wall time +12% for 0.23 GiB (pages freed and
/// faulted in again are zeroed again).
pub fn release_at_once() {
    MEMORY_FIRST.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(hooks) = HOOKS.get() {
        (hooks.release_at_once)();
    }
}

/// Whether [`keep_freed`] is in force.
static KEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Unless memory comes first: from now on what is freed is kept for reuse, until
/// [`release_kept`]. The stages after the fold free and allocate frames of the same
/// sizes over and over; past mimalloc's purge delay each was returned and faulted in
/// and zeroed again. At 30M lines: 0.85M page faults fewer and 0.5–0.8 s of 17 s;
/// the peak, in the fold, about the same (+0.1 GB in some runs). Returning the
/// fold's freed memory here first cost the next stage as much again, at 10M too.
pub fn keep_freed() {
    use std::sync::atomic::Ordering::Relaxed;
    if MEMORY_FIRST.load(Relaxed) || KEPT.swap(true, Relaxed) {
        return;
    }
    if let Some(hooks) = HOOKS.get() {
        (hooks.keep_freed)();
    }
}

/// Ends [`keep_freed`]: what is kept goes back, before a stage whose peak would
/// otherwise add to it (the write).
pub fn release_kept() {
    if !KEPT.swap(false, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Some(hooks) = HOOKS.get() {
        (hooks.release_kept)();
    }
}

/// Resident set size now, in MiB (Linux; `None` elsewhere).
pub fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64 / (1 << 20))
}

/// Peak resident set size so far (since the last [`reset_peak`]), in MiB.
pub fn peak_mib() -> Option<u64> {
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
    {
        return Some(kib / 1024);
    }
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: on success the struct is initialised; it was zeroed before in any case.
    let usage = unsafe { usage.assume_init() };
    // ru_maxrss is in KiB on Linux.
    (status == 0).then(|| usage.ru_maxrss.max(0) as u64 / 1024)
}

/// Resets the peak resident set size, so the next peak read is the work since
/// (`LOYALTY_PLAN_PEAKS`, performance work: the process's peak as `/usr/bin/time`
/// reports it is then lost, so never for a benchmark).
pub fn reset_peak() {
    // "5" resets the peak resident set size (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Pages out this process's read-only shared file mappings (`r--s` in
/// /proc/self/maps); returns the bytes of the ranges advised.
///
/// Why: Polars maps a local Parquet input whole, and every page it has decoded
/// stays counted in the process's resident memory until the scan ends: 1.3 GB of a
/// peak at 100M lines, though the kernel may drop those pages at any time. Paging
/// them out (`MADV_PAGEOUT`) keeps the mapping: a page touched again is read again
/// from the file. Unlike `MADV_DONTNEED`, paging out never discards data, so it is
/// harmless even if the range was unmapped and reused since the maps were read.
#[cfg(target_os = "linux")]
pub fn page_out_file_mappings() -> u64 {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // A path follows the offset, device and inode: a file, not anonymous memory.
        if perms != "r--s" || fields.nth(3).is_none() {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: MADV_PAGEOUT changes no memory contents, only where they live;
        // on a range that is not mapped it fails with ENOMEM and does nothing.
        let status = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if status == 0 {
            advised += (end - start) as u64;
        }
    }
    advised
}

#[cfg(not(target_os = "linux"))]
pub fn page_out_file_mappings() -> u64 {
    0
}

/// While alive, a thread pages out the file mappings ([`page_out_file_mappings`])
/// five times a second: around a scan of the input, whose pages would otherwise stay
/// resident until the scan ends.
pub struct PagingOut {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PagingOut {
    pub fn start() -> PagingOut {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("page-out".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    page_out_file_mappings();
                    std::thread::park_timeout(std::time::Duration::from_millis(200));
                }
            })
            .ok();
        PagingOut { stop, thread }
    }
}

impl Drop for PagingOut {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// A zeroed array of `T` in memory of its own, advised as transparent huge pages
/// (Linux; elsewhere an ordinary allocation).
///
/// For a large table read at random (the fold's customer table, tens of MB): in 4
/// KiB pages nearly every lookup also missed the TLB and walked the page tables,
/// which stalled even the lookups asked for ahead. Only this mapping is advised: the
/// allocator's memory stays in small pages (see `main.rs`).
pub struct HugeZeroed<T: Copy> {
    address: std::ptr::NonNull<T>,
    len: usize,
    /// Bytes mapped (`len` rounded up to whole huge pages), or the ordinary
    /// allocation's layout.
    memory: Memory,
}

enum Memory {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Mapped(usize),
    Allocated(std::alloc::Layout),
}

// SAFETY: HugeZeroed owns its memory, like a Vec<T>.
unsafe impl<T: Copy + Send> Send for HugeZeroed<T> {}
// SAFETY: shared access only reads, like a &[T].
unsafe impl<T: Copy + Sync> Sync for HugeZeroed<T> {}

/// Bytes of a transparent huge page on x86_64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

impl<T: Copy> HugeZeroed<T> {
    /// `len` zeroed values.
    ///
    /// # Safety
    /// A `T` of zero bytes must be a valid value.
    pub unsafe fn new(len: usize) -> Self {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        #[cfg(target_os = "linux")]
        if bytes >= HUGE_PAGE && std::mem::align_of::<T>() <= 4096 {
            let mapped = bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            // SAFETY: a fresh private anonymous mapping; the kernel zeroes it.
            let address = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    mapped,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if address != libc::MAP_FAILED
                && let Some(address) = std::ptr::NonNull::new(address as *mut T)
            {
                // SAFETY: advice on our own mapping; failing, it stays in small pages.
                unsafe { libc::madvise(address.as_ptr() as *mut libc::c_void, mapped, libc::MADV_HUGEPAGE) };
                return Self {
                    address,
                    len,
                    memory: Memory::Mapped(mapped),
                };
            }
        }
        // Past the address space: as a failed allocation of it would.
        let layout = std::alloc::Layout::array::<T>(len.max(1))
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()));
        // SAFETY: the layout has a non-zero size.
        let address = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
        let Some(address) = std::ptr::NonNull::new(address) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self {
            address,
            len,
            memory: Memory::Allocated(layout),
        }
    }
}

impl<T: Copy> std::ops::Deref for HugeZeroed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` values, zeroed (valid by `new`'s contract) or written since.
        unsafe { std::slice::from_raw_parts(self.address.as_ptr(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for HugeZeroed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.address.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeZeroed<T> {
    fn drop(&mut self) {
        match self.memory {
            // SAFETY: the mapping made in `new`, unmapped once.
            #[cfg(target_os = "linux")]
            Memory::Mapped(bytes) => unsafe {
                libc::munmap(self.address.as_ptr() as *mut libc::c_void, bytes);
            },
            #[cfg(not(target_os = "linux"))]
            Memory::Mapped(_) => {}
            // SAFETY: allocated in `new` with this layout.
            Memory::Allocated(layout) => unsafe {
                std::alloc::dealloc(self.address.as_ptr() as *mut u8, layout)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small (allocated) and large (mapped) arrays start zeroed and keep what is written.
    #[test]
    fn huge_zeroed_arrays_are_zeroed_and_writable() {
        for len in [0usize, 100, (3 << 20) / 8 + 5] {
            // SAFETY: zero bytes are a valid u64.
            let mut values = unsafe { HugeZeroed::<u64>::new(len) };
            assert_eq!(values.len(), len);
            assert!(values.iter().all(|&v| v == 0));
            for (i, v) in values.iter_mut().enumerate() {
                *v = i as u64 * 3;
            }
            assert!(values.iter().enumerate().all(|(i, &v)| v == i as u64 * 3));
        }
    }

    /// Resident bytes of the mappings of `path`, from /proc/self/smaps.
    fn resident_kib_of(path: &std::path::Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut total = 0;
        for line in smaps.lines() {
            // A mapping's header starts with its address range; its fields follow.
            let first = line.split_whitespace().next().unwrap_or_default();
            if first.contains('-') && !first.ends_with(':') {
                inside = line.ends_with(&*path.to_string_lossy());
            } else if inside && let Some(kib) = line.strip_prefix("Rss:") {
                total += kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap();
            }
        }
        total
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn paged_out_file_pages_leave_resident_memory_and_read_back_the_same() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped.bin");
        let bytes: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let len = bytes.len();
        // SAFETY: a fresh read-only shared mapping of a file no one else writes.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(address, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` readable bytes and lives until munmap below.
        let mapped = unsafe { std::slice::from_raw_parts(address as *const u8, len) };
        let sum = |m: &[u8]| m.iter().map(|&b| b as u64).sum::<u64>();
        let expected = sum(&bytes);
        // Another test in this process may page the mapping out between the read and
        // the measurement: read again until it is seen resident.
        let mut before = 0;
        for _ in 0..10 {
            assert_eq!(sum(mapped), expected);
            before = resident_kib_of(&path);
            if before >= 4 << 10 {
                break;
            }
        }
        assert!(before >= 4 << 10, "the mapping was read: {before} KiB resident");

        assert!(page_out_file_mappings() >= len as u64);
        let after = resident_kib_of(&path);
        assert!(
            after < before / 2,
            "{before} KiB resident before, {after} KiB after"
        );
        assert_eq!(sum(mapped), expected, "the pages read back unchanged");
        // SAFETY: unmapping the mapping made above; `mapped` is not used after.
        unsafe { libc::munmap(address, len) };
    }
}
