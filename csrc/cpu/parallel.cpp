// csrc/cpu/parallel.cpp -- the worker pool behind run_chunks (see parallel.h).
//
// Compiled once (not per instruction set): nothing here is vector code.
//
// One job at a time: a call that finds the pool busy (another Python thread's call, the GIL being
// released) runs its chunks on its own thread. A job is published in `state_`, one 64-bit word
// holding the job's generation (high 32 bits) and the next chunk to claim (low 32 bits); a chunk
// is claimed by a compare-and-swap on that word, so a claim can only succeed for the generation
// the claimer read, and only while that job still has unclaimed chunks. Between jobs the index is
// kIdle, so a worker that wakes late (or was descheduled between reading the job and claiming)
// finds nothing to claim and never touches a finished call's data: the job's fields are written
// only after kIdle is stored, with release/acquire, so reading a newer field means that the
// claim's compare-and-swap fails. The caller returns when every claimed chunk has reported done.
//
// Waiting: an idle worker polls for the next job for a short time measured on the steady clock
// (idle_spin_us, 200 us by default), then sleeps on a condition variable; the caller never waits
// for a worker to wake (it starts on the chunks itself), only for chunks a worker has claimed: it
// polls for about a chunk's time (kBlockAfterUs), then blocks on a condition variable that the
// worker finishing the job's last chunk signals (see run). If that wait shows a stall (a claimed
// chunk not done after kStallNs: its worker was descheduled), the next calls run on the calling
// thread alone for a back-off time. set_pool_waits (parallel.h) changes the waits at run time,
// and can send the chunks to the OpenMP runtime's threads instead (run_on_openmp, which hands
// each thread a contiguous slice of chunks first: split_mode).
// The pool is not OpenMP's (OMP_WAIT_POLICY and GOMP_SPINCOUNT do not apply); its idle spin is
// fusedopt.set_pool_spin (FUSEDOPT_POOL_SPIN_US, read by fusedopt/__init__.py at import); the
// thread count is OpenMP's setting (omp_get_max_threads: OMP_NUM_THREADS,
// fusedopt.set_num_threads; one libgomp serves fusedopt and torch in one process, so the
// setting is torch's too).
//
// fork(): the child gets a fresh, empty pool (the parent's workers do not exist there; the old
// pool is left allocated, untouched). Exit: workers are detached and the pool is never destroyed,
// so interpreter shutdown neither joins nor frees anything a worker may still use.
#include "parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedopt {
namespace cpu {
namespace {

using Fn = void (*)(void*, int64_t);

constexpr uint64_t kIdle = 0xffffffffu;  // chunk index of the state between jobs
// An idle worker polls for the next job with the CPU's pause instruction for idle_spin_us
// (kDefaultIdleSpinUs, parallel.h), reading the steady clock every kClockEvery polls (the pause
// takes 10-150 cycles depending on the core, so a count of polls is no measure of time), so that
// back-to-back calls find it awake; then it sleeps. It used to poll 200000 times (2.2 ms on this
// project's Xeon VM, about 4 ms on a Zen 4 core; libgomp's order): in a torch training loop
// the two workers' spin after our step took the cores from torch's forward pass and fused step
// (torch's Adam right after ours 7.83 ms, alone 6.36 ms; bench/torch_interleave.py).
// (Yielding between polls, tried first, left the worker asleep or behind other spinning threads:
// the 2-thread step at 1e5 ran no faster than 1 thread, and 1 busy process cost 1e6 a third
// more.) The caller, once every chunk is claimed, polls kWaitSpin times, then reads the clock
// between polls until kBlockAfterUs have passed, then blocks (run).
constexpr int kClockEvery = 16;
constexpr int kWaitSpin = 64;
// Stall detection and back-off (Pool::note_wait).
// A stall is a wait of 20 ms or more: a descheduled worker under heavy load. Shorter waits are
// left alone: another library's threads spinning in the same process (torch's OpenMP pool after
// its own step) delay a worker by a millisecond or two, and a 1 ms threshold sent every step to
// one thread there (Adam at 1e7 interleaved with torch's fused Adam: 10.8 ms instead of 5.7).
constexpr int64_t kStallNs = 20000000;         // 20 ms
constexpr int64_t kBackoffMinNs = 10000000;    // 10 ms
constexpr int64_t kBackoffMaxNs = 1000000000;  // 1 s
constexpr int64_t kBackoffResetNs = 10000000000;  // 10 s

// The waits of set_pool_waits (parallel.h), read once per job / per idle period. A chunk takes
// 20-100 us: a caller still waiting after 100 us waits for a worker that is not running.
constexpr int kBlockAfterUs = 100;
std::atomic<int> g_idle_spin_us{kDefaultIdleSpinUs};
std::atomic<int> g_block_after_us{kBlockAfterUs};
std::atomic<int> g_threading{kAuto};
thread_local bool t_torch_caller = false;
std::atomic<int> g_split{kRanges};  // split_mode (parallel.h)
std::atomic<int64_t> g_openmp_regions{0};  // calls run on OpenMP's threads (openmp_regions)

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

inline uint32_t generation(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
inline uint64_t index_of(uint64_t s) { return s & 0xffffffffu; }

class Pool {
  public:
    // Runs the job on this thread and the workers; false (nothing run) when the pool is busy or
    // backing off after a stall.
    bool run(int64_t nchunks, int threads, Fn fn, void* ctx) {
        if (now_ns() < serial_until_.load(std::memory_order_relaxed)) return false;
        std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
        if (!job.owns_lock()) return false;
        const int workers = spawn(threads - 1);
        if (workers == 0) return false;
        const uint32_t gen = generation(state_.load(std::memory_order_relaxed)) + 1;
        fn_.store(fn, std::memory_order_release);
        ctx_.store(ctx, std::memory_order_release);
        nchunks_.store(nchunks, std::memory_order_release);
        wanted_.store(workers, std::memory_order_release);
        done_.store(0, std::memory_order_relaxed);
        state_.store(uint64_t(gen) << 32, std::memory_order_seq_cst);
        if (sleepers_.load(std::memory_order_seq_cst) > 0) {
            { std::lock_guard<std::mutex> lock(sleep_mutex_); }
            wake_.notify_all();
        }
        drain(gen);
        // Every chunk is claimed; wait for those that workers are still running: poll for up
        // to block_after (a chunk's time), then block. Blocking leaves this core idle, and the
        // scheduler may move the worker that holds the chunk here when it was descheduled behind
        // another thread on its own core (torch's OpenMP workers spinning after torch's parallel
        // region); yielding instead keeps this thread runnable, and the worker waits for its own
        // core.
        const int block_us = g_block_after_us.load(std::memory_order_relaxed);
        const int64_t block_after = block_us < 0 ? INT64_MAX : int64_t(block_us) * 1000;
        int64_t waiting_since = 0;
        for (int spin = 0; done_.load(std::memory_order_acquire) < nchunks; ++spin) {
            if (spin < kWaitSpin) {
                cpu_relax();
                continue;
            }
            if (!waiting_since) waiting_since = now_ns();
            const int64_t waited = now_ns() - waiting_since;
            if (waited < block_after) {
                if (block_us < 0) std::this_thread::yield();
                else cpu_relax();
                continue;
            }
            waiter_.store(1, std::memory_order_seq_cst);
            if (done_.load(std::memory_order_seq_cst) < nchunks) {
                std::unique_lock<std::mutex> lock(done_mutex_);
                done_cv_.wait_for(lock, std::chrono::microseconds(500), [&] {
                    return done_.load(std::memory_order_acquire) >= nchunks;
                });
            }
            waiter_.store(0, std::memory_order_relaxed);
        }
        state_.store((uint64_t(gen) << 32) | kIdle, std::memory_order_seq_cst);
        if (waiting_since) note_wait(now_ns() - waiting_since);
        return true;
    }

  private:
    static int64_t now_ns() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    // A wait of kStallNs or more for a claimed chunk means that its worker was descheduled
    // (a chunk takes 0.1 ms or less): the next calls run on the calling thread alone for a
    // back-off time that doubles with each stall (kBackoffMinNs to kBackoffMaxNs) and returns to
    // the minimum once no stall has been seen for kBackoffResetNs. Called with job_mutex_ held.
    void note_wait(int64_t waited) {
        if (waited < kStallNs) return;
        const int64_t now = now_ns();
        if (now - last_stall_ > kBackoffResetNs) backoff_ = kBackoffMinNs;
        else backoff_ = std::min(2 * backoff_, kBackoffMaxNs);
        last_stall_ = now;
        serial_until_.store(now + backoff_, std::memory_order_relaxed);
    }

    // Makes sure that `n` workers exist (fewer if the system refuses threads); returns how many.
    // Called with job_mutex_ held.
    int spawn(int n) {
        while (count_ < n) {
            try {
                std::thread([this, id = count_] { work(id); }).detach();
            } catch (...) {
                break;
            }
            ++count_;
        }
        return std::min(n, count_);
    }

    // Claims and runs chunks of generation gen while any is left. The job's fields are read
    // once, after a state of generation gen was seen: every claim is a compare-and-swap that
    // succeeds only while the state still is of generation gen (not idle), and the fields of a
    // later job are written only after gen's idle state is stored, so a claim that succeeds
    // runs gen's function on gen's data. (Reading them once keeps the claims from fetching the
    // job's cache line again after every claim of the other threads.)
    void drain(uint32_t gen) {
        uint64_t s = state_.load(std::memory_order_acquire);
        if (generation(s) != gen || index_of(s) == kIdle) return;
        const Fn fn = fn_.load(std::memory_order_acquire);
        void* const ctx = ctx_.load(std::memory_order_acquire);
        const int64_t n = nchunks_.load(std::memory_order_acquire);
        for (;;) {
            if (generation(s) != gen || index_of(s) == kIdle) return;
            const int64_t k = static_cast<int64_t>(index_of(s));
            if (k >= n) return;
            if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                fn(ctx, k);
                if (done_.fetch_add(1, std::memory_order_seq_cst) + 1 == n &&
                    waiter_.load(std::memory_order_seq_cst)) {
                    { std::lock_guard<std::mutex> lock(done_mutex_); }
                    done_cv_.notify_one();
                }
                s = state_.load(std::memory_order_acquire);
            }
        }
    }

    // Returns the state once its generation differs from `seen`: polls for idle_spin_us, then
    // sleeps.
    uint64_t next_job(uint32_t seen) {
        const int64_t spin_ns = int64_t(g_idle_spin_us.load(std::memory_order_relaxed)) * 1000;
        if (spin_ns > 0) {
            const int64_t until = now_ns() + spin_ns;
            for (int spin = 1;; ++spin) {
                const uint64_t s = state_.load(std::memory_order_acquire);
                if (generation(s) != seen) return s;
                cpu_relax();
                if (spin % kClockEvery == 0 && now_ns() >= until) break;
            }
        }
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        uint64_t s;
        while (generation(s = state_.load(std::memory_order_seq_cst)) == seen) wake_.wait(lock);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        return s;
    }

    void work(int id) {
        uint32_t seen = generation(state_.load(std::memory_order_acquire));
        for (;;) {
            seen = generation(next_job(seen));
            if (id < wanted_.load(std::memory_order_acquire)) drain(seen);
        }
    }

    std::mutex job_mutex_;  // held by the caller of the running job
    int count_ = 0;         // workers started (under job_mutex_)
    // Stall back-off (see note_wait): calls before serial_until_ (steady clock, ns) run serially.
    std::atomic<int64_t> serial_until_{0};
    int64_t backoff_ = kBackoffMinNs;  // under job_mutex_
    int64_t last_stall_ = 0;           // under job_mutex_
    // Generation << 32 | next chunk to claim (kIdle between jobs). The claim word, the job's
    // fields (read once per job) and the done count each have a cache line of their own: every
    // claim and every finished chunk writes a line that the other threads then fetch again.
    alignas(64) std::atomic<uint64_t> state_{kIdle};
    // The running job, written before its state is published.
    alignas(64) std::atomic<Fn> fn_{nullptr};
    std::atomic<void*> ctx_{nullptr};
    std::atomic<int64_t> nchunks_{0};
    std::atomic<int> wanted_{0};     // workers with a smaller id take part
    alignas(64) std::atomic<int64_t> done_{0};   // chunks of the running job that have finished
    // The caller blocked on its job's last chunks (see run).
    alignas(64) std::atomic<int> waiter_{0};
    std::mutex done_mutex_;
    std::condition_variable done_cv_;
    std::mutex sleep_mutex_;
    std::condition_variable wake_;
    std::atomic<int> sleepers_{0};
};

std::atomic<Pool*> the_pool{nullptr};

void forget_pool_in_child() { the_pool.store(nullptr, std::memory_order_relaxed); }

Pool& pool() {
    Pool* p = the_pool.load(std::memory_order_acquire);
    if (p) return *p;
    static const bool registered = (pthread_atfork(nullptr, nullptr, forget_pool_in_child), true);
    (void)registered;
    Pool* fresh = new Pool();
    if (the_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread installed one first (it has no workers yet)
    return *p;
}

}  // namespace

int threads_for(int64_t work) {
#ifdef _OPENMP
    if (work < kSerialCutoff) return 1;
    const int64_t most = std::max<int64_t>(1, work / (kSerialCutoff / 2));
    return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), most));
