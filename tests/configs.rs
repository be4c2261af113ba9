//! Every file in configs/ parses, validates, and survives a save/load round trip.

use std::path::Path;

use icrl::trainer::config::{self, Config};

fn ron_files(folder: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_config_parses_validates_and_round_trips() {
    let files = ron_files("configs");
    assert!(!files.is_empty(), "configs/ has no .ron files");
    for path in files {
        let config: Config =
            config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = config::to_ron_string(&config);
        let back: Config = config::from_ron_str(&text, "round trip").unwrap_or_else(|e| {
            panic!(
                "{}: resolved config does not load back: {e}\n{text}",
                path.display()
            )
        });
        assert_eq!(back, config, "{}", path.display());
    }
}
