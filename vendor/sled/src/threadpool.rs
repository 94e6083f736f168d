//! A simple adaptive threadpool that returns a oneshot future.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

use crate::{
    debug_delay, warn, Acquire, AtomicUsize, Error, Lazy, OneShot, Result,
    SeqCst,
};

// This is lower for CI reasons.
#[cfg(windows)]
const MAX_THREADS: usize = 16;

#[cfg(not(windows))]
const MAX_THREADS: usize = 128;

const DESIRED_WAITING_THREADS: usize = 2;

static WAITING_THREAD_COUNT: AtomicUsize = AtomicUsize::new(0);
static TOTAL_THREAD_COUNT: AtomicUsize = AtomicUsize::new(0);
static SPAWNS: AtomicUsize = AtomicUsize::new(0);
/// Threads spawned that have not yet looked at the queue.
static STARTING: AtomicUsize = AtomicUsize::new(0);

type Work = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    cv: Condvar,
    mu: Mutex<VecDeque<Work>>,
}

impl Queue {
    fn recv_timeout(&self, duration: Duration) -> Option<Work> {
        let mut queue = self.mu.lock();

        let cutoff = Instant::now() + duration;

        while queue.is_empty() {
            WAITING_THREAD_COUNT.fetch_add(1, SeqCst);
            let res = self.cv.wait_until(&mut queue, cutoff);
            WAITING_THREAD_COUNT.fetch_sub(1, SeqCst);
            if res.timed_out() {
                break;
            }
        }

        queue.pop_front()
    }

    fn try_recv(&self) -> Option<Work> {
        let mut queue = self.mu.lock();
        queue.pop_front()
    }

    fn send(&self, work: Work) -> usize {
        let mut queue = self.mu.lock();
        queue.push_back(work);

        let len = queue.len();

        // having held the mutex makes this linearized
        // with the notify below.
        drop(queue);

        // mreg patch: one task wakes one thread. notify_all woke all seven idle I/O
        // threads for every flush; six went back to sleep.
        self.cv.notify_one();

        len
    }
}

static QUEUE: Lazy<Queue, fn() -> Queue> = Lazy::new(init_queue);
static BROKEN: AtomicBool = AtomicBool::new(false);

// mreg patch: the queue is created first and its threads are started once it exists.
// Started from inside the queue's lazy initializer, each new thread waited for the
// initializer to finish by spinning, taking the CPU from it on a two-core host
// (3-10 ms of every start-up).
fn init_queue() -> Queue {
    Queue { cv: Condvar::new(), mu: Mutex::new(VecDeque::new()) }
}

fn start_threads() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        for _ in 0..DESIRED_WAITING_THREADS {
            debug_delay();
            if let Err(e) = spawn_new_thread(true) {
                log::error!("failed to initialize threadpool: {:?}", e);
            }
        }
    });
}

fn perform_work(is_immortal: bool) {
    let wait_limit = Duration::from_secs(1);

    let mut performed = 0;
    let mut contiguous_overshoots = 0;

    while is_immortal || performed < 5 || contiguous_overshoots < 3 {
        debug_delay();
        let task_res = QUEUE.recv_timeout(wait_limit);

        // mreg patch: a thread counts as waiting only while it waits in
        // `recv_timeout`. Upstream also subtracted one per running task, so the
        // count wrapped below zero whenever more threads ran tasks than waited,
        // and the pool stopped growing exactly when it had to.
        if let Some(task) = task_res {
            (task)();
            performed += 1;
        }

        while let Some(task) = QUEUE.try_recv() {
            debug_delay();
            (task)();
            performed += 1;
        }

        debug_delay();

        // mreg patch: `>=`, as this thread is not among the waiting ones here: with
        // `>` (written for upstream's count) a third idle thread never left.
        let waiting = WAITING_THREAD_COUNT.load(Acquire);

        if waiting >= DESIRED_WAITING_THREADS {
            contiguous_overshoots += 1;
        } else {
            contiguous_overshoots = 0;
        }
    }
}

// Create up to MAX_THREADS dynamic blocking task worker threads.
// Dynamic threads will terminate themselves if they don't
// receive any work after one second.
//
// mreg patch: a thread is started whenever the queued tasks outnumber the
// threads waiting for work plus those being started. Upstream started one only
// when more than `DESIRED_WAITING_THREADS` tasks were queued, so a task queued
// while every thread was blocked stayed queued: sled's segment accountant waits,
// holding its lock, for a file truncation it queued here, while the pool's
// threads wait for that lock to write the log (a hang seen with three threads
// and bursts of small batches).
fn maybe_spawn_new_thread(depth: usize) -> Result<()> {
    debug_delay();
    let total_workers = TOTAL_THREAD_COUNT.load(Acquire);
    debug_delay();
    let available = WAITING_THREAD_COUNT.load(Acquire) + STARTING.load(Acquire);

    if available >= depth || total_workers >= MAX_THREADS {
        return Ok(());
    }

    spawn_new_thread(false)
}

fn spawn_new_thread(is_immortal: bool) -> Result<()> {
    if BROKEN.load(Relaxed) {
        return Err(Error::ReportableBug(
            "IO thread unexpectedly panicked. please report \
            this bug on the sled github repo."
                .to_string(),
        ));
    }

    let spawn_id = SPAWNS.fetch_add(1, SeqCst);

    TOTAL_THREAD_COUNT.fetch_add(1, SeqCst);
    STARTING.fetch_add(1, SeqCst);
    let spawn_res = thread::Builder::new()
        .name(format!("sled-io-{}", spawn_id))
        .spawn(move || {
            STARTING.fetch_sub(1, SeqCst);
            debug_delay();
            let res = std::panic::catch_unwind(|| perform_work(is_immortal));
            TOTAL_THREAD_COUNT.fetch_sub(1, SeqCst);
            if is_immortal || res.is_err() {
                // IO thread panicked, shut down the system
                log::error!(
                    "IO thread unexpectedly terminated.
                    please report this error at the sled github repo. {:?}",
                    res
                );
                BROKEN.store(true, SeqCst);
            }
        });

    if let Err(e) = spawn_res {
        static E: AtomicBool = AtomicBool::new(false);

        STARTING.fetch_sub(1, SeqCst);
        TOTAL_THREAD_COUNT.fetch_sub(1, SeqCst);

        if !E.compare_and_swap(false, true, Relaxed) {
            // only execute this once
            warn!(
                "Failed to dynamically increase the threadpool size: {:?}.",
                e,
            )
        }
    }

    Ok(())
}

/// Spawn a function on the threadpool.
pub fn spawn<F, R>(work: F) -> Result<OneShot<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static + Sized,
{
    let (promise_filler, promise) = OneShot::pair();
    let task = move || {
        let result = (work)();
        promise_filler.fill(result);
    };

    let depth = QUEUE.send(Box::new(task));
    start_threads();
    maybe_spawn_new_thread(depth)?;

    Ok(promise)
}
