//! sled's I/O thread pool (vendored and patched, see `vendor/sled/PATCHES.md`) runs
//! every task it is given, even while all of its threads are blocked. sled depends on
//! it: its segment accountant waits, holding its lock, for a file truncation it queued
//! on the pool, while the pool's threads wait for that lock to write the log. Before the
//! patch, such a task stayed queued and the database hung.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[test]
fn a_task_queued_while_every_thread_is_blocked_still_runs() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    // More blocked tasks than the pool keeps idle threads (two).
    for _ in 0..6 {
        let gate = gate.clone();
        sled::__spawn_on_io_pool(move || {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        })
        .unwrap();
    }
    let (ran, done) = mpsc::channel();
    let releaser = gate.clone();
    sled::__spawn_on_io_pool(move || {
        let (open, cv) = &*releaser;
        *open.lock().unwrap() = true;
        cv.notify_all();
        ran.send(()).unwrap();
    })
    .unwrap();
    done.recv_timeout(Duration::from_secs(20))
        .expect("the task that unblocks the others never ran: the pool did not grow");
}
