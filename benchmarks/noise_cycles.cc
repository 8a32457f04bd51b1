// Where the cycles of one vector normal go: times the pieces of NormalGen<T> (gaussian_impl.h) alone
// (Philox, Box-Muller, the output shuffle), the whole normal and the kernels around it,
// single-threaded, in cycles per normal (each timing next to a chain of dependent integer adds, one
// per cycle: the clock of this VM moves). Build and run on one core (see benchmarks/NOTES.md):
//   g++ -O3 -std=c++17 -ffp-contract=off -mavx2 -mfma -Icsrc/core benchmarks/noise_cycles.cc -o /tmp/nc
//   taskset -c 0 /tmp/nc
// For the AVX-512 rows add -mavx512f -mavx512dq -mavx512vl -mavx512bw, and read only those: the
// AVX2 rows of that build get 32 registers, which gaussian_avx2.cc does not have.
// It then checks the vector Box-Muller against noise.h's (libm) over sweeps of its two inputs: every
// angle against TensorFlow's double product, every u1 at 9 angles, every angle at the 11 largest and
// some other radii, and 2^26 hashed pairs (the noise contract: 2e-6).
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "gaussian_impl.h"

namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Seconds of n dependent register adds, which retire one per cycle.
double add_chain_seconds(uint64_t n) {
  uint64_t x = 0;
  const double t0 = thread_seconds();
  __asm__ volatile(
      "mov %1, %%rcx\n mov $1, %%rdx\n1:\n"
      "add %%rdx, %0\n add %%rdx, %0\n add %%rdx, %0\n add %%rdx, %0\n"
      "sub $4, %%rcx\n jnz 1b\n"
      : "+r"(x)
      : "r"(n)
      : "rcx", "rdx");
  return thread_seconds() - t0;
}

// Cycles of fn() per `units`: the median over many repetitions of its time over that of a chain of
// adds run next to it (the faster of the chains before and after). This VM's clock moves with the
// load of the other core, and its thread times include time stolen by the host: medians of ratios.
// `written` escapes after each call, so that the compiler keeps every store fn makes there.
template <class Fn>
double cycles_per_unit(Fn fn, double units, const float* written) {
  constexpr uint64_t kAdds = 1 << 20;
  std::vector<double> ratios;
  double before = add_chain_seconds(kAdds);
  for (int rep = 0; rep < 201; ++rep) {
    const double t0 = thread_seconds();
    fn();
    __asm__ volatile("" : : "r"(written) : "memory");
    const double t = thread_seconds() - t0, after = add_chain_seconds(kAdds);
    ratios.push_back(t / std::min(before, after) * kAdds);
    before = after;
  }
  std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
  return ratios[ratios.size() / 2] / units;
}

template <class T>
void run(const char* isa) {
  using namespace fusedbnn;
  using namespace fusedbnn::simd;
  using F = typename T::F;
  using Gen = NormalGen<T>;
  constexpr int L = T::kLanes, kBlocks = 512, kNormals = kBlocks * Gen::kBlock;
  const NoiseStream st = stream_from_seed(1, 2);
  const Gen gen(st);
  std::vector<float> out(kNormals);
  std::vector<int32_t> bits(kNormals);
  for (int i = 0; i < kNormals; ++i) bits[i] = static_cast<int32_t>(i * 2654435761u);
  auto report = [&](const char* what, double cycles_per_normal) {
    std::printf("%-7s %-34s %5.2f cycles per normal\n", isa, what, cycles_per_normal);
  };
  // As map_range runs it: the next block's Philox, then this block's Box-Muller.
  report("whole normal", cycles_per_unit(
                             [&] {
                               typename Gen::Words w[2];
                               gen.words(0, &w[0]);
                               for (int b = 0; b < kBlocks; ++b) {
                                 gen.words(b + 1, &w[(b + 1) & 1]);
                                 gen.finish(b, w[b & 1], out.data() + b * Gen::kBlock);
                               }
                             },
                             kNormals, out.data()));
  // The kernels of the ops: map_range around the generator, over a 1 MB range.
  std::vector<float> mu(1 << 18, 0.1f), rho(1 << 18, -3.0f), big(1 << 18), big2(1 << 18);
  const int64_t n = static_cast<int64_t>(mu.size());
  report("fill_normal kernel",
         cycles_per_unit([&] { GaussianImpl<T>::fill_normal(st, 0, n, big.data()); }, n, big.data()));
  report("sample kernel (w = mu + sigma eps)",
         cycles_per_unit([&] { GaussianImpl<T>::sample(st, 0, n, mu.data(), rho.data(), big.data()); }, n, big.data()));
  report("sample_grad kernel (drho and w)",
         cycles_per_unit(
             [&] { GaussianImpl<T>::sample_grad(st, 0, n, mu.data(), mu.data(), rho.data(), big.data(), big2.data()); },
             n, big.data()));
  report("Philox4x32-10", cycles_per_unit(
                              [&] {
                                typename Gen::Words w;
                                for (int b = 0; b < kBlocks; ++b) {
                                  gen.words(b, &w);
                                  __asm__ volatile("" : : "r"(&w) : "memory");
                                }
                              },
                              kNormals, out.data()));
  // Box-Muller of L lanes makes 2 L normals.
  report("Box-Muller (log, sqrt, sincos)",
         cycles_per_unit(
             [&] {
               for (int i = 0; i < kNormals; i += 2 * L) {
                 F s, c;
                 box_muller_poly<T>(T::as_int(T::load(reinterpret_cast<const float*>(bits.data()) + i)),
                                    T::as_int(T::load(reinterpret_cast<const float*>(bits.data()) + i + L)), &s, &c);
                 T::store(out.data() + i, s);
                 T::store(out.data() + i + L, c);
               }
             },
             kNormals, out.data()));
  report("store_pairs (output order)", cycles_per_unit(
                                           [&] {
                                             const float* in = reinterpret_cast<const float*>(bits.data());
                                             for (int i = 0; i < kNormals; i += 2 * L)
                                               T::store_pairs(T::load(in + i), T::load(in + i + L), out.data() + i);
                                           },
                                           kNormals, out.data()));
  volatile float sink = out[1];
  (void)sink;
}

