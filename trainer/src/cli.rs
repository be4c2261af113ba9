//! The `icrl` command line.

/// Entry point of the `icrl` binary; returns the process exit code.
pub fn main() -> i32 {
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
    println!("torch ok {} cuda={}", t.sum(tch::Kind::Float).double_value(&[]), tch::Cuda::is_available());
    0
}
