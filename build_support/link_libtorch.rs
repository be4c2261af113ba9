// Shared by the build scripts of every crate that links libtorch (included with `include!`).
//
// torch-sys links libtorch "as needed", so a binary that never names a CUDA symbol silently
// drops libtorch_cuda and runs on CPU only; and it sets no rpath, so binaries would need
// LD_LIBRARY_PATH. We re-list the libraries after `--no-as-needed` (link args come last on the
// linker's command line) and add an rpath to the libtorch folder that torch-sys used.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = std::path::Path::new(&lib);
    let lib = lib.canonicalize().unwrap_or_else(|_| lib.to_path_buf());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for name in ["torch_cuda", "c10_cuda"] {
        if lib.join(format!("lib{name}.so")).exists() {
            println!("cargo:rustc-link-arg=-l{name}");
        }
    }
    println!("cargo:rustc-link-arg=-ltorch_cpu");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
