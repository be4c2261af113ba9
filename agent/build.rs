include!("../build_support/link_libtorch.rs");

fn main() {
    link_libtorch();
    build_fused_ops();
    #[cfg(feature = "cuda")]
    build_cuda_memory_shim();
}

/// The libtorch folder (with `include/` and `lib/`) that torch-sys links.
fn libtorch_root() -> std::path::PathBuf {
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys sets DEP_TCH_LIBTORCH_LIB"),
    );
    let lib = lib.canonicalize().unwrap_or(lib);
    lib.parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf()
}

/// A C++ build against libtorch's headers with the flags torch-sys uses for its own wrapper.
fn libtorch_cpp_build(torch: &std::path::Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false);
    build
}

/// Compiles csrc/fused_ops.cpp (fused CPU kernels as libtorch autograd functions), optimised
/// even in debug builds: the tests run them over real activations.
fn build_fused_ops() {
    println!("cargo:rerun-if-changed=csrc/fused_ops.cpp");
    libtorch_cpp_build(&libtorch_root())
        .file("csrc/fused_ops.cpp")
        .opt_level(3)
        .compile("icrl_fused_ops");
}

/// Compiles csrc/cuda_memory.cpp (the CUDA caching allocator's statistics, which libtorch
/// exposes only in C++) against the headers of the libtorch that torch-sys uses. The CUDA
/// runtime headers come from the PyPI wheel's `nvidia/cu13/include` beside torch (with the
/// `crt/` headers of the Triton wheel beside it), else from `CUDA_HOME`/`CUDA_PATH`, else
/// /usr/local/cuda.
#[cfg(feature = "cuda")]
fn build_cuda_memory_shim() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-changed=csrc/cuda_memory.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    let torch = libtorch_root();
    let mut cuda_include: Vec<PathBuf> = Vec::new();
    if let Some(site) = torch.parent() {
        cuda_include.extend(
            ["cu13", "cu12", "cuda_runtime"]
                .iter()
                .map(|d| site.join("nvidia").join(d).join("include")),
        );
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = std::env::var(var) {
            cuda_include.push(PathBuf::from(home).join("include"));
        }
    }
    cuda_include.push(PathBuf::from("/usr/local/cuda/include"));
    let cuda_include = cuda_include
        .into_iter()
        .find(|d| d.join("cuda_runtime_api.h").exists())
        .expect("cuda_runtime_api.h not found (set CUDA_HOME) for the `cuda` feature");
    // The wheel's CUDA headers lack the `crt/` folder that cuda_runtime.h includes; Triton's
    // wheel (installed with torch) carries one.
    let crt = torch
        .parent()
        .map(|site| site.join("triton/backends/nvidia/include"))
        .filter(|d| d.join("crt/host_config.h").exists() && !cuda_include.join("crt").exists());
    let mut build = libtorch_cpp_build(&torch);
    build.file("csrc/cuda_memory.cpp").include(&cuda_include);
    if let Some(crt) = crt {
        build.include(crt);
    }
    build.compile("icrl_cuda_memory");
}
