//! Group commit: many threads append, one writer commits them together.
//!
//! Each caller blocks until its entry is durable, exactly as with [`Log::append`], but
//! the entries that arrive while a commit is in flight share the next commit (one fsync,
//! one signed checkpoint). Throughput then grows with the number of concurrent callers
//! instead of being one fsync per entry.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{AuditError, Log, LogKey, NewEntry, Receipt};

type Reply = mpsc::SyncSender<Result<Receipt, AuditError>>;

/// The writer thread and its queue.
#[derive(Debug)]
pub struct GroupAppender {
    tx: Option<mpsc::Sender<(NewEntry, Reply)>>,
    writer: Option<JoinHandle<Log>>,
}

/// A cheap, cloneable way to append through a [`GroupAppender`].
#[derive(Debug, Clone)]
pub struct Appender {
    tx: mpsc::Sender<(NewEntry, Reply)>,
}

impl GroupAppender {
    /// Starts the writer; it commits at most `max_batch` entries at a time.
    #[must_use]
    pub fn spawn(mut log: Log, key: LogKey, max_batch: usize) -> GroupAppender {
        let (tx, rx) = mpsc::channel::<(NewEntry, Reply)>();
        let max_batch = max_batch.max(1);
        let writer = std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let entries: Vec<NewEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
                match log.append_batch(&key, &entries) {
                    Ok(receipts) => {
                        for ((_, reply), r) in batch.into_iter().zip(receipts) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    // One bad entry must not sink the others: append them one by one,
                    // so each caller gets its own answer.
                    Err(_) => {
                        for (e, reply) in batch {
                            let _ = reply.send(log.append(&key, &e));
                        }
                    }
                }
            }
            log
        });
        GroupAppender {
            tx: Some(tx),
            writer: Some(writer),
        }
    }

    /// A handle for one caller (or thread).
    ///
    /// # Panics
    /// Never: the queue lives as long as `self`.
    #[must_use]
    pub fn appender(&self) -> Appender {
        Appender {
            tx: self
                .tx
                .clone()
                .expect("the queue lives as long as the appender"),
        }
    }

    /// Stops accepting entries, waits for the writer to commit what it has, and gives
    /// the log back. Handles still alive keep the writer running until they are dropped.
    ///
    /// # Errors
    /// When the writer thread panicked.
    pub fn finish(mut self) -> Result<Log, AuditError> {
        drop(self.tx.take());
        self.writer
            .take()
            .map(JoinHandle::join)
            .and_then(Result::ok)
            .ok_or_else(|| AuditError::Corrupt("the audit writer thread stopped".to_owned()))
    }
}

impl Appender {
    /// Appends one entry; returns once it is durable.
    ///
    /// # Errors
    /// As [`Log::append`]; or when the writer has stopped.
    pub fn append(&self, entry: NewEntry) -> Result<Receipt, AuditError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send((entry, reply))
            .map_err(|_| AuditError::Corrupt("the audit writer has stopped".to_owned()))?;
        answer
            .recv()
            .map_err(|_| AuditError::Corrupt("the audit writer has stopped".to_owned()))?
    }
}
