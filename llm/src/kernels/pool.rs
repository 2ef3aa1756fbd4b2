//! A small team of spinning helper threads for the many tiny parallel loops of token generation.
//!
//! Generating one token runs about 250 matrix products of a few hundred microseconds each.
//! rayon's fork-join wakes sleeping workers for each of them (futex wake-ups and yields cost
//! microseconds each, and its workers go to sleep between products), so with two threads the
//! second one was idle much of the time. Here, as in ggml's thread pool, helpers spin on an
//! epoch counter for a while after each job (and sleep only after [`SPIN`] without work), tasks
//! are handed out with one atomic counter, and the caller works too.
//!
//! [`run`] sizes the team to the current rayon pool (`--threads`), so it replaces rayon's
//! fork-join inside `pool.install` without changing how many threads work. A team serves one
//! caller at a time; a second concurrent or nested caller falls back to rayon.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a helper spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_millis(3);

/// The job being run: a borrowed closure with its lifetime erased (see [`Team::run`]).
type JobRef = *const (dyn Fn(usize) + Sync);

fn noop(_: usize) {}
/// The job before the first one.
const NOOP: &(dyn Fn(usize) + Sync) = &noop;

struct Team {
    helpers: usize,
    /// Held by the caller running a job (one at a time).
    busy: AtomicBool,
    /// Bumped once per job; helpers wait for it to change.
    epoch: AtomicU64,
    job: UnsafeCell<JobRef>,
    tasks: AtomicUsize,
    next: AtomicUsize,
    /// Helpers that have not yet finished the current job.
    pending: AtomicUsize,
    /// Helpers asleep or about to sleep (they wait on `wake`).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by the caller holding `busy`, before it publishes the job with a
// release increment of `epoch`, and read by helpers only after an acquire load of that epoch and
// before they decrement `pending`; the caller does not return (and the closure stays alive)
// until `pending` is 0. Everything else is atomics and locks.
#[allow(unsafe_code)]
unsafe impl Sync for Team {}
#[allow(unsafe_code)]
unsafe impl Send for Team {}

/// Calls `f(i)` for every `i` in `0..tasks`, spread over as many threads as the current rayon
/// pool has (the caller included), and returns when all calls have returned. A panic in `f` is
/// resumed here after every thread has stopped using `f`.
pub fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = rayon::current_num_threads().max(1);
    if tasks <= 1 || threads == 1 {
        (0..tasks).for_each(f);
        return;
    }
    let team = team(threads - 1);
    if team
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        (0..tasks).into_par_iter().for_each(f);
        return;
    }
    /// Releases the team when the job ends, also by a panic resumed from a task.
    struct Release<'t>(&'t Team);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.busy.store(false, Ordering::Release);
        }
    }
    let _release = Release(&team);
    team.run(tasks, f);
}

/// The team with `helpers` helper threads, started on first use and kept for the process.
fn team(helpers: usize) -> Arc<Team> {
    static TEAMS: OnceLock<Mutex<Vec<Arc<Team>>>> = OnceLock::new();
    let mut teams = TEAMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(t) = teams.iter().find(|t| t.helpers == helpers) {
        return Arc::clone(t);
    }
    let team = Arc::new(Team::new(helpers));
    for i in 0..helpers {
        let t = Arc::clone(&team);
        std::thread::Builder::new()
            .name(format!("fedtune-spin-{i}"))
            .spawn(move || t.helper())
            .expect("spawn a kernel helper thread");
    }
    teams.push(Arc::clone(&team));
    team
}

impl Team {
    fn new(helpers: usize) -> Self {
        Self {
            helpers,
            busy: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(NOOP as JobRef),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        }
    }

    /// Runs one job; the caller holds `busy`.
    #[allow(unsafe_code)]
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        // SAFETY: only the holder of `busy` writes `job`, and no helper reads it now: every
        // helper decremented `pending` for the previous job before this caller's previous `run`
        // returned, and reads `job` again only after seeing the epoch bumped below. The
        // lifetime is erased, but `f` outlives every use: we wait for `pending == 0` below.
        unsafe {
            *self.job.get() = std::mem::transmute::<&(dyn Fn(usize) + Sync), JobRef>(f);
        }
        self.tasks.store(tasks, Ordering::Relaxed);
        self.next.store(0, Ordering::Relaxed);
        self.pending.store(self.helpers, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| self.work(f)));
        let mut spins = 0u32;
        while self.pending.load(Ordering::Acquire) != 0 {
            backoff(&mut spins);
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(p);
        }
    }

    /// Takes tasks of the current job until none are left.
    fn work(&self, f: &(dyn Fn(usize) + Sync)) {
        let tasks = self.tasks.load(Ordering::Relaxed);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                return;
            }
            f(i);
        }
    }

    /// A helper's life: wait for a new epoch, work on its job, report done; forever.
    #[allow(unsafe_code)]
    fn helper(&self) {
        // The epoch the team started at: the first job may be published before we get here.
        let mut seen = 0;
        loop {
            seen = self.wait(seen);
            // SAFETY: the epoch was bumped (acquire) after `job` was written, and the caller
            // keeps the closure alive until we decrement `pending` below.
            let f = unsafe { &**self.job.get() };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.work(f))) {
                *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            }
            self.pending.fetch_sub(1, Ordering::Release);
        }
    }

    /// Waits until the epoch differs from `seen` and returns it: spinning for [`SPIN`], then
    /// asleep on the condition variable.
    fn wait(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            backoff(&mut spins);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                break;
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One round of a busy wait: a CPU pause for the first rounds, then yielding the processor, so
/// that a waiter does not starve the thread it waits for when the machine has fewer free cores
/// than threads.
fn backoff(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if *spins < YIELD_AFTER {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Busy-wait rounds before [`backoff`] starts yielding (some tens of microseconds).
const YIELD_AFTER: u32 = 2_000;

/// `f(i, chunk)` for every `chunk`-long piece of `data` (the last may be shorter), in parallel
/// as [`run`] spreads tasks.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    let (len, chunk) = (data.len(), chunk.max(1));
    let base = SharedMut(data.as_mut_ptr());
    run(len.div_ceil(chunk), &|i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: task i alone gets elements start..end (disjoint from every other task's),
        // inside `data`, which is mutably borrowed until `run` returns.
        #[allow(unsafe_code)]
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        f(i, piece);
    });
}

/// A pointer that tasks writing disjoint elements share.
struct SharedMut<T>(*mut T);

impl<T> SharedMut<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only used by `for_each_chunk`, whose tasks touch disjoint elements of a slice of
// `Send` elements borrowed mutably for the whole call.
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for SharedMut<T> {}
