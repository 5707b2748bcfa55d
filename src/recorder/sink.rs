//! Where segment bytes go: a [`Sink`] per file, made by a [`Storage`]. The real ones are plain
//! `std::fs` files; tests substitute sinks that fail like a full or broken disk.
//!
//! Writes are synchronous on purpose. A `write(2)` of a few hundred bytes into the page cache
//! costs a few microseconds, less than handing the bytes to another thread would, and it gives
//! the `event` durability promise its meaning: when `append` returns, the kernel has the record,
//! so a gateway crash cannot lose what the client is about to receive. Only `fsync` can block
//! for long, and its policy is separate (and off the per-record path).
//!
//! Permissions: the recording holds prompts and answers, so the directory is 0700 and every file
//! 0600; [`ensure_private_dir`] creates or repairs the directory and [`ensure_private_file`]
//! repairs files found with wider modes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// One append-only segment file.
pub trait Sink {
    /// Writes the whole buffer or fails; on failure some prefix may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (to drop a partial record after a failed write).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Makes sinks for new segment files.
pub trait Storage {
    /// Creates `path` exclusively, mode 0600.
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn Sink>>;
    /// Makes a newly created directory entry durable (fsync of the directory).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// Files on the local file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage;

impl Sink for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // Opened with O_APPEND, so later writes land after the new end.
        self.set_len(len)
    }
}

impl Storage for FileStorage {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn Sink>> {
        let f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        // The umask can only remove bits, but a pre-set default ACL could add some: be sure.
        ensure_private_file(path)?;
        Ok(Box::new(f))
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Creates `dir` (and parents) with mode 0700, or narrows an existing one to 0700.
/// Returns whether the mode had to be fixed.
pub fn ensure_private_dir(dir: &Path) -> io::Result<bool> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        )),
        Ok(m) => fix_mode(dir, m.permissions().mode(), 0o700),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            let mode = fs::metadata(dir)?.permissions().mode();
            fix_mode(dir, mode, 0o700)
        }
        Err(e) => Err(e),
    }
}

/// Narrows a file's mode to 0600 if it is wider. Returns whether it had to be fixed.
pub fn ensure_private_file(path: &Path) -> io::Result<bool> {
    let mode = fs::metadata(path)?.permissions().mode();
    fix_mode(path, mode, 0o600)
}

fn fix_mode(path: &Path, mode: u32, want: u32) -> io::Result<bool> {
    if mode & 0o777 == want {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(want))?;
    Ok(true)
}
