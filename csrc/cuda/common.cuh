// What every CUDA kernel file needs from torch, through the stable ABI only: the device guard,
// the current stream and the launch check.
//
// The current CUDA stream: torch's stable C shim has aoti_torch_get_current_cuda_stream, but it
// lives in libtorch_cuda, which a CPU-only torch lacks; linking it would stop the binary from
// loading there. It is looked up at run time instead (the CUDA kernels only run in a CUDA torch,
// where libtorch_cuda is loaded). The stable C++ Stream::nativeHandle() would replace this
// lookup, but only exists from torch 2.13 (the binary targets 2.11).
#pragma once

#include <dlfcn.h>

#include <cuda_runtime.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include "kpfast/checks.h"

namespace kpfast {

inline cudaStream_t current_cuda_stream(const Tensor& on) {
  using GetStream = AOTITorchError (*)(int32_t, void**);
  static const GetStream get_stream = [] {
    void* library = dlopen("libtorch_cuda.so", RTLD_NOLOAD | RTLD_LAZY);
    void* symbol = dlsym(library ? library : RTLD_DEFAULT, "aoti_torch_get_current_cuda_stream");
    return reinterpret_cast<GetStream>(symbol);
  }();
  STD_TORCH_CHECK(get_stream != nullptr,
                  "kpfast: CUDA tensors but torch's libtorch_cuda (aoti_torch_get_current_cuda_stream) is not loaded");
  void* stream = nullptr;
  STD_TORCH_CHECK(get_stream(on.get_device_index(), &stream) == AOTI_TORCH_SUCCESS,
                  "kpfast: cannot get the current CUDA stream");
  return static_cast<cudaStream_t>(stream);
}

// Makes `on`'s device current for the kernel launches of one op call.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(const Tensor& on) : guard_(on.get_device_index()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

inline void check_launch(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  STD_TORCH_CHECK(error == cudaSuccess, kernel, ": CUDA launch failed: ", cudaGetErrorString(error));
}

// CUDA's limit on grid dimensions y and z (x: 2**31 - 1, grid_for's default).
constexpr int64_t kMaxGridYZ = 65535;

// Blocks of `per_block` items covering `items`, as a grid dimension (checked, never truncated).
inline unsigned grid_for(int64_t items, int64_t per_block, int64_t limit = (int64_t(1) << 31) - 1) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  STD_TORCH_CHECK(blocks <= limit, "kpfast: ", items, " items need ", blocks, " CUDA blocks, more than ", limit);
  return static_cast<unsigned>(blocks);
}

}  // namespace kpfast
