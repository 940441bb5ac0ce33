//! Locking that survives a panic: a thread that panicked while holding a lock leaves data that
//! is still consistent for every use here (counters, lists, maps updated in one step), so the
//! next user takes the lock rather than propagating the poison into the request path.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poison.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
