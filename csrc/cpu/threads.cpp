// threads.cpp — the thread count the kernels use (default: the cores this process may run on).
#include <sched.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "fastrnn.h"

namespace fastrnn {
namespace {
int default_threads() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? (int)n : 1;
}
std::atomic<int> g_threads{0};
}  // namespace

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  // Never ask the OpenMP runtime for more than it allows: libgomp ends the process when it cannot
  // create a thread. The Python layer also refuses absurd counts with a ValueError.
  const int limit = std::max(1, omp_get_thread_limit());
  g_threads.store(std::min(std::max(n, 1), limit), std::memory_order_relaxed);
}

}  // namespace fastrnn
