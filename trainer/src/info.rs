//! `icrl info`: versions, devices, threads and the attention kernel libtorch picks.

use std::path::PathBuf;

use serde_json::json;
use tch::{Device, Kind, Tensor};

/// The tch crate version this binary was built with.
pub const TCH_VERSION: &str = "0.24.0";

/// The folder of the libtorch shared library this process loaded (from /proc/self/maps).
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
}

/// The libtorch version of the loaded library, read from the `version.py` that the PyPI torch
/// package keeps beside its `lib/` folder (e.g. "2.11.0+cu130").
pub fn libtorch_version() -> Option<String> {
    let lib = libtorch_lib_dir()?;
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    match text {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => Ok(Device::Cuda(index)),
            _ => anyhow::bail!("unknown device `{text}`: expected auto, cpu, cuda or cuda:N"),
        },
    }
}

/// Which kernel libtorch's scaled-dot-product attention picks for a causal self-attention of
/// `batch` sequences of `seq` tokens, 8 heads of 32 dims (ReLIC's small model), on `device`.
pub fn attention_backend(device: Device, kind: Kind, batch: i64, seq: i64) -> String {
    let q = Tensor::zeros([batch, 8, seq, 32], (kind, device));
    let choice =
        Tensor::internal_fused_sdp_choice(&q, &q, &q, None::<Tensor>, 0.0, true, None, false);
    backend_name(choice).to_string()
}

/// The name of an `at::SDPBackend` value.
pub fn backend_name(choice: i64) -> &'static str {
    match choice {
        0 => "math",
        1 => "flash_attention",
        2 => "efficient_attention",
        3 => "cudnn_attention",
        4 => "overrideable",
        _ => "none",
    }
}

/// Names and memory of the visible GPUs, from nvidia-smi when it is installed.
fn gpu_names() -> Vec<String> {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything `icrl info` reports, as JSON.
pub fn collect(device: Device) -> serde_json::Value {
    let cuda = tch::Cuda::is_available();
    let kind = if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    json!({
        "icrl": env!("CARGO_PKG_VERSION"),
        "tch": TCH_VERSION,
        "libtorch": libtorch_version(),
        "libtorch_lib": libtorch_lib_dir().map(|p| p.display().to_string()),
        "cuda_available": cuda,
        "cuda_devices": tch::Cuda::device_count(),
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "gpus": gpu_names(),
        "device": format!("{device:?}"),
        "cpu_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "torch_threads": tch::get_num_threads(),
        "omp_wait_policy": std::env::var("OMP_WAIT_POLICY").ok(),
        "attention_backend_4k": attention_backend(device, kind, 1, 4096),
        "attention_dtype": format!("{kind:?}"),
    })
}

/// The process's peak memory so far: on CUDA the caching allocator's peak of live tensor bytes
/// and of reserved bytes (None without the `cuda` feature), and the resident-set peak (VmHWM).
pub fn peak_memory(device: Device) -> serde_json::Value {
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
    let cuda = match device {
        Device::Cuda(i) => agent::cuda_memory::stats(i),
        _ => None,
    };
    json!({
        "memory": "peak",
        "device": format!("{device:?}"),
        "peak_allocated_bytes": cuda.map(|m| m.peak_allocated),
        "peak_reserved_bytes": cuda.map(|m| m.peak_reserved),
        "peak_rss_bytes": hwm,
    })
}
