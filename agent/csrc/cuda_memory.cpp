// libtorch's CUDA caching-allocator statistics (what torch.cuda.max_memory_allocated reads),
// behind a C interface for `agent::cuda_memory`. Built only with the `cuda` feature; every
// call catches libtorch's exceptions (e.g. no CUDA device) and reports them as -1.
#include <c10/cuda/CUDACachingAllocator.h>
#include <cstdint>

extern "C" {

// out[0..4] = allocated bytes now, allocated peak, reserved bytes now, reserved peak.
int icrl_cuda_memory_stats(int device, int64_t* out) {
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[all].current;
    out[1] = stats.allocated_bytes[all].peak;
    out[2] = stats.reserved_bytes[all].current;
    out[3] = stats.reserved_bytes[all].peak;
    return 0;
  } catch (...) {
    return -1;
  }
}

int icrl_cuda_reset_peak(int device) {
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
