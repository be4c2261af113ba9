//! Peak GPU memory as libtorch's CUDA caching allocator counts it (what PyTorch's
//! `torch.cuda.max_memory_allocated` reports). libtorch exposes these statistics only in C++,
//! so the `cuda` feature compiles a small shim (agent/csrc/cuda_memory.cpp); without the
//! feature, or when the allocator has nothing to say (no CUDA device), every call gives None.

/// Allocator statistics of one CUDA device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Bytes held by live tensors now.
    pub allocated: u64,
    /// Most bytes held by live tensors since the last [`reset_peak`].
    pub peak_allocated: u64,
    /// Bytes the allocator holds from the driver now (live tensors and its cache).
    pub reserved: u64,
    /// Most bytes held from the driver since the last [`reset_peak`].
    pub peak_reserved: u64,
}

#[cfg(feature = "cuda")]
mod shim {
    extern "C" {
        pub fn icrl_cuda_memory_stats(device: i32, out: *mut i64) -> i32;
        pub fn icrl_cuda_reset_peak(device: i32) -> i32;
    }
}

/// The allocator's statistics for CUDA device `device`; None without the `cuda` feature or
/// when libtorch reports an error (no such device, CUDA not initialised).
pub fn stats(device: usize) -> Option<CudaMemory> {
    #[cfg(feature = "cuda")]
    {
        let mut out = [0i64; 4];
        // SAFETY: the shim writes exactly four i64 into `out` and catches every C++ exception.
        let rc = unsafe { shim::icrl_cuda_memory_stats(device as i32, out.as_mut_ptr()) };
        (rc == 0).then(|| CudaMemory {
            allocated: out[0].max(0) as u64,
            peak_allocated: out[1].max(0) as u64,
            reserved: out[2].max(0) as u64,
            peak_reserved: out[3].max(0) as u64,
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// Starts a new peak for device `device`; false when it could not (see [`stats`]).
pub fn reset_peak(device: usize) -> bool {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: no pointers; the shim catches every C++ exception.
        unsafe { shim::icrl_cuda_reset_peak(device as i32) == 0 }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        false
    }
}
