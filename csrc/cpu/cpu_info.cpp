// cpu_info.cpp — the data-cache sizes of the CPU the process runs on, for `fastrnn info`, the
// benchmark's machine line and the CPU GEMM's blocking (gemm_caches, cpu/blocking.h).
//
// Linux: /sys/devices/system/cpu/cpu0/cache/index*/ (level, type, size, shared_cpu_list), which
// the kernel fills from CPUID leaf 4 / 0x8000001D on x86 and from the device tree or ACPI PPTT on
// ARM; sysconf(_SC_LEVEL*_CACHE_SIZE) where sysfs is missing. macOS: sysctl hw.l1dcachesize /
// hw.l2cachesize / hw.l3cachesize. Unknown sizes are 0.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include <unistd.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif

#include "fastrnn.h"

namespace fastrnn {
namespace {

bool read_line(const std::string& path, std::string& out) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  char buf[256];
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!ok) return false;
  out.assign(buf);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return true;
}

// "48K", "1024K", "32M", "65536" -> bytes; 0 when unreadable.
int64_t parse_size(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || v < 0) return 0;
  if (*end == 'K' || *end == 'k') return (int64_t)v << 10;
  if (*end == 'M' || *end == 'm') return (int64_t)v << 20;
  if (*end == 'G' || *end == 'g') return (int64_t)v << 30;
  return (int64_t)v;
}

// "0-3,8,10-11" -> 7
int count_cpus(const std::string& list) {
  int n = 0;
  const char* p = list.c_str();
  while (*p) {
    char* end = nullptr;
    const long a = std::strtol(p, &end, 10);
    if (end == p) break;
    long b = a;
    p = end;
    if (*p == '-') {
      b = std::strtol(p + 1, &end, 10);
      p = end;
    }
    if (b >= a) n += (int)(b - a + 1);
    if (*p == ',') ++p;
  }
  return n;
}

// "32768,1048576,33554432[,2]": the sizes (suffixes K, M, G allowed) and the cores sharing the L3.
// Returns an error message, empty when the text is understood.
std::string parse_cache_override(const char* text, GemmCaches& out) {
  int64_t v[4] = {0, 0, 0, 0};
  int n = 0;
  const char* p = text;
  while (true) {
    const char* end = std::strchr(p, ',');
    const std::string field = end ? std::string(p, end) : std::string(p);
    if (n == 4) return "more than 4 fields";
    char* stop = nullptr;
    std::strtoll(field.c_str(), &stop, 10);
    const bool suffix_only = stop && (*stop == '\0' || ((*stop == 'K' || *stop == 'M' || *stop == 'G' ||
                                                           *stop == 'k' || *stop == 'm' || *stop == 'g') &&
                                                          stop[1] == '\0'));
    if (field.empty() || stop == field.c_str() || !suffix_only || field[0] == '-')
      return "field " + std::to_string(n + 1) + " ('" + field + "') is not a size in bytes";
    v[n++] = parse_size(field);
    if (!end) break;
    p = end + 1;
  }
  if (n < 3) return "expected l1d,l2,l3[,cores sharing the L3]";
  if (v[0] <= 0 || v[1] <= 0) return "l1d and l2 must be > 0";
  if (v[3] > 4096) return "cores sharing the L3 must be <= 4096";
  out.l1d = v[0];
  out.l2 = v[1];
  out.l3 = v[2];
  out.l3_cores = (int)v[3];
  return "";
}

// The caches of the machine, or FASTRNN_CACHE_SIZES's: read once.
struct CacheDefaults {
  GemmCaches caches{};
  std::string env_error;
  CacheDefaults() {
    const CacheInfo c = cache_info();
    caches.l1d = c.l1d;
    caches.l2 = c.l2;
    caches.l3 = c.l3;
    // cores sharing the L3: its logical CPUs over those of one core (the CPUs sharing the L1d)
    caches.l3_cores = c.l3_shared_by > 0 ? c.l3_shared_by / (c.l1d_shared_by > 0 ? c.l1d_shared_by : 1) : 0;
    caches.source = c.source;
    const char* env = std::getenv("FASTRNN_CACHE_SIZES");
    if (env && *env) {
      GemmCaches o{};
      env_error = parse_cache_override(env, o);
      if (env_error.empty()) {
        o.source = "FASTRNN_CACHE_SIZES";
        caches = o;
      } else {
        env_error = "FASTRNN_CACHE_SIZES='" + std::string(env) + "' ignored: " + env_error;
      }
    }
    caches.env_error = env_error.c_str();
  }
};

const CacheDefaults& cache_defaults() {
  static const CacheDefaults d;
  return d;
}

std::mutex g_caches_mutex;
bool g_caches_set = false;
GemmCaches g_caches_override{};

}  // namespace

GemmCaches gemm_caches() {
  const CacheDefaults& d = cache_defaults();
  std::lock_guard<std::mutex> lock(g_caches_mutex);
  return g_caches_set ? g_caches_override : d.caches;
}

void set_gemm_caches(int64_t l1d, int64_t l2, int64_t l3, int l3_cores) {
  if (l1d < 0 || l2 < 0 || l3 < 0 || l3_cores < 0)
    throw std::invalid_argument("set_gemm_caches: sizes and cores must be >= 0");
  const CacheDefaults& d = cache_defaults();
  std::lock_guard<std::mutex> lock(g_caches_mutex);
  g_caches_set = l1d || l2 || l3;
  g_caches_override = GemmCaches{l1d, l2, l3, l3_cores, "set_gemm_caches", d.env_error.c_str()};
}

CacheInfo cache_info() {
  CacheInfo c{};
  c.source = "unknown";
#if defined(__linux__)
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::string level, type, size, shared;
    if (!read_line(dir + "level", level)) break;
    if (!read_line(dir + "type", type) || !read_line(dir + "size", size)) continue;
    if (type == "Instruction") continue;
    const int lv = std::atoi(level.c_str());
    const int by = read_line(dir + "shared_cpu_list", shared) ? count_cpus(shared) : 0;
    const int64_t bytes = parse_size(size);
    if (lv == 1) { c.l1d = bytes; c.l1d_shared_by = by; }
    if (lv == 2) { c.l2 = bytes; c.l2_shared_by = by; }
    if (lv == 3) { c.l3 = bytes; c.l3_shared_by = by; }
    c.source = "sysfs";
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  if (c.l1d == 0 && c.l2 == 0) {
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE),
               l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    c.l1d = l1 > 0 ? l1 : 0;
    c.l2 = l2 > 0 ? l2 : 0;
    c.l3 = l3 > 0 ? l3 : 0;
    if (c.l1d || c.l2) c.source = "sysconf";
  }
#endif
#elif defined(__APPLE__)
  auto get = [](const char* name) -> int64_t {
    int64_t v = 0;
    size_t len = sizeof v;
    return sysctlbyname(name, &v, &len, nullptr, 0) == 0 ? v : 0;
  };
  c.l1d = get("hw.l1dcachesize");
  c.l2 = get("hw.l2cachesize");
  c.l3 = get("hw.l3cachesize");
  if (c.l1d || c.l2) c.source = "sysctl";
#endif
  return c;
}

}  // namespace fastrnn