#else
    (void)work;
    return 1;
#endif
}

PoolWaits pool_waits() {
    return {g_idle_spin_us.load(std::memory_order_relaxed),
            g_block_after_us.load(std::memory_order_relaxed),
            g_threading.load(std::memory_order_relaxed)};
}

void set_idle_spin_us(int us) { g_idle_spin_us.store(std::max(0, us), std::memory_order_relaxed); }

void set_threading(int mode) { g_threading.store(mode, std::memory_order_relaxed); }

void set_pool_waits(PoolWaits w) {
    set_idle_spin_us(w.idle_spin_us);
    g_block_after_us.store(std::max(-1, w.block_after_us), std::memory_order_relaxed);
    set_threading(w.threading);
}

#ifdef _OPENMP
// The chunks on the OpenMP runtime's threads (PoolWaits::threading): each thread of one parallel
// region claims chunks one at a time from a counter, as the pool's threads do, so a descheduled
// thread holds at most one. split_mode (parallel.h) says which counters: kClaim, one slice of
// all the chunks that every thread claims from; kRanges, one contiguous slice per thread, its
// own claimed first, then the others' from the next thread's on. Results never depend on it.
// Not from inside another parallel region (nested regions would run on one thread each anyway):
// false there, and the caller runs its chunks itself.
bool run_on_openmp(int64_t nchunks, int threads, Fn fn, void* ctx) {
    if (omp_in_parallel()) return false;
    g_openmp_regions.fetch_add(1, std::memory_order_relaxed);
    // One claim counter per slice, each on a cache line of its own.
    struct alignas(64) Slice {
        std::atomic<int64_t> next;
        int64_t end;
    };
    const int nslices = g_split.load(std::memory_order_relaxed) == kRanges ? threads : 1;
    std::unique_ptr<Slice[]> slices(new Slice[static_cast<size_t>(nslices)]);
    for (int t = 0; t < nslices; ++t) {
        slices[t].next.store(nchunks * t / nslices, std::memory_order_relaxed);
        slices[t].end = nchunks * (t + 1) / nslices;
    }
#pragma omp parallel num_threads(threads)
    {
        // (A region may get fewer threads than asked: the slices of the missing ones are taken
        // by the others' later passes.)
        const int me = omp_get_thread_num() % nslices;
        for (int j = 0; j < nslices; ++j) {
            Slice& s = slices[(me + j) % nslices];
            for (int64_t k; (k = s.next.fetch_add(1, std::memory_order_relaxed)) < s.end;)
                fn(ctx, k);
        }
    }
    return true;
}
#endif

int split_mode() { return g_split.load(std::memory_order_relaxed); }

void set_split_mode(int mode) { g_split.store(mode, std::memory_order_relaxed); }

int64_t openmp_regions() { return g_openmp_regions.load(std::memory_order_relaxed); }

bool set_torch_caller(bool on) {
    const bool old = t_torch_caller;
    t_torch_caller = on;
    return old;
}

void run_chunks(int64_t nchunks, int threads, Fn fn, void* ctx) {
    if (threads > 1 && nchunks > 1 && uint64_t(nchunks) < kIdle) {
#ifdef _OPENMP
        const int mode = g_threading.load(std::memory_order_relaxed);
        if ((mode == kOpenMP || (mode == kAuto && t_torch_caller)) &&
            run_on_openmp(nchunks, threads, fn, ctx))
            return;
#endif
        if (pool().run(nchunks, threads, fn, ctx)) return;
    }
    for (int64_t k = 0; k < nchunks; ++k) fn(ctx, k);
}

}  // namespace cpu
}  // namespace fusedopt
