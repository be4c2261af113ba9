//! The import rule of docs/architecture.md: no module of any crate imports one that imports it
//! back. `scripts/module_cycles.py` reads the import paths; this test runs it on the workspace
//! and, so that a broken checker cannot pass silently, on a crate made to contain a cycle.

use std::path::Path;
use std::process::Command;

fn check(dirs: &[&Path]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/module_cycles.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(dirs)
        .output()
        .expect("python3 runs scripts/module_cycles.py");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (ok, text) = check(&[]);
    assert!(ok, "import cycles:\n{text}");
    // Every crate was read, at every granularity.
    for krate in [
        "envs/src",
        "agent/src",
        "sampler/src",
        "trainer/src",
        "lab/src",
    ] {
        assert_eq!(text.matches(&format!("{krate} depth")).count(), 3, "{text}");
    }
}

#[test]
fn a_cycle_through_a_third_module_is_found() {
    let dir = std::env::temp_dir().join(format!("icrl-cycles-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    // The only import of `a` is in code; the doc link and the test module must not count.
    std::fs::write(
        src.join("b.rs"),
        "/// See [`crate::a::A`].\npub struct B(crate::c::C);\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c/mod.rs"),
        "pub struct C;\nfn f() -> crate::a::A { crate::a::A }\n#[cfg(test)]\nmod tests {\n    use crate::b::B;\n}\n",
    )
    .unwrap();
    let (ok, text) = check(&[&src]);
    assert!(!ok, "{text}");
    assert!(text.contains("['a', 'b', 'c']"), "{text}");
    // Without the import in code, no cycle.
    std::fs::write(src.join("c/mod.rs"), "pub struct C;\n").unwrap();
    let (ok, text) = check(&[&src]);
    assert!(ok, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
