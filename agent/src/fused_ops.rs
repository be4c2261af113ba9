//! Fused CPU training kernels (agent/csrc/fused_ops.cpp): libtorch autograd functions that do
//! in one pass forward and one pass backward what the composite form does in many kernels.
//! Today: RMSNorm and the rotary embedding. They apply to f32 tensors on the CPU only; every
//! other device and dtype keeps the composite form. The arithmetic is the same up to float summation order (tests compare
//! values and gradients within 1e-5, `agent/tests/fused_ops.rs`).
//!
//! [`set_enabled`] switches them off process-wide, for side-by-side benchmarks
//! (`icrl bench model --kernels composite`) and tests.

use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn icrl_fused_rms_norm(x: *const C_tensor, w: *const C_tensor, eps: f64) -> *mut C_tensor;
    fn icrl_fused_rotary(
        x: *const C_tensor,
        cos: *const C_tensor,
        sin: *const C_tensor,
    ) -> *mut C_tensor;
    fn icrl_fused_last_error() -> *const c_char;
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused kernels on (the default) or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the fused kernels are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// RMSNorm of `x: [..., D]` with `weight: [D]` in one fused kernel, or None where it does not
/// apply (kernels off, not f32, not on the CPU): the caller then uses the composite form.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Option<Tensor> {
    let applies = enabled()
        && x.device() == Device::Cpu
        && weight.device() == Device::Cpu
        && x.kind() == Kind::Float
        && weight.kind() == Kind::Float
        && x.dim() >= 1
        && x.size().last() == weight.size().first()
        && weight.dim() == 1;
    if !applies {
        return None;
    }
    // SAFETY: both pointers are live tensors for the duration of the call; the C side returns
    // a new heap tensor that `from_ptr` takes ownership of, or null on a libtorch error.
    Some(take(
        unsafe { icrl_fused_rms_norm(x.as_ptr(), weight.as_ptr(), eps) },
        "RMSNorm",
    ))
}

/// Rotary embedding of `x: [B, H, T, hd]` by angles with `cos`, `sin: [B, 1, T, hd/2]`
/// (half-split pairs) in one fused kernel, or None where it does not apply (kernels off, not
/// f32 on the CPU, other shapes, or gradients wanted for the tables): the caller then uses the
/// composite form.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Tensor> {
    let (xs, cs) = (x.size(), cos.size());
    let applies = enabled()
        && [x, cos, sin]
            .iter()
            .all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float)
        && !cos.requires_grad()
        && !sin.requires_grad()
        && xs.len() == 4
        && xs[3] % 2 == 0
        && cs.len() == 4
        && cs == sin.size()
        && cs[1] == 1
        && cs[2] == xs[2]
        && cs[3] == xs[3] / 2
        && (cs[0] == xs[0] || cs[0] == 1);
    if !applies {
        return None;
    }
    // SAFETY: as in `rms_norm`.
    Some(take(
        unsafe { icrl_fused_rotary(x.as_ptr(), cos.as_ptr(), sin.as_ptr()) },
        "rotary",
    ))
}

/// Takes ownership of a tensor returned by the C side; null means libtorch raised, which the
/// checks before each call rule out for user input, so it is a bug.
fn take(out: *mut C_tensor, what: &str) -> Tensor {
    if out.is_null() {
        // SAFETY: the C side keeps the message in a thread-local string until the next error.
        let msg = unsafe { CStr::from_ptr(icrl_fused_last_error()) };
        panic!("fused {what} failed: {}", msg.to_string_lossy());
    }
    // SAFETY: a non-null result is a new heap tensor owned by the caller.
    unsafe { Tensor::from_ptr(out) }
}
