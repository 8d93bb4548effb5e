// The one schema file: every kpfast operator is declared here, once, for all devices.
// Implementations live in cpu/*.cpp and cuda/*.cu (TORCH_LIBRARY_IMPL, one file per device);
// fake (meta) and autograd registrations live in Python (kpfast/ops/_registration.py).
#include <Python.h>

#include <string>

#include <torch/library.h>
#include <torch/version.h>

extern "C" {
// `import kpfast._C` loads this library, which runs the TORCH_LIBRARY registrations below.
// The module itself is empty: the ops are reached through torch.ops.kpfast.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace kpfast {

// What this binary was compiled against, so that Python can refuse a build made for another
// torch with a clear message instead of failing later with an obscure symbol error.
std::string build_info() {
  const std::string torch_version = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                                    "." + std::to_string(TORCH_VERSION_PATCH);
#ifdef KPFAST_WITH_CUDA
  return "torch=" + torch_version + ";cuda=1";
#else
  return "torch=" + torch_version + ";cuda=0";
#endif
}

TORCH_LIBRARY(kpfast, m) {
  m.def("build_info() -> str", &build_info);

  // Op 1: Gaussian heatmap rendering (DESIGN.md). Inputs are normalised by the Python layer:
  // keypoints (B, N, K, 2), weights (B, N, K), sigma (B, K), one floating dtype, contiguous.
  m.def("render_heatmaps(Tensor keypoints, Tensor weights, Tensor sigma, int height, int width, "
        "str encoding, ScalarType dtype) -> (Tensor heatmaps, Tensor weights_out)");
  // Gradient of the rendered maps w.r.t. keypoints (B, N, K, 2) and sigma (B, K).
  m.def("render_heatmaps_backward(Tensor grad_heatmaps, Tensor keypoints, Tensor weights, Tensor sigma, "
        "str encoding) -> (Tensor grad_keypoints, Tensor grad_sigma)");

  // Op 2: fused weighted heatmap loss, target rendered on the fly (DESIGN.md). pred (B, K, H, W)
  // float32/bf16/fp16 with any strides; keypoints (B, N, K, 2), weights (B, N, K), sigma (B, K)
  // float32 contiguous. Returns per-map weighted loss sums (B, K) and cornernet positive counts
  // (B, K), both float32; the reduction is applied in Python (kpfast/reference/loss.py).
  m.def("heatmap_loss(Tensor pred, Tensor keypoints, Tensor weights, Tensor sigma, str encoding, str kind, "
        "float alpha, float gamma, float beta, float keypoint_weight, float background_weight, float threshold, "
        "float l1_weight) -> (Tensor map_losses, Tensor positives)");
  // Gradient w.r.t. pred (contiguous, pred's dtype) given the upstream gradient of map_losses.
  m.def("heatmap_loss_backward(Tensor grad_map_losses, Tensor pred, Tensor keypoints, Tensor weights, "
        "Tensor sigma, str encoding, str kind, float alpha, float gamma, float beta, float keypoint_weight, "
        "float background_weight, float threshold, float l1_weight) -> Tensor grad_pred");
  // Op 3: heatmap decoding (DESIGN.md). heatmaps (B, K, H, W) contiguous float32/float16/bfloat16;
  // method one of argmax, quarter, dark, udp, local_mean; coords (B, K, 2) and scores (B, K) float32.
  m.def("decode_heatmaps(Tensor heatmaps, str method, int blur_kernel, int window) -> (Tensor coords, Tensor scores)");
  // Soft-argmax: coords (B, K, 2), scores (B, K) = the map maximum, and the per-map log-normaliser
  // log sum exp(beta h) that the fused backward needs (float32, or float64 for float64 maps).
  m.def("soft_argmax(Tensor heatmaps, float beta) -> (Tensor coords, Tensor scores, Tensor log_normaliser)");
  m.def("soft_argmax_backward(Tensor grad_coords, Tensor heatmaps, Tensor coords, Tensor log_normaliser, "
        "float beta) -> Tensor");
  // Peaks after non-maximum suppression: coords (B, K, P, 2), scores (B, K, P), valid (B, K, P) bool.
  m.def("find_peaks(Tensor heatmaps, float threshold, int min_distance, int max_peaks) -> (Tensor coords, "
        "Tensor scores, Tensor valid)");
}

}  // namespace kpfast
