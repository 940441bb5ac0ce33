//! A small connection pool: idle connections in a vector behind a mutex, a new one opened when
//! none is idle. Handlers run on many worker threads at once, and neither a SQLite `Connection`
//! nor a PostgreSQL `Client` may be shared between threads, so each request borrows one.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::db::DbError;

/// A connection that can tell whether it is still worth keeping.
pub(crate) trait Reusable {
    /// Whether the connection is closed or otherwise unusable (it is then dropped, not reused).
    fn is_broken(&self) -> bool {
        false
    }
}

impl Reusable for rusqlite::Connection {}

impl Reusable for postgres::Client {
    fn is_broken(&self) -> bool {
        self.is_closed()
    }
}

/// Opens a new connection.
type Open<C> = Box<dyn Fn() -> Result<C, DbError> + Send + Sync>;

/// Idle connections, and how to open more.
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    max_idle: usize,
    open: Open<C>,
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.lock().len())
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl<C: Reusable> Pool<C> {
    /// A pool keeping at most `max_idle` connections between uses.
    pub(crate) fn new(
        max_idle: usize,
        open: impl Fn() -> Result<C, DbError> + Send + Sync + 'static,
    ) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            open: Box::new(open),
        }
    }

    /// An idle connection, or a new one.
    pub(crate) fn get(&self) -> Result<Pooled<'_, C>, DbError> {
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => (self.open)()?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
        })
    }

    /// Closes every idle connection.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

impl<C> Pool<C> {
    fn lock(&self) -> MutexGuard<'_, Vec<C>> {
        // A panic while the lock was held cannot leave the vector half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection borrowed from a [`Pool`]; goes back to it when dropped.
pub(crate) struct Pooled<'p, C: Reusable> {
    conn: Option<C>,
    pool: &'p Pool<C>,
}

impl<C: Reusable> Deref for Pooled<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.conn
            .as_ref()
            .expect("a pooled connection is there until dropped")
    }
}

impl<C: Reusable> DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("a pooled connection is there until dropped")
    }
}

impl<C: Reusable> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if conn.is_broken() {
            return;
        }
        let mut idle = self.pool.lock();
        if idle.len() < self.pool.max_idle {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Fake(bool);
    impl Reusable for Fake {
        fn is_broken(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn connections_are_reused_and_broken_ones_dropped() {
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&opened);
        let pool = Pool::new(2, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Fake(false))
        });
        drop(pool.get().unwrap());
        drop(pool.get().unwrap());
        assert_eq!(opened.load(Ordering::SeqCst), 1, "the idle one is reused");

        let (a, b, c) = (
            pool.get().unwrap(),
            pool.get().unwrap(),
            pool.get().unwrap(),
        );
        assert_eq!(opened.load(Ordering::SeqCst), 3);
        drop((a, b, c));
        assert_eq!(pool.lock().len(), 2, "at most max_idle stay");

        let mut broken = pool.get().unwrap();
        broken.0 = true;
        drop(broken);
        assert_eq!(pool.lock().len(), 1, "a broken connection is not kept");
    }
}
