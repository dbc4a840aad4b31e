//! The README's simulator commands, run as they stand (with this build's party-sim).

use std::process::Command;

#[test]
fn the_readme_simulator_commands_do_what_the_readme_says() {
    let readme = std::fs::read_to_string(checkout_dir().join("README.md")).unwrap();
    let block = readme
        .split_once("## The simulator")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README has a simulator block");
    let mut ran = 0;
    for line in block.lines() {
        let command = line.split('#').next().unwrap_or("").trim();
        let Some(args) = command.strip_prefix("cargo run --release -p party-sim -- ") else {
            continue;
        };
        let mut args: Vec<&str> = args.split_whitespace().collect();
        if let Some(seed) = args.iter().position(|a| *a == "--seed") {
            args.insert(seed + 2, "--quiet");
        }
        let output = Command::new(env!("CARGO_BIN_EXE_party-sim"))
            .args(&args)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        if args.contains(&"--shrink") {
            assert!(
                !output.status.success(),
                "{command}: a shrunk failure still fails"
            );
            assert!(
                printed.contains("shrunk") && printed.contains("replay: party-sim --seed"),
                "{printed}"
            );
        } else if args.contains(&"--inject") {
            assert!(
                !output.status.success(),
                "{command}: an injected bug must fail seeds"
            );
            assert!(
                printed.contains("FAILED") && printed.contains("replay: party-sim --seed"),
                "{printed}"
            );
        } else {
            assert!(output.status.success(), "{command}:\n{printed}");
            assert!(
                printed.contains("0 failed") || printed.contains("trace hash"),
                "{printed}"
            );
        }
        ran += 1;
    }
    assert_eq!(ran, 4, "every simulator command of the README ran");
}

/// A reader that stops early (`party-sim --seed N | head`) ends the run quietly.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let output = Command::new("bash")
        .args(["-c", r#"set -o pipefail; "$0" --seed 7 | head -1"#])
        .arg(env!("CARGO_BIN_EXE_party-sim"))
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout.iter().filter(|b| **b == b'\n').count(), 1);
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The checkout the tests run in: cargo names it when it runs them (a name built in at
/// compile time is that of whichever checkout built the binary into a shared target dir;
/// it stands in when the binary is run by hand).
fn checkout_dir() -> std::path::PathBuf {
    let package =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&package).join("..")
}
