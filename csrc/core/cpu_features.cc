#include "cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace fusedbnn {
namespace {

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#if defined(FUSEDBNN_HAVE_AVX512)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw"))
    return Isa::kAvx512;
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
#endif
  return Isa::kScalar;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

Isa active_isa() {
  static const Isa isa = [] {
    Isa best = detect();
    const char* forced = std::getenv("FUSEDBNN_ISA");
    if (forced != nullptr) {
      for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
        if (std::strcmp(forced, isa_name(candidate)) == 0 && candidate <= best) best = candidate;
      }
    }
    return best;
  }();
  return isa;
}

}  // namespace fusedbnn