// The largest |vector Box-Muller - noise.h's| over sweeps of (x1, x2), and the number of angles that
// differ from TensorFlow's float(2 pi * double(u)).
template <class T>
void accuracy(const char* isa) {
  using namespace fusedbnn;
  using namespace fusedbnn::simd;
  using F = typename T::F;
  constexpr int L = T::kLanes;
  alignas(64) uint32_t x1[L], x2[L];
  alignas(64) float s[L], c[L];
  auto load = [](const uint32_t* p) { return T::as_int(T::load(reinterpret_cast<const float*>(p))); };
  double worst = 0.0;
  auto check = [&] {
    F vs, vc;
    box_muller_poly<T>(load(x1), load(x2), &vs, &vc);
    T::store(s, vs);
    T::store(c, vc);
    for (int l = 0; l < L; ++l) {
      float es, ec;
      box_muller(x1[l], x2[l], &es, &ec);
      worst = std::max({worst, std::fabs(static_cast<double>(s[l]) - es), std::fabs(static_cast<double>(c[l]) - ec)});
    }
  };
  constexpr uint32_t kValues = 1u << 23;
  int64_t angles_off = 0;
  for (uint32_t u = 0; u < kValues; u += L) {
    for (int l = 0; l < L; ++l) x2[l] = u + l;
    T::store(s, box_muller_angle<T>(load(x2)));
    for (int l = 0; l < L; ++l) {
      angles_off += s[l] != static_cast<float>(2.0 * 3.14159265358979323846 * uint32_to_unit_float(u + l));
    }
  }
  for (uint32_t angle : {0u, 1u << 21, 1u << 22, 3u << 21, 0x7fffffu, 12345u, 0x555555u, 0x2aaaaau, 0x1fffffu}) {
    for (uint32_t u = 0; u < kValues; u += L) {
      for (int l = 0; l < L; ++l) x1[l] = u + l, x2[l] = angle;
      check();
    }
  }
  for (uint32_t u1 : {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 100u, 1000u, 0x3504f3u, 0x400000u, 0x7fffffu}) {
    for (uint32_t u = 0; u < kValues; u += L) {
      for (int l = 0; l < L; ++l) x1[l] = u1, x2[l] = u + l;
      check();
    }
  }
  uint64_t h = 88172645463325252ull;
  for (int i = 0; i < (1 << 26) / L; ++i) {
    for (int l = 0; l < L; ++l) {
      h ^= h << 13, h ^= h >> 7, h ^= h << 17;
      x1[l] = static_cast<uint32_t>(h), x2[l] = static_cast<uint32_t>(h >> 32);
    }
    check();
  }
  std::printf("%-7s %-34s %lld of 2^23\n", isa, "angles unlike TensorFlow's", static_cast<long long>(angles_off));
  std::printf("%-7s %-34s %.3g (contract 2e-6)\n", isa, "Box-Muller max |error|", worst);
}

}  // namespace

int main() {
  double best = 1e30;
  for (int rep = 0; rep < 20; ++rep) best = std::min(best, add_chain_seconds(1 << 24));
  std::printf("clock %.2f GHz (dependent adds, best of 20)\n", (1 << 24) / best * 1e-9);
  run<fusedbnn::simd::Avx2>("avx2");
#if defined(__AVX512F__)
  run<fusedbnn::simd::Avx512>("avx512");
  accuracy<fusedbnn::simd::Avx512>("avx512");
#else
  accuracy<fusedbnn::simd::Avx2>("avx2");
#endif
}
