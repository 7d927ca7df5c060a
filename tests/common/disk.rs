//! A test disk for the document index: tantivy's own `MmapDirectory` over
//! real files, with two knobs a test turns while the server runs.
//!
//! - **Capacity.** With a capacity set, a write that would take the files
//!   of the directory past it fails with `ENOSPC`, as a full disk does
//!   (from the kernel's errno, so the server sees exactly what a full disk
//!   gives it). What the directory holds is measured on the real files, so
//!   files left behind keep taking space, as they would on a disk.
//! - **Hold.** With the hold on, the next commit (the write of `meta.json`,
//!   after an ingestion's segment files are written) waits until the hold
//!   is released (or its guard dropped): a running ingestion, kept running for as long as a test
//!   needs, and the very state a server killed just before its commit
//!   leaves on disk.
//!
//! Included by path (`#[path = "common/disk.rs"]`) by the tests that need
//! it.

#![allow(dead_code)]

use std::{
    fmt,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, PoisonError},
};

use tantivy::{
    Directory,
    directory::{
        AntiCallToken, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite,
        WatchCallback, WatchHandle, WritePtr,
        error::{DeleteError, LockError, OpenReadError, OpenWriteError},
    },
};
use tokio::sync::watch;

/// `ENOSPC` on Linux (and every Unix).
const ENOSPC: i32 = 28;

/// The files of one index directory, with a capacity and a hold.
#[derive(Clone)]
pub struct TestDisk {
    inner: MmapDirectory,
    dir: PathBuf,
    shared: Arc<Shared>,
}

struct Shared {
    knobs: Mutex<Knobs>,
    released: Condvar,
    /// Commits waiting on the hold right now.
    held: watch::Sender<usize>,
}

#[derive(Default)]
struct Knobs {
    capacity: Option<u64>,
    hold: bool,
}

impl TestDisk {
    /// The disk over `dir` (created if missing), with no capacity and no
    /// hold.
    pub fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("index dir");
        Self {
            inner: MmapDirectory::open(dir).expect("mmap directory"),
            dir: dir.to_path_buf(),
            shared: Arc::new(Shared {
                knobs: Mutex::default(),
                released: Condvar::new(),
                held: watch::Sender::new(0),
            }),
        }
    }

    /// The directory as the index takes it.
    pub fn directory(&self) -> Box<dyn Directory> {
        Box::new(self.clone())
    }

    /// A test server in `data_dir` whose document index is on this disk,
    /// on the test defaults that `tweak` adjusts.
    pub async fn serve(
        &self,
        data_dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut agentstream::config::ServeConfig),
    ) -> crate::common::TestServer {
        let index = data_dir.path().join("index");
        let documents = agentstream::rag::DocumentIndex::open_in(self.directory(), index)
            .await
            .expect("index opens");
        crate::common::TestServer::start_with_index(data_dir, documents, tweak).await
    }

    /// Bytes the directory's files take now.
    pub fn used(&self) -> u64 {
        used(&self.dir)
    }

    /// The names of the directory's files now, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes beyond `capacity` bytes in all fail with ENOSPC (`None`: no
    /// limit).
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.knobs().capacity = capacity;
    }

    /// Holds the next commits until the returned guard is released or
    /// dropped (also when a test fails: a held commit would keep the
    /// runtime from shutting down).
    pub fn hold(&self) -> Hold {
        self.knobs().hold = true;
        Hold { disk: self.clone() }
    }

    fn release(&self) {
        self.knobs().hold = false;
        self.shared.released.notify_all();
    }

    /// Waits until a commit is held.
    pub async fn until_held(&self) {
        self.shared
            .held
            .subscribe()
            .wait_for(|&held| held > 0)
            .await
            .expect("disk alive");
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.shared
            .knobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// ENOSPC when `more` bytes would take the directory past its capacity.
    fn make_room(&self, more: u64) -> io::Result<()> {
        let capacity = self.knobs().capacity;
        match capacity {
            Some(capacity) if self.used().saturating_add(more) > capacity => {
                Err(io::Error::from_raw_os_error(ENOSPC))
            }
            _ => Ok(()),
        }
    }

    /// Waits while the hold is on.
    fn wait_for_release(&self) {
        let mut knobs = self.knobs();
        if !knobs.hold {
            return;
        }
        self.shared.held.send_modify(|held| *held += 1);
        while knobs.hold {
            knobs = self
                .shared
                .released
                .wait(knobs)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.shared.held.send_modify(|held| *held -= 1);
    }
}

/// Commits are held while this lives.
pub struct Hold {
    disk: TestDisk,
}

impl Hold {
    /// Lets held commits (and later ones) go on.
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.disk.release();
    }
}

fn used(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl fmt::Debug for TestDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDisk").field("dir", &self.dir).finish()
    }
}

impl Directory for TestDisk {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let file = self
            .inner
            .open_write(path)?
            .into_inner()
            .map_err(|e| OpenWriteError::wrap_io_error(e.into_error(), path.to_path_buf()))?;
        Ok(BufWriter::new(Box::new(Bounded {
            file,
            disk: self.clone(),
        })))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if path == Path::new("meta.json") {
            self.wait_for_release();
        }
        // The new file is written beside the old one, then renamed over it.
        self.make_room(data.len() as u64)?;
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

/// A file being written, failing as a full disk does.
struct Bounded {
    file: Box<dyn TerminatingWrite + Send + Sync>,
    disk: TestDisk,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.disk.make_room(buf.len() as u64)?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl TerminatingWrite for Bounded {
    fn terminate_ref(&mut self, token: AntiCallToken) -> io::Result<()> {
        self.file.terminate_ref(token)
    }
}
