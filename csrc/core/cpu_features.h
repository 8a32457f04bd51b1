// Run-time choice of the instruction set for the CPU kernels (never -march=native at build time).
#pragma once

namespace fusedbnn {

enum class Isa { kScalar, kAvx2, kAvx512 };

// The widest instruction set both compiled in and supported by this CPU, unless FUSEDBNN_ISA
// (scalar, avx2 or avx512) asks for a narrower one.
Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace fusedbnn
