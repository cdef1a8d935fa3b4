//! The emulator's durable state on disk (`fleetsim serve --state-dir DIR`): the records the
//! core yields (`fleetsim_core::server::durable`) in a redb database, `DIR/state.redb`, and
//! the group commit that makes them durable before the answers that depend on them leave.
//!
//! Decision: redb, not SQLite through rusqlite. redb is pure Rust (no C build, nothing to
//! vendor for the container image), ACID with a durable commit per write transaction
//! (`Durability::Immediate`, an fsync'd copy-on-write B-tree root swap, so a `kill -9` at any
//! instant leaves the last committed transaction), and its typed tables are all the emulator
//! needs: three tables of `u64` → encoded record. SQL would add a query language and a schema
//! to keep in step with records the core already encodes.
//!
//! Group commit: handlers append the changes their request produced to the open batch while
//! they hold the core's lock (so batches keep the core's order) and then wait, without the
//! lock, until a batch at least as new as the last one appended is committed. One writer
//! thread commits whatever accumulated in one transaction, so under load one fsync covers many
//! requests. An answer never leaves before the state it shows is on disk (ack after durable).
//! When a commit fails, the store is broken: every later answer is a 503 naming the cause, as
//! answering would promise what the disk does not hold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetsim_core::server::durable::{Change, StoredRecord, Table};
use parking_lot::{Condvar, Mutex};
use redb::{Database, ReadableDatabase, TableDefinition};
use thiserror::Error;
use tokio::sync::watch;

/// The database file inside the state dir.
pub const STATE_FILE: &str = "state.redb";

const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
const AGENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("agents");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

fn definition(table: Table) -> TableDefinition<'static, u64, &'static [u8]> {
    match table {
        Table::Meta => META,
        Table::Agents => AGENTS,
        Table::Jobs => JOBS,
    }
}

