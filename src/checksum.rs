//! sha256 as lowercase hex: config hashes and output checksums in the manifest.

use std::io::Write;

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that checksums and counts what passes through it, so an output file
/// need not be read back to be listed in the manifest.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written and their sha256 (lowercase hex), and the writer they went to.
    pub fn finish(self) -> (u64, String, W) {
        (self.bytes, hex(&self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes a [`PipedWriter`] gathers before handing them over: few enough hand-overs
/// and write calls, and little memory held (at most [`BLOCKS_IN_FLIGHT`] more).
const BLOCK: usize = 1 << 20;
const BLOCKS_IN_FLIGHT: usize = 4;

/// Bytes after which a [`PipedWriter`] starts writing what it wrote out to disk:
/// the final sync then waits for the last few only (a 290 MB file's sync alone,
/// at the end, took 0.14 s).
const WRITE_BACK: u64 = 16 << 20;

/// Starts writing bytes `from..to` of `file` out to disk, without waiting for it
/// (Linux; elsewhere the final sync does all of it).
fn start_write_back(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the call's duration; the call only
        // schedules writeback of the file's own pages. A failure is harmless: the
        // final sync writes them and reports any error.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

/// Alignment of the file offsets, lengths and memory of writes past the page
/// cache: the largest logical block size of Linux block devices (4 KiB).
const DIRECT_ALIGN: usize = 4096;

/// A file written past the page cache (`O_DIRECT`) where the file system allows
/// it: the bytes are gathered in an aligned buffer of [`BLOCK`] bytes, each full
/// buffer goes to the device as it is, and the last partial page through the page
/// cache. Elsewhere (or where the file system refuses) it is an ordinary write.
///
/// Why: written through the page cache, each page of an output was allocated,
/// copied into and written back by the kernel, on the same two cores that encode
/// the tables. On this project's VMs that cost 0.2–1.2 CPU-s per GB, depending on
/// whether the host still backed the memory the page cache took (a 1 GB `dd`:
/// 0.07 s of system time with `oflag=direct`, 0.19–1.24 s buffered and synced),
/// and a replaced output's pages had to be dropped again when the next run
/// removed it.
struct DirectFile {
    file: std::fs::File,
    /// Whether writes go past the page cache now.
    direct: bool,
    /// `buffer[start..start + filled]` holds the bytes not yet written; `start` is
    /// where the buffer's aligned part begins.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes written out, and up to where write-back was started (buffered only).
    written: u64,
    written_back: u64,
}

impl DirectFile {
    fn new(file: std::fs::File) -> Self {
        let buffer = vec![0u8; BLOCK + DIRECT_ALIGN];
        let start = buffer.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        let direct = set_direct(&file, true);
        Self {
            file,
            direct,
            buffer,
            start,
            filled: 0,
            written: 0,
            written_back: 0,
        }
    }

    /// Writes the first `len` gathered bytes (all, or a multiple of
    /// [`DIRECT_ALIGN`] when direct) and keeps the rest at the buffer's start.
    fn write_out(&mut self, len: usize) -> std::io::Result<()> {
        let bytes = &self.buffer[self.start..self.start + len];
        if self.direct {
            if let Err(e) = write_all_direct(&mut self.file, bytes) {
                // Refused (EINVAL: the file system takes no direct writes): nothing
                // was written, so the same bytes go through the page cache instead.
                if e.raw_os_error() != Some(libc::EINVAL) || !set_direct(&self.file, false) {
                    return Err(e);
                }
                self.direct = false;
                self.file.write_all(bytes)?;
            }
        } else {
            self.file.write_all(bytes)?;
        }
        self.written += len as u64;
        if !self.direct && self.written - self.written_back >= WRITE_BACK {
            start_write_back(&self.file, self.written_back, self.written);
            self.written_back = self.written;
        }
        self.buffer
            .copy_within(self.start + len..self.start + self.filled, self.start);
        self.filled -= len;
        Ok(())
    }

    /// Writes what is left (its whole pages directly, the rest through the page
    /// cache) and syncs the file.
    fn finish(mut self) -> std::io::Result<()> {
        if self.direct {
            let whole = self.filled / DIRECT_ALIGN * DIRECT_ALIGN;
            if whole > 0 {
                self.write_out(whole)?;
            }
            if self.filled > 0 {
                if !set_direct(&self.file, false) {
                    return Err(std::io::Error::other("cannot end direct writes"));
                }
                self.direct = false;
            }
        }
        if self.filled > 0 {
            self.write_out(self.filled)?;
        }
        self.file.sync_all()
    }
}

impl Write for DirectFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let taken = buf.len().min(BLOCK - self.filled);
        let at = self.start + self.filled;
        self.buffer[at..at + taken].copy_from_slice(&buf[..taken]);
        self.filled += taken;
        if self.filled == BLOCK {
            self.write_out(BLOCK)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes all of `bytes` to a file open for direct writes: `write_all`, except
/// that a short write (which leaves the file offset unaligned) is an error.
fn write_all_direct(file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let written = file.write(bytes)?;
    if written == bytes.len() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("a direct write took {written} of {} bytes", bytes.len()),
        ))
    }
}

/// Turns direct writes on or off for `file`; whether that was done (Linux only).
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL and F_SETFL read and set the descriptor's status flags;
        // the descriptor is open for the calls' duration.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return false;
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            libc::fcntl(fd, libc::F_SETFL, flags) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        false
    }
}

