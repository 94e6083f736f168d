//! Passing a duty on before a thread blocks.
//!
//! The stdio transport runs a call on the thread that read it, with no hand-off
//! between threads, while that thread is still the one reading stdin. Code about to
//! wait for something that may take long (the client's answer, the audit log's flush,
//! a cancellation a long call checks for) calls [`before_wait`] first, which gives the
//! reading to another thread. On any other thread it does nothing.

use std::cell::Cell;
use std::mem;
use std::sync::Arc;

/// A duty the current thread holds for others and gives up before it waits.
pub trait Duty: Send + Sync {
    /// Gives the duty to another thread.
    fn pass(&self);
}

thread_local! {
    static HELD: Cell<Option<Arc<dyn Duty>>> = const { Cell::new(None) };
}

/// Runs `f` holding `duty`; returns what `f` returned and whether the duty is still
/// held, that is whether `f` never called [`before_wait`]. A panic out of `f` passes
/// the duty on.
pub fn holding<T>(duty: Arc<dyn Duty>, f: impl FnOnce() -> T) -> (T, bool) {
    struct PassOnUnwind;
    impl Drop for PassOnUnwind {
        fn drop(&mut self) {
            before_wait();
        }
    }
    let outer = HELD.replace(Some(duty));
    debug_assert!(outer.is_none(), "a duty is already held on this thread");
    let guard = PassOnUnwind;
    let out = f();
    mem::forget(guard);
    let held = HELD.take().is_some();
    (out, held)
}

/// Passes on the duty the current thread holds, if any: call before blocking.
pub fn before_wait() {
    if let Some(duty) = HELD.take() {
        duty.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Duty for Count {
        fn pass(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_duty_is_passed_once_and_only_by_a_wait_while_held() {
        let duty = Arc::new(Count::default());
        before_wait();
        let (v, held) = holding(duty.clone(), || 7);
        assert_eq!((v, held), (7, true));
        assert_eq!(duty.0.load(Ordering::SeqCst), 0);

        let ((), held) = holding(duty.clone(), || {
            before_wait();
            before_wait();
        });
        assert!(!held);
        assert_eq!(duty.0.load(Ordering::SeqCst), 1);
        before_wait();
        assert_eq!(
            duty.0.load(Ordering::SeqCst),
            1,
            "passed after it was given back"
        );
    }

    #[test]
    fn a_panic_passes_the_duty_on() {
        let duty = Arc::new(Count::default());
        let d = duty.clone();
        let r = std::panic::catch_unwind(move || holding(d, || panic!("boom")));
        assert!(r.is_err());
        assert_eq!(duty.0.load(Ordering::SeqCst), 1);
        let (_, held) = holding(duty.clone(), || ());
        assert!(held, "nothing of the first duty left on the thread");
    }
}
