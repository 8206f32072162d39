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

    /// Bytes written and their sha256 (lowercase hex).
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex(&self.hasher.finalize()))
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

/// A [`HashingWriter`] over a file on a thread of its own: what is written is
/// gathered into blocks and handed over, and the thread checksums each block and
/// writes it (the kernel's copy into the page cache), then syncs the file. The
/// encoders that write a table run on meanwhile: done in their thread, the
/// checksum and the copy were a third of the write stage, with one core idle.
pub struct PipedWriter {
    block: Vec<u8>,
    send: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<std::io::Result<(u64, String)>>>,
}

impl PipedWriter {
    pub fn new(file: std::fs::File) -> Self {
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
        let worker = std::thread::spawn(move || {
            let mut out = HashingWriter::new(file);
            let mut written_back = 0;
            for block in receive {
                out.write_all(&block)?;
                if out.bytes - written_back >= WRITE_BACK {
                    start_write_back(&out.inner, written_back, out.bytes);
                    written_back = out.bytes;
                }
            }
            out.inner.sync_all()?;
            Ok(out.finish())
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
        let (bytes, sha) = writer.finish();
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
}
