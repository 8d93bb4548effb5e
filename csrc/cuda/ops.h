// CUDA implementations of the operators declared in csrc/ops.cpp; registered in cuda/register.cpp.
#pragma once

#include <tuple>

#include <ATen/ATen.h>

namespace kpfast {

std::tuple<at::Tensor, at::Tensor> render_heatmaps_cuda(const at::Tensor& keypoints, const at::Tensor& weights,
                                                        const at::Tensor& sigma, int64_t height, int64_t width,
                                                        c10::string_view encoding, at::ScalarType dtype);
std::tuple<at::Tensor, at::Tensor> render_heatmaps_backward_cuda(const at::Tensor& grad_heatmaps,
                                                                 const at::Tensor& keypoints, const at::Tensor& weights,
                                                                 const at::Tensor& sigma, c10::string_view encoding);

// Op 3: decoding (csrc/cuda/decode.cu).
std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cuda(const at::Tensor& heatmaps, c10::string_view method,
                                                        int64_t blur_kernel, int64_t window);
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_argmax_cuda(const at::Tensor& heatmaps, double beta);
at::Tensor soft_argmax_backward_cuda(const at::Tensor& grad_coords, const at::Tensor& heatmaps, const at::Tensor& coords,
                                    const at::Tensor& log_normaliser, double beta);
std::tuple<at::Tensor, at::Tensor, at::Tensor> find_peaks_cuda(const at::Tensor& heatmaps, double threshold,
                                                               int64_t min_distance, int64_t max_peaks);

}  // namespace kpfast

// Op 2: fused heatmap loss (csrc/cuda/loss.cu).
namespace kpfast {

std::tuple<at::Tensor, at::Tensor> heatmap_loss_cuda(const at::Tensor& pred, const at::Tensor& keypoints,
                                                     const at::Tensor& weights, const at::Tensor& sigma,
                                                     c10::string_view encoding, c10::string_view kind, double alpha,
                                                     double gamma, double beta, double keypoint_weight,
                                                     double background_weight, double threshold, double l1_weight);
at::Tensor heatmap_loss_backward_cuda(const at::Tensor& grad_map_losses, const at::Tensor& pred,
                                      const at::Tensor& keypoints, const at::Tensor& weights, const at::Tensor& sigma,
                                      c10::string_view encoding, c10::string_view kind, double alpha, double gamma,
                                      double beta, double keypoint_weight, double background_weight, double threshold,
                                      double l1_weight);

}  // namespace kpfast
