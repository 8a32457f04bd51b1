// Where the cycles of one vector normal go: times the pieces of NormalGen<T> (gaussian_impl.h) alone
// and the whole fill, single-threaded, in cycles per normal at the clock measured here (a chain of
// dependent integer adds, one per cycle). Build and run on one core (see benchmarks/NOTES.md):
//   g++ -O3 -std=c++17 -ffp-contract=off -mavx2 -mfma -Icsrc/core benchmarks/noise_cycles.cc -o /tmp/nc
//   taskset -c 0 /tmp/nc        (add -mavx512f -mavx512dq -mavx512vl -mavx512bw for the AVX-512 rows)
#include <time.h>

#include <cstdio>
#include <vector>

#include "gaussian_impl.h"

namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Cycles per second: dependent register adds retire one per cycle.
double clock_hz() {
  double best = 0;
  for (int rep = 0; rep < 20; ++rep) {
    uint64_t x = 0, n = 20000000;
    const double t0 = thread_seconds();
    __asm__ volatile(
        "mov %1, %%rcx\n mov $1, %%rdx\n1:\n"
        "add %%rdx, %0\n add %%rdx, %0\n add %%rdx, %0\n add %%rdx, %0\n"
        "sub $4, %%rcx\n jnz 1b\n"
        : "+r"(x)
        : "r"(n)
        : "rcx", "rdx");
    best = std::max(best, n / (thread_seconds() - t0));
  }
  return best;
}

// Best time of fn() over many repetitions, per `units`.
template <class Fn>
double best_per_unit(Fn fn, double units) {
  double best = 1e30;
  for (int rep = 0; rep < 200; ++rep) {
    const double t0 = thread_seconds();
    fn();
    best = std::min(best, thread_seconds() - t0);
  }
  return best / units;
}

template <class T>
void run(const char* isa, double hz) {
  using namespace fusedbnn;
  using namespace fusedbnn::simd;
  using F = typename T::F;
  using I = typename T::I;
  using M = PolyMath<T>;
  using Gen = NormalGen<T>;
  constexpr int L = T::kLanes, kBlocks = 512, kNormals = kBlocks * Gen::kBlock;
  const NoiseStream st = stream_from_seed(1, 2);
  std::vector<float> out(kNormals), u(kNormals);
  for (int i = 0; i < kNormals; ++i) u[i] = (i * 2654435761u % 8388608u) / 8388608.0f + 1e-7f;
  volatile float sink = 0;
  auto report = [&](const char* what, double seconds_per_normal) {
    std::printf("%-7s %-34s %6.3f ns %5.2f cycles per normal\n", isa, what, seconds_per_normal * 1e9,
                seconds_per_normal * hz);
  };
  report("whole normal (fill)", best_per_unit([&] {
    for (int b = 0; b < kBlocks; ++b) Gen::fill(st, b, out.data() + b * Gen::kBlock);
  }, kNormals));
  // Philox-10 of one block: 4 normals per lane.
  report("Philox4x32-10", best_per_unit([&] {
    I acc = T::set1_i(0);
    for (int b = 0; b < kBlocks; ++b) {
      I c0 = T::add_i(T::set1_i(b * L), T::lane_index()), c1 = T::set1_i(7), c2 = T::set1_i(9), c3 = T::set1_i(11);
      uint32_t k0 = st.key[0], k1 = st.key[1];
      for (int round = 0; round < 10; ++round) {
        I hi0, lo0, hi1, lo1;
        T::mul_hi_lo(c0, kPhiloxM4x32A, &hi0, &lo0);
        T::mul_hi_lo(c2, kPhiloxM4x32B, &hi1, &lo1);
        c0 = T::xor_i(T::xor_i(hi1, c1), T::set1_i(static_cast<int>(k0)));
        c1 = lo1;
        c2 = T::xor_i(T::xor_i(hi0, c3), T::set1_i(static_cast<int>(k1)));
        c3 = lo0;
        k0 += kPhiloxW32A;
        k1 += kPhiloxW32B;
      }
      acc = T::xor_i(acc, T::xor_i(T::xor_i(c0, c1), T::xor_i(c2, c3)));
    }
    T::store(out.data(), T::as_float(acc));
  }, kNormals));
  // One log, sqrt, sincos per lane serves 2 normals.
  report("log", best_per_unit([&] {
    for (int i = 0; i < kNormals; i += L) T::store(out.data() + i, M::log(T::load(u.data() + i)));
  }, 2.0 * kNormals));
  report("sqrt", best_per_unit([&] {
    for (int i = 0; i < kNormals; i += L) T::store(out.data() + i, T::sqrt(T::load(u.data() + i)));
  }, 2.0 * kNormals));
  report("sincos", best_per_unit([&] {
    for (int i = 0; i < kNormals; i += L) {
      F s, c;
      M::sincos(T::load(u.data() + i), &s, &c);
      T::store(out.data() + i, T::add(s, c));
    }
  }, 2.0 * kNormals));
  report("interleave4 (output order)", best_per_unit([&] {
    for (int i = 0; i < kNormals; i += 4 * L) {
      const F n[4] = {T::load(u.data() + i), T::load(u.data() + i + L), T::load(u.data() + i + 2 * L),
                      T::load(u.data() + i + 3 * L)};
      T::interleave4(n, out.data() + i);
    }
  }, kNormals));
  sink = out[1];
  (void)sink;
}

}  // namespace

int main() {
  const double hz = clock_hz();
  std::printf("clock %.2f GHz (dependent adds, best of 20)\n", hz * 1e-9);
  run<fusedbnn::simd::Avx2>("avx2", hz);
#if defined(__AVX512F__)
  run<fusedbnn::simd::Avx512>("avx512", hz);
#endif
}
