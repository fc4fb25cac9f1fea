// Runtime choice of the CPU kernel variant, the way ATen's DispatchStub does it.
//
// setup.py compiles every csrc/ops/<op>/cpu.cpp once per variant: baseline
// (GAN_EXT_CPU_VARIANT=0), AVX2 (1) and AVX-512 (2), each with its gcc flags
// and ATen's CPU_CAPABILITY macros, so at::vec::Vectorized is 128-bit generic,
// 256- or 512-bit wide in them. Symbols that could clash stay apart: the
// kernels live in anonymous namespaces, at::vec in ATen's inline namespace
// CPU_CAPABILITY, and fast_math.h in ours of the same name.
//
// Each copy of a cpu.cpp holds its own TORCH_LIBRARY_IMPL block, and only the
// chosen variant's block registers its kernels, so every op is registered
// once, with the chosen variant's function pointers, at load time.
#pragma once

namespace gan_ext {
namespace cpu {

enum Capability : int { kDefault = 0, kAVX2 = 1, kAVX512 = 2 };

// The variant whose kernels register: computed once (cpu_dispatch.cpp), -1
// when GAN_EXT_CPU_CAPABILITY is invalid (then no CPU kernel registers and the
// module import raises load_error()).
int selected_capability();
const char* capability_name(int capability);
// One-line messages for the module import to raise / warn with ("" if none).
const char* load_error();
const char* load_warning();

}  // namespace cpu
}  // namespace gan_ext

// The raw __m256 paths (fast_math.h on plain arrays, philox_cpu.h, the noise
// transform) run in the AVX-512 variant too: every AVX-512 CPU has AVX2.
// Code that converts a Vectorized<float> to __m256 must test
// CPU_CAPABILITY_AVX2 alone, since there Vectorized<float> is 512-bit.
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#define GAN_EXT_AVX2_INTRINSICS 1
#endif

// First statement of a cpu.cpp's TORCH_LIBRARY_IMPL block.
#define GAN_EXT_REGISTER_IF_SELECTED()                                         \
  if (::gan_ext::cpu::selected_capability() != GAN_EXT_CPU_VARIANT) return
