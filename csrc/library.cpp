// The one schema file: every kpfast operator is declared here, once, for all devices. Each kernel
// file registers its own implementations at its end (STABLE_TORCH_LIBRARY_IMPL in cpu/*.cpp and
// cuda/*.cu); fake (meta) and autograd registrations live in Python (kpfast/ops/_*_autograd.py,
// kpfast/ops/_decode_registration.py). Backward ops are private (leading underscore).
//
// Stable ABI: only torch/csrc/stable and torch/headeronly are used, with TORCH_TARGET_VERSION set
// by setup.py, and the Python module uses the limited API without libtorch_python, so the
// binary loads in every torch >= the target version (checked by tests/test_extension.py).
//
// Not expressible at target 2.11, and the explicit fallback:
// * set_python_module (telling torch which Python module holds the fake kernels) exists in the
//   stable library only from 2.13. Python does it instead: `import kpfast._C` first imports the
//   kpfast package, which imports kpfast.ops and registers every fake kernel before any op runs.
#include <Python.h>

#include <string>

#ifdef KPFAST_WITH_CUDA
#include <cuda_runtime_api.h>  // CUDART_VERSION
#endif

#include "kpfast/checks.h"

extern "C" {
// `import kpfast._C` loads this library, which runs the STABLE_TORCH_LIBRARY registrations.
// The module itself is empty: the ops are reached through torch.ops.kpfast.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace kpfast {

#define KPF_STRINGIFY_(x) #x
#define KPF_STRINGIFY(x) KPF_STRINGIFY_(x)

// How this binary was built, for kpfast._extension and `python -m kpfast.info`: the stable ABI
// version it targets (it loads in any torch >= that), the torch it was compiled against, and
// the CUDA architectures of its kernels.
std::string build_info() {
  const uint64_t target = TORCH_TARGET_VERSION;
  std::string info = "abi=stable;target=" + std::to_string((target >> 56) & 0xff) + "." +
                     std::to_string((target >> 48) & 0xff) + ";torch=" + TORCH_VERSION;
#ifdef KPFAST_WITH_CUDA
  // cudart: the CUDA runtime linked in (statically), which the device's driver must support.
  info += ";cuda=1;arches=" KPF_STRINGIFY(KPFAST_CUDA_ARCHES) ";cudart=" + std::to_string(CUDART_VERSION);
#else
  info += ";cuda=0;arches=";
#endif
  return info;
}

STABLE_TORCH_LIBRARY(kpfast, m) {
  m.def("build_info() -> str");

  // Op 1: Gaussian heatmap rendering (docs/design.md). Inputs as the Python layer passes them, so that
  // a call is one kernel launch (csrc/kpfast/checks.h check_keypoint_inputs): keypoints
  // (B, N, K, 2) contiguous float32/float64; weights (B, N, K) contiguous of that dtype, or None
  // (every weight 1); sigma a (B, K) tensor of that dtype with any strides (a (K,) sigma expanded),
  // or None, and then sigma_value is every map's sigma.
  m.def("render_heatmaps(Tensor keypoints, Tensor? weights, Tensor? sigma, float sigma_value, SymInt height, "
        "SymInt width, str encoding, ScalarType dtype) -> (Tensor heatmaps, Tensor weights_out)");
  // Gradient of the rendered maps w.r.t. keypoints (B, N, K, 2) and sigma (B, K, contiguous, also
  // when sigma is None or expanded: autograd sums it back to the caller's shape).
  m.def("_render_heatmaps_backward(Tensor grad_heatmaps, Tensor keypoints, Tensor? weights, Tensor? sigma, "
        "float sigma_value, str encoding) -> (Tensor grad_keypoints, Tensor grad_sigma)");

  // Op 2: fused weighted heatmap loss, target rendered on the fly (docs/design.md). pred (B, K, H, W)
  // float32/bf16/fp16 with any strides; keypoints, weights, sigma, sigma_value float32, passed as
  // for render_heatmaps (optional weights and sigma). Returns per-map weighted loss sums (B, K) and
  // cornernet positive counts (B, K), both float32; the reduction is applied in Python
  // (kpfast/reference/loss.py).
  m.def("heatmap_loss(Tensor pred, Tensor keypoints, Tensor? weights, Tensor? sigma, float sigma_value, "
        "str encoding, str kind, float alpha, float gamma, float beta, float keypoint_weight, "
        "float background_weight, float threshold, float l1_weight) -> (Tensor map_losses, Tensor positives)");
  // Gradient w.r.t. pred (contiguous, pred's dtype) given the upstream gradient of map_losses.
  m.def("_heatmap_loss_backward(Tensor grad_map_losses, Tensor pred, Tensor keypoints, Tensor? weights, "
        "Tensor? sigma, float sigma_value, str encoding, str kind, float alpha, float gamma, float beta, "
        "float keypoint_weight, float background_weight, float threshold, float l1_weight) -> Tensor grad_pred");
  // Op 3: heatmap decoding (docs/design.md). heatmaps (B, K, H, W) contiguous float32/float16/bfloat16;
  // method one of kpfast/vocabulary.py DECODE_METHODS; coords (B, K, 2) and scores (B, K) float32.
  m.def("decode_heatmaps(Tensor heatmaps, str method, int blur_kernel, int window) -> (Tensor coords, Tensor scores)");
  // Soft-argmax: coords (B, K, 2), scores (B, K) = the map maximum, and the per-map log-normaliser
  // log sum exp(beta h) that the fused backward needs (float32, or float64 for float64 maps).
  m.def("soft_argmax(Tensor heatmaps, float beta) -> (Tensor coords, Tensor scores, Tensor log_normaliser)");
  m.def("_soft_argmax_backward(Tensor grad_coords, Tensor heatmaps, Tensor coords, Tensor log_normaliser, "
        "float beta) -> Tensor");
  // Peaks after non-maximum suppression: coords (B, K, P, 2), scores (B, K, P), valid (B, K, P) bool.
  m.def("find_peaks(Tensor heatmaps, float threshold, int min_distance, int max_peaks) -> (Tensor coords, "
        "Tensor scores, Tensor valid)");
}

// build_info has no tensor argument: CompositeExplicitAutograd serves it on every device.
STABLE_TORCH_LIBRARY_IMPL(kpfast, CompositeExplicitAutograd, m) {
  m.impl("build_info", TORCH_BOX(&build_info));
}

}  // namespace kpfast
