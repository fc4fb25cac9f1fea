// Chooses the CPU kernel variant once (see common/cpu_capability.h). Compiled
// with the baseline flags like every file outside csrc/ops/*/cpu.cpp, so it
// runs on any x86-64 CPU.
#include <ATen/Version.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "common/cpu_capability.h"

// The best variant setup.py compiled: 0 with GAN_EXT_PORTABLE=1 or off x86-64.
#ifndef GAN_EXT_MAX_CPU_CAPABILITY
#define GAN_EXT_MAX_CPU_CAPABILITY 0
#endif

namespace gan_ext {
namespace cpu {
namespace {

constexpr const char* kNames[] = {"default", "avx2", "avx512"};
constexpr const char* kVar = "GAN_EXT_CPU_CAPABILITY";

struct Choice {
  int capability = kDefault;
  std::string error, warning;
};

// What this CPU can execute, with the instruction sets each variant is compiled for.
int cpu_supports() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return kAVX512;
  if (avx2) return kAVX2;
#endif
  return kDefault;
}

// torch's own choice, which honours ATEN_CPU_CAPABILITY=default|avx2|avx512.
int aten_capability() {
  const std::string c = at::get_cpu_capability();
  if (c == "AVX512") return kAVX512;
  if (c == "AVX2") return kAVX2;
  return kDefault;
}

Choice choose() {
  Choice r;
  const int cpu = std::min(cpu_supports(), GAN_EXT_MAX_CPU_CAPABILITY);
  r.capability = std::min(cpu, aten_capability());
  const char* env = std::getenv(kVar);
  if (env == nullptr || *env == '\0') return r;
  std::string want(env);
  std::transform(want.begin(), want.end(), want.begin(), [](unsigned char ch) { return std::tolower(ch); });
  int asked = -1;
  for (int i = 0; i <= kAVX512; ++i)
    if (want == kNames[i]) asked = i;
  if (asked < 0) {
    r.capability = -1;
    r.error = std::string(kVar) + "='" + env + "' is not one of default, avx2, avx512";
    return r;
  }
  // An explicit request wins over torch's ceiling, but never over what the
  // build holds or the CPU can execute: that is said, not silently changed.
  r.capability = std::min(asked, cpu);
  if (r.capability != asked)
    r.warning = std::string(kVar) + "=" + kNames[asked] + ": " +
                (asked > GAN_EXT_MAX_CPU_CAPABILITY ? "this build has no such kernels"
                                                    : "this CPU cannot run it") +
                "; using " + kNames[r.capability];
  return r;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

int selected_capability() { return choice().capability; }

const char* capability_name(int capability) {
  return capability >= kDefault && capability <= kAVX512 ? kNames[capability] : "none";
}

const char* load_error() { return choice().error.c_str(); }
const char* load_warning() { return choice().warning.c_str(); }

}  // namespace cpu
}  // namespace gan_ext
