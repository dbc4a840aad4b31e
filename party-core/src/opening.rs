//! The answer to the opening of an iterator or a subscription, which the driver opens as
//! soon as it is asked: a caller that stops waiting (a `select!` that took another branch,
//! a timeout, a future dropped unpolled) would otherwise leave it open, unseen, holding a
//! place among the leader's iterators and a snapshot of its store.

use tokio::sync::oneshot;

use crate::db::Db;
use crate::driver::{Command, WatchOpened};
use crate::error::Error;
use party_proto::IterId;

/// What an opening answers, and how to close it when nobody takes it.
pub(crate) trait Opened {
    fn close(self, db: &Db);
}

impl Opened for IterId {
    fn close(self, db: &Db) {
        let _ = db.send(Command::IterClose { iter: self });
    }
}

impl Opened for WatchOpened {
    fn close(self, db: &Db) {
        if let Ok((watch, _)) = self {
            let _ = db.send(Command::WatchClose { watch });
        }
    }
}

/// Waits for an opening's answer; dropped before it is taken, closes what the driver
/// opened. (The driver closes what it opens for a caller already gone.)
pub(crate) struct Opening<T: Opened> {
    answer: oneshot::Receiver<T>,
    db: Db,
}

impl<T: Opened> Opening<T> {
    pub fn new(answer: oneshot::Receiver<T>, db: Db) -> Self {
        Opening { answer, db }
    }

    pub async fn answer(&mut self) -> Result<T, Error> {
        (&mut self.answer).await.map_err(|_| Error::Closed)
    }
}

impl<T: Opened> Drop for Opening<T> {
    fn drop(&mut self) {
        // Closed first, so that the driver's answer either lands before (and is taken
        // here) or fails to send (and the driver closes what it opened).
        self.answer.close();
        if let Ok(opened) = self.answer.try_recv() {
            opened.close(&self.db);
        }
    }
}
