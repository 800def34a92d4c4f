// cpu_info.cpp — the data-cache sizes of the CPU the process runs on, for `fastrnn info` and the
// benchmark's machine line.
//
// Linux: /sys/devices/system/cpu/cpu0/cache/index*/ (level, type, size, shared_cpu_list), which
// the kernel fills from CPUID leaf 4 / 0x8000001D on x86 and from the device tree or ACPI PPTT on
// ARM; sysconf(_SC_LEVEL*_CACHE_SIZE) where sysfs is missing. macOS: sysctl hw.l1dcachesize /
// hw.l2cachesize / hw.l3cachesize. Unknown sizes are 0.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

}  // namespace

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