/// The state dir cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    // The cause is in the message and not a `source`, so a printed chain says it once.
    #[error("cannot create the state dir {dir}: {cause}")]
    Dir { dir: PathBuf, cause: std::io::Error },
    #[error("the state database {path}: {cause}")]
    Db { path: PathBuf, cause: redb::Error },
    #[error("the emulator's first state write failed: {0}")]
    Commit(String),
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (or create) `dir/state.redb` and read every record back. Another process holding
    /// it open is refused by redb's file lock.
    pub fn open(dir: &Path) -> Result<(Store, Vec<StoredRecord>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::Dir {
            dir: dir.to_path_buf(),
            cause,
        })?;
        let path = dir.join(STATE_FILE);
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            cause: e.into(),
        })?;
        let store = Store { db, path };
        let records = store.load().map_err(|cause| store.error(cause))?;
        Ok((store, records))
    }

    fn error(&self, cause: redb::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            cause,
        }
    }

    fn load(&self) -> Result<Vec<StoredRecord>, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut records = Vec::new();
        for table in [Table::Meta, Table::Agents, Table::Jobs] {
            let t = match txn.open_table(definition(table)) {
                Ok(t) => t,
                // A fresh database has no tables yet.
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in redb::ReadableTable::iter(&t)? {
                let (key, value) = entry?;
                records.push(StoredRecord {
                    table,
                    key: key.value(),
                    value: value.value().to_vec(),
                });
            }
        }
        Ok(records)
    }

    /// Apply `changes` in order in one transaction, durable when this returns.
    pub fn write(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.write_txn(changes).map_err(|e| self.error(e))
    }

    fn write_txn(&self, changes: &[Change]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut agents = txn.open_table(AGENTS)?;
            let mut jobs = txn.open_table(JOBS)?;
            for change in changes {
                let table = match change.table {
                    Table::Meta => &mut meta,
                    Table::Agents => &mut agents,
                    Table::Jobs => &mut jobs,
                };
                match &change.value {
                    Some(value) => {
                        table.insert(change.key, value.as_slice())?;
                    }
                    None => {
                        table.remove(change.key)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// The open batch: changes appended since the writer last took them.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    /// The number of the open batch (1 for the first).
    open: u64,
    /// The newest batch that got changes: what an answer must wait for.
    appended: u64,
    stopping: bool,
}

/// Where group commit stands: the newest committed batch, or why the store broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Committed {
    Upto(u64),
    Broken(String),
}

/// The group committer: the open batch, the writer thread, and the committed batch number
/// (`send_replace`: the value must move even while no handler is waiting).
pub(crate) struct Committer {
    batch: Mutex<Batch>,
    wake: Condvar,
    committed: watch::Sender<Committed>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("committed", &*self.committed.borrow())
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// Start the writer thread over `store`.
    pub(crate) fn start(store: Store) -> Arc<Committer> {
        let committer = Arc::new(Committer {
            batch: Mutex::new(Batch {
                open: 1,
                ..Batch::default()
            }),
            wake: Condvar::new(),
            committed: watch::channel(Committed::Upto(0)).0,
            writer: Mutex::new(None),
        });
        let writer = {
            let c = committer.clone();
            std::thread::Builder::new()
                .name("fleetsim-store".into())
                .spawn(move || c.write_loop(&store))
        };
        match writer {
            Ok(handle) => *committer.writer.lock() = Some(handle),
            Err(e) => {
                committer
                    .committed
                    .send_replace(Committed::Broken(format!("no writer thread: {e}")));
            }
        }
        committer
    }

    /// Append changes to the open batch; returns the batch to wait for before answering (the
    /// newest with changes, this call's or an earlier one's).
    pub(crate) fn append(&self, changes: impl Iterator<Item = Change>) -> u64 {
        let mut batch = self.batch.lock();
        let before = batch.changes.len();
        batch.changes.extend(changes);
        if batch.changes.len() > before {
            batch.appended = batch.open;
            self.wake.notify_one();
        }
        batch.appended
    }

    /// Wait until batch `upto` is committed. `Err` with the cause once the store broke.
    pub(crate) async fn durable(&self, upto: u64) -> Result<(), String> {
        let mut rx = self.committed.subscribe();
        let state = rx
            .wait_for(|c| match c {
                Committed::Upto(n) => *n >= upto,
                Committed::Broken(_) => true,
            })
            .await
            .map(|c| c.clone());
        match state {
            Ok(Committed::Upto(_)) => Ok(()),
            Ok(Committed::Broken(why)) => Err(why),
            Err(_) => Err("the state writer stopped".into()),
        }
    }

    /// Let the writer thread commit what is pending and end, without waiting for it.
    pub(crate) fn request_stop(&self) {
        self.batch.lock().stopping = true;
        self.wake.notify_one();
    }

    /// Commit what is pending, then stop the writer thread (graceful shutdown). Blocks.
    pub(crate) fn stop(&self) {
        self.request_stop();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    fn write_loop(&self, store: &Store) {
        loop {
            let (changes, number) = {
                let mut batch = self.batch.lock();
                while batch.changes.is_empty() && !batch.stopping {
                    self.wake.wait(&mut batch);
                }
                if batch.changes.is_empty() {
                    return;
                }
                let number = batch.open;
                batch.open += 1;
                (std::mem::take(&mut batch.changes), number)
            };
            match store.write(&changes) {
                Ok(()) => {
                    self.committed.send_replace(Committed::Upto(number));
                }
                Err(e) => {
                    eprintln!("fleetsim: emulator state not written, answering 503 from now: {e}");
                    self.committed
                        .send_replace(Committed::Broken(e.to_string()));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(table: Table, key: u64, value: Option<&str>) -> Change {
        Change {
            table,
            key,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fleetsim-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    // Goal: a write is read back after the database is closed and opened again; deletes
    // remove, later writes of a key win, tables are kept apart.
    #[test]
    fn writes_survive_reopening() {
        let dir = scratch("reopen");
        let (store, records) = Store::open(&dir).unwrap();
        assert!(records.is_empty(), "a fresh dir has no records");
        store
            .write(&[
                change(Table::Meta, 0, Some("m")),
                change(Table::Agents, 1, Some("a1")),
                change(Table::Jobs, 1, Some("j1")),
                change(Table::Jobs, 2, Some("j2")),
            ])
            .unwrap();
        store
            .write(&[
                change(Table::Jobs, 1, Some("j1 again")),
                change(Table::Jobs, 2, None),
            ])
            .unwrap();
        drop(store);
        let (_store, records) = Store::open(&dir).unwrap();
        let got: Vec<(Table, u64, String)> = records
            .into_iter()
            .map(|r| (r.table, r.key, String::from_utf8(r.value).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Table::Meta, 0, "m".to_string()),
                (Table::Agents, 1, "a1".to_string()),
                (Table::Jobs, 1, "j1 again".to_string()),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Goal: the committer answers a waiter only once its batch is on disk, and a batch with
    // nothing appended costs no wait.
    #[tokio::test]
    async fn group_commit_acknowledges_after_the_write() {
        let dir = scratch("group");
        let (store, _) = Store::open(&dir).unwrap();
        let committer = Committer::start(store);
        assert_eq!(
            committer.append(std::iter::empty()),
            0,
            "nothing to wait for"
        );
        let upto = committer.append([change(Table::Jobs, 7, Some("j7"))].into_iter());
        assert_eq!(upto, 1);
        committer.durable(upto).await.unwrap();
        committer.stop();
        let (_, records) = Store::open(&dir).unwrap();
        assert_eq!(records.len(), 1, "committed before the waiter was answered");
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Goal: a directory that cannot be created is refused with its path.
    #[test]
    fn unusable_dir_is_named() {
        let file = scratch("file");
        std::fs::write(&file, b"not a dir").unwrap();
        let err = Store::open(&file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("fleetsim-store-file"), "{err}");
        let _ = std::fs::remove_file(&file);
    }
}
