#include "cpu_features.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>

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
    const Isa best = detect();
    const char* forced = std::getenv("FUSEDBNN_ISA");
    if (forced == nullptr || *forced == '\0') return best;
    // Case and surrounding spaces do not matter: "AVX2" is what oneDNN's ONEDNN_MAX_CPU_ISA takes.
    std::string name(forced);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (name == isa_name(candidate)) return candidate < best ? candidate : best;
    }
    // No exception can reach the user from here (the first kernel call): say it once on stderr.
    std::fprintf(stderr, "fusedbnn: FUSEDBNN_ISA=\"%s\" is not one of scalar, avx2, avx512; ignored, using %s\n",
                 forced, isa_name(best));
    return best;
  }();
  return isa;
}

}  // namespace fusedbnn
