//! The dependency direction of DESIGN.md, checked on the real dependency graph.

use std::process::Command;

fn dependency_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree", "--edges", "normal", "--prefix", "none", "-p", package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

fn crate_names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

#[test]
fn proto_reaches_no_io_runtime_and_no_store() {
    let tree = dependency_tree("party-proto");
    let names = crate_names(&tree);
    assert!(names.contains(&"postcard"), "sanity: the tree was read");
    for forbidden in [
        "tokio",
        "interprocess",
        "fjall",
        "sled",
        "rocksdb",
        "mio",
        "party-core",
        "party-backends",
    ] {
        assert!(
            !names.contains(&forbidden),
            "party-proto must stay sans-IO but depends on {forbidden}:\n{tree}"
        );
    }
}

#[test]
fn sim_drives_proto_directly_never_core() {
    let tree = dependency_tree("party-sim");
    let names = crate_names(&tree);
    assert!(names.contains(&"party-proto"));
    for forbidden in [
        "party-core",
        "tokio",
        "interprocess",
        "fjall",
        "sled",
        "rocksdb",
    ] {
        assert!(
            !names.contains(&forbidden),
            "party-sim must not depend on {forbidden}:\n{tree}"
        );
    }
}
