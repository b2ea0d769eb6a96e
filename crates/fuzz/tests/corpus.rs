//! Replays the fuzz corpus without libFuzzer: every seed (`fuzz/seeds/<target>/`) and every
//! saved crash (`fuzz/regressions/<target>/`) goes through the target's function, which
//! asserts its properties and must not panic.

use std::path::{Path, PathBuf};

use cloudproxy_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_passes_its_target() {
    let mut total = 0;
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "target {name} has no seeds");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("readable");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", file.display());
            total += 1;
        }
        println!(
            "{name}: {} seeds, {} regressions",
            seeds.len(),
            regressions.len()
        );
    }
    println!("{total} inputs replayed");
}

/// Each target has its libFuzzer binary, and each binary a target here.
#[test]
fn every_target_has_a_fuzz_binary() {
    let mut bins: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    bins.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.sort();
    assert_eq!(bins, names);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for n in &names {
        assert!(
            manifest.contains(&format!("name = \"{n}\"")),
            "{n} missing from fuzz/Cargo.toml"
        );
    }
}

/// Writes the generated seeds (`cargo test -p cloudproxy-fuzz --test corpus -- --ignored`).
#[test]
#[ignore = "writes fuzz/seeds; run by hand after changing the seed generator"]
fn write_seeds() {
    for (target, name, bytes) in cloudproxy_fuzz::seeds::all() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}
