//! Background work that shutdown waits for. `tokio::spawn` is disallowed (clippy.toml) so that
//! every task has a shutdown story: it is spawned here and its handle goes to the server's list
//! (`app::Tasks`, awaited by `Server::shutdown` once the event bus has closed), or it is tracked
//! elsewhere (`AppState::stream_drains`), or its call site says why nothing needs to wait for it.

use std::future::Future;
use tokio::task::JoinHandle;

/// Spawns a task whose handle the caller returns to the server, so shutdown waits for it.
#[must_use = "return the handle to the server, or shutdown cannot wait for the task"]
#[allow(clippy::disallowed_methods, reason = "the one place owned tasks are spawned")]
pub fn owned<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task)
}
