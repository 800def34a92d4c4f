// isa.cpp — picks the kernel table once from CPUID (and the OS's saved register state) on x86;
// on aarch64 the NEON table (AdvSIMD is part of every ARMv8-A core). The environment override
// FASTRNN_ISA=scalar|avx2|avx512|neon and set_isa() choose another one, for tests.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fastrnn.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace fastrnn {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
unsigned long long xgetbv0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((unsigned long long)edx << 32) | eax;
}

bool cpu_has_avx2() {
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (!(fma && osxsave && avx)) return false;
  if ((xgetbv0() & 0x6) != 0x6) return false;  // XMM and YMM state enabled by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return b & (1u << 5);
}

bool cpu_has_avx512() {
  if (!cpu_has_avx2()) return false;
  unsigned int a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  if (!(f && dq && bw && vl)) return false;
  return (xgetbv0() & 0xE6) == 0xE6;  // opmask and ZMM state enabled by the OS
}
#else
[[maybe_unused]] bool cpu_has_avx2() { return false; }
[[maybe_unused]] bool cpu_has_avx512() { return false; }
#endif

const KernelTable* table_for(const std::string& name) {
  if (name == "scalar") return &kernels_scalar();
#if defined(FASTRNN_BUILD_AVX2)
  if (name == "avx2" && cpu_has_avx2()) return &kernels_avx2();
#endif
#if defined(FASTRNN_BUILD_AVX512)
  if (name == "avx512" && cpu_has_avx512()) return &kernels_avx512();
#endif
#if defined(FASTRNN_BUILD_NEON)
  if (name == "neon") return &kernels_neon();  // built only for aarch64, where AdvSIMD is baseline
#endif
  return nullptr;
}

// Every path's name, narrowest first (the order of available_isas()).
constexpr const char* kIsaNames[] = {"scalar", "avx2", "avx512", "neon"};

const KernelTable* best_table() {
  for (const char* n : {"avx512", "avx2", "neon", "scalar"})
    if (const KernelTable* t = table_for(n)) return t;
  return &kernels_scalar();
}

const KernelTable* initial_table() {
  const char* env = std::getenv("FASTRNN_ISA");
  if (env && *env && std::string(env) != "auto") {
    if (const KernelTable* t = table_for(env)) return t;
    // An unsupported request falls back to the best path; get_isa() tells which one runs.
  }
  return best_table();
}

std::atomic<const KernelTable*> g_table{nullptr};

}  // namespace

const KernelTable& active_kernels() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    t = initial_table();
    g_table.store(t, std::memory_order_release);
  }
  return *t;
}

const char* active_isa() { return active_kernels().name; }

int isa_supported(const char* name) { return table_for(name) != nullptr; }

size_t scratch_bytes_all() {
  size_t n = 0;
  for (const char* name : kIsaNames)
    if (const KernelTable* t = table_for(name)) n += t->scratch_bytes();
  return n;
}

void release_scratch_all(int threads) {
  for (const char* name : kIsaNames)
    if (const KernelTable* t = table_for(name)) t->release_scratch(threads);
}

void set_isa(const char* name) {
  const std::string n(name);
  if (n == "auto") {
    g_table.store(best_table(), std::memory_order_release);
    return;
  }
  if (n != "scalar" && n != "avx2" && n != "avx512" && n != "neon")
    throw std::invalid_argument("isa: expected one of 'scalar', 'avx2', 'avx512', 'neon', 'auto', got '" + n +
                                "'");
  const KernelTable* t = table_for(n);
  if (!t) throw std::invalid_argument("isa: '" + n + "' is not supported by this CPU or this build");
  g_table.store(t, std::memory_order_release);
}

namespace {
std::atomic<bool> g_qvnni{true};
std::atomic<bool> g_bf16dot{true};
}  // namespace

bool qvnni_allowed() { return g_qvnni.load(std::memory_order_relaxed); }
void set_qvnni_allowed(bool allowed) { g_qvnni.store(allowed, std::memory_order_relaxed); }

bool bf16dot_allowed() { return g_bf16dot.load(std::memory_order_relaxed); }
void set_bf16dot_allowed(bool allowed) { g_bf16dot.store(allowed, std::memory_order_relaxed); }

}  // namespace fastrnn
