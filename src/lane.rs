//! Which serving lane the current thread is (`server/accept.rs`): a lane serves its
//! connections whole on one thread, and what they use that holds tasks of its own (the
//! upstream client's pooled connections) is kept per lane, so that a request never waits on
//! another thread's runtime.

use std::cell::Cell;

/// Lanes beyond this many share what the threads outside the lanes use.
pub const MAX_LANES: usize = 64;

thread_local! {
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as lane `index`, for as long as it lives.
pub fn enter(index: usize) {
    LANE.with(|lane| lane.set(Some(index)));
}

/// This thread's lane, if it is one.
pub fn current() -> Option<usize> {
    LANE.with(Cell::get)
}
