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