/// A [`HashingWriter`] over a file on a thread of its own: what is written is
/// gathered into blocks and handed over, and the thread checksums each block and
/// writes it ([`DirectFile`]), then syncs the file. The encoders that write a
/// table run on meanwhile: done in their thread, the checksum and the copy were a
/// third of the write stage, with one core idle.
pub struct PipedWriter {
    block: Vec<u8>,
    send: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<std::io::Result<(u64, String)>>>,
}

impl PipedWriter {
    pub fn new(file: std::fs::File) -> Self {
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
        let worker = std::thread::spawn(move || {
            let mut out = HashingWriter::new(DirectFile::new(file));
            for block in receive {
                out.write_all(&block)?;
            }
            let (bytes, sha, file) = out.finish();
            file.finish()?;
            Ok((bytes, sha))
        });
        Self {
            block: Vec::with_capacity(BLOCK),
            send: Some(send),
            worker: Some(worker),
        }
    }

    fn hand_over(&mut self) -> std::io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        self.send(block)
    }

    /// Sends a block to the file's thread.
    fn send(&self, block: Vec<u8>) -> std::io::Result<()> {
        let Some(send) = &self.send else {
            return Err(std::io::Error::other("the file's writer is finished"));
        };
        // A closed channel: the thread stopped on an error, which `finish` returns.
        send.send(block)
            .map_err(|_| std::io::Error::other("the file's writer stopped"))
    }

    /// Writes what is left, syncs the file, and returns the bytes written and their
    /// sha256 (lowercase hex), or the first error writing them.
    pub fn finish(mut self) -> std::io::Result<(u64, String)> {
        let handed = if self.block.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        };
        self.send = None;
        let Some(worker) = self.worker.take() else {
            return Err(std::io::Error::other("the file's writer is finished"));
        };
        let written = worker
            .join()
            .map_err(|_| std::io::Error::other("the file's writer panicked"))?;
        // The thread's own error says more than a failed hand-over.
        let written = written?;
        handed.map(|_| written)
    }
}

/// A writer that can take bytes it owns without copying them.
pub trait Blocks: Write {
    fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.write_all(&bytes)
    }
}

impl Blocks for Vec<u8> {}

impl<B: Blocks + ?Sized> Blocks for &mut B {
    fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        (**self).write_owned(bytes)
    }
}

impl Blocks for PipedWriter {
    /// Hands `bytes` over as a block of their own (after what was gathered before).
    fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        if !self.block.is_empty() {
            self.hand_over()?;
        }
        self.send(bytes)
    }
}

impl Write for PipedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.block.len() + buf.len() > BLOCK && !self.block.is_empty() {
            self.hand_over()?;
        }
        self.block.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PipedWriter {
    /// An unfinished writer (the table failed) still stops its thread.
    fn drop(&mut self) {
        self.send = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_hashing_the_bytes() {
        let mut out = Vec::new();
        let mut writer = HashingWriter::new(&mut out);
        writer.write_all(b"loyalty ").unwrap();
        writer.write_all(b"outputs").unwrap();
        let (bytes, sha, _) = writer.finish();
        assert_eq!(bytes, 15);
        assert_eq!(sha, sha256_hex(b"loyalty outputs"));
        assert_eq!(out, b"loyalty outputs");
    }

    /// Small and large writes, across blocks, come out whole and in order.
    #[test]
    fn piped_writer_writes_and_hashes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut writer = PipedWriter::new(std::fs::File::create(&path).unwrap());
        let mut expected = Vec::new();
        for i in 0..40u32 {
            // From a few bytes to several blocks in one write.
            let part: Vec<u8> = (0..(i as usize * 97_001) % (3 * BLOCK))
                .map(|j| (j as u32 ^ i) as u8)
                .collect();
            writer.write_all(&part).unwrap();
            expected.extend_from_slice(&part);
        }
        let (bytes, sha) = writer.finish().unwrap();
        assert_eq!(bytes, expected.len() as u64);
        assert_eq!(sha, sha256_hex(&expected));
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// Files of every length around the alignment and the buffer come out whole,
    /// written past the page cache where the file system allows it and through it
    /// where not (or where the job's file system refuses direct writes).
    #[test]
    fn direct_files_hold_every_byte_at_any_length() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 12_345,
        ];
        for (k, &len) in lengths.iter().enumerate() {
            // No period: a byte in the wrong place shows.
            let bytes: Vec<u8> = (0..len)
                .map(|j| ((j as u64 + k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
                .collect();
            for direct in [true, false] {
                let path = dir.path().join(format!("{k}-{direct}.bin"));
                let mut file = DirectFile::new(std::fs::File::create(&path).unwrap());
                if !direct {
                    assert!(!file.direct || set_direct(&file.file, false));
                    file.direct = false;
                }
                // In pieces of uneven sizes, as the encoders hand them over.
                for piece in bytes.chunks(7_919) {
                    file.write_all(piece).unwrap();
                }
                file.finish().unwrap();
                assert!(
                    std::fs::read(&path).unwrap() == bytes,
                    "{len} bytes, direct {direct}"
                );
            }
        }
    }
}
