//! The dependency direction of DESIGN.md, checked on the real dependency graph, and the
//! sans-IO rules of party-proto and the simulator, checked on their source.

use std::path::{Path, PathBuf};
use std::process::Command;

/// This package's directory, as cargo names it when it runs the tests (a name built in at
/// compile time is that of whichever checkout built the binary into a shared target dir;
/// it stands in when the binary is run by hand).
fn package_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

fn dependency_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree", "--edges", "normal", "--prefix", "none", "-p", package,
        ])
        .current_dir(package_dir())
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

/// The wire's types stay inside party-core: its API has types of its own, so the protocol
/// can change without breaking callers.
#[test]
fn party_core_reexports_nothing_of_party_proto() {
    let lib = package_dir().join("../party-core/src/lib.rs");
    let code = code_only(&std::fs::read_to_string(&lib).unwrap());
    let mut exported = Vec::new();
    for (at, _) in code.match_indices("pub use ") {
        let tree = &code[at + "pub use ".len()..];
        let tree = tree[..tree.find(';').unwrap()]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        use_paths("", &tree, &mut exported);
    }
    assert!(
        exported.iter().any(|path| path.ends_with("error::Error")),
        "sanity: {exported:?}"
    );
    let wire: Vec<_> = exported
        .iter()
        .filter(|path| occurs(path, "party_proto"))
        .collect();
    assert!(wire.is_empty(), "party-core re-exports {wire:?}");
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

/// The clock.
const CLOCK: &[&str] = &["Instant", "SystemTime", "UNIX_EPOCH"];
/// The OS random source. (std's `HashMap::new` seeds its hasher from it too; that stays
/// allowed while nothing depends on the iteration order of a `HashMap` or `HashSet`.)
const RANDOMNESS: &[&str] = &["rand::", "getrandom", "RandomState", "thread_rng"];
/// Files and sockets.
const FILES_AND_NETWORK: &[&str] = &[
    "std::fs",
    "std::net",
    "std::os::unix::net",
    "File",
    "OpenOptions",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "UnixListener",
];
/// Runtimes, threads and the process around.
const RUNTIME_AND_PROCESS: &[&str] = &["tokio", "std::thread", "std::process", "std::env"];
/// The terminal.
const STDIO: &[&str] = &[
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "print!",
    "println!",
    "eprint!",
    "eprintln!",
];

/// The Rust files under `dir`, relative to the workspace root.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    let root = package_dir()
        .join("..")
        .join(dir)
        .canonicalize()
        .unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "sanity: {} holds Rust files",
        root.display()
    );
    files
}

/// `source` with comments, strings and character literals blanked out (line breaks kept,
/// so line numbers still hold).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let at = |j: usize| chars.get(j).copied().unwrap_or('\0');
        let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if at(i) == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= chars.len() {
                    break;
                } else {
                    code.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if !ident_before && (at(i) == 'r' || (at(i) == 'b' && at(i + 1) == 'r')) && {
            let start = if at(i) == 'b' { i + 2 } else { i + 1 };
            let hashes = (start..).take_while(|&j| at(j) == '#').count();
            at(start + hashes) == '"'
        } {
            // A raw string: r"...", r#"..."#, br"...".
            let start = if at(i) == 'b' { i + 2 } else { i + 1 };
            let hashes = (start..).take_while(|&j| at(j) == '#').count();
            let body = start + hashes + 1;
            let mut end = body;
            while end < chars.len()
                && !(chars[end] == '"' && (1..=hashes).all(|k| at(end + k) == '#'))
            {
                end += 1;
            }
            let end = (end + 1 + hashes).min(chars.len());
            code.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if at(i) == '"' {
            code.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let step = if chars[i] == '\\' { 2 } else { 1 };
                for _ in 0..step {
                    code.push(blank(at(i)));
                    i += 1;
                }
            }
            code.push(' ');
            i += 1;
        } else if at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            // After an escape's backslash comes at least one character ('\'').
            let mut end = if at(i + 1) == '\\' { i + 3 } else { i + 2 };
            while end < chars.len() && chars[end] != '\'' {
                end += 1;
            }
            let end = (end + 1).min(chars.len());
            code.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else {
            code.push(chars[i]);
            i += 1;
        }
    }
    code
}

/// Every path a `use` tree names: `std::{fs, io::{self, Read}}` gives `std::fs`,
/// `std::io::self` and `std::io::Read`.
fn use_paths(prefix: &str, tree: &str, paths: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        match item.find('{') {
            Some(open) => {
                let head = item[..open].trim_end_matches("::");
                let inner = &item[open + 1..item.rfind('}').unwrap_or(item.len())];
                use_paths(&format!("{prefix}{head}::"), inner, paths);
            }
            // `name as alias` names `name`.
            None => paths.push(format!(
                "{prefix}{}",
                item.split_whitespace().next().unwrap_or_default()
            )),
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where `pattern` occurs in `text` as a whole path or word (a path may go on: `std::fs`
/// matches `std::fs::read`, not `std::fsx`).
fn occurs(text: &str, pattern: &str) -> bool {
    text.match_indices(pattern).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + pattern.len()..].chars().next();
        let starts_word = !pattern.starts_with(is_ident) || !before.is_some_and(is_ident);
        let ends_word = !pattern.ends_with(is_ident) || !after.is_some_and(is_ident);
        starts_word && ends_word
    })
}

/// The lines of `source` (1-based) that use one of `forbidden`, outside comments and
/// literals, with what they use.
fn forbidden_uses(source: &str, forbidden: &[&[&str]]) -> Vec<(usize, String)> {
    let code = code_only(source);
    // Paths spelt with spaces (`std :: fs`) count too.
    let code = code.replace(" ::", "::").replace(":: ", "::");
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for pattern in forbidden.iter().copied().flatten() {
            if occurs(line, pattern) {
                found.push((n + 1, pattern.to_string()));
            }
        }
    }
    // Grouped imports (`use std::{fs, io};`), which may span lines.
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let offset = code.len() - rest.len() + at;
        let starts_word = !code[..offset].chars().next_back().is_some_and(is_ident);
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        if starts_word {
            let line = code[..offset].matches('\n').count() + 1;
            let tree: String = rest[at + 4..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let mut paths = Vec::new();
            use_paths("", &tree, &mut paths);
            for path in paths {
                for pattern in forbidden.iter().copied().flatten() {
                    if occurs(&path, pattern) && !found.contains(&(line, pattern.to_string())) {
                        found.push((line, pattern.to_string()));
                    }
                }
            }
        }
        rest = &rest[end.min(rest.len())..];
        if rest.len() <= 1 {
            break;
        }
        rest = &rest[1..];
    }
    found.sort();
    found
}

/// Fails listing every forbidden use in the Rust files under `dir` but those `allowed`
/// (file name, line text fragment, why).
fn assert_source_avoids(
    dir: &str,
    skip_dir: Option<&str>,
    forbidden: &[&[&str]],
    allowed: &[(&str, &str, &str)],
) {
    let mut uses = Vec::new();
    for file in rust_files(dir) {
        if skip_dir.is_some_and(|skip| file.components().any(|c| c.as_os_str() == skip)) {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        for (line, pattern) in forbidden_uses(&source, forbidden) {
            let text = lines.get(line - 1).copied().unwrap_or_default().trim();
            let name = file.file_name().unwrap().to_string_lossy();
            if allowed
                .iter()
                .any(|(file, fragment, _)| name == *file && text.contains(fragment))
            {
                continue;
            }
            uses.push(format!("{}:{line}: {pattern}: {text}", file.display()));
        }
    }
    assert!(uses.is_empty(), "forbidden in {dir}:\n{}", uses.join("\n"));
}

#[test]
fn proto_source_uses_no_clock_files_network_runtime_or_randomness() {
    assert_source_avoids(
        "party-proto/src",
        None,
        &[
            CLOCK,
            RANDOMNESS,
            FILES_AND_NETWORK,
            RUNTIME_AND_PROCESS,
            STDIO,
        ],
        &[],
    );
}

#[test]
fn simulator_source_uses_no_clock_files_network_or_randomness() {
    // The library: everything a seed's run goes through.
    assert_source_avoids(
        "sim/src",
        Some("bin"),
        &[
            CLOCK,
            RANDOMNESS,
            FILES_AND_NETWORK,
            RUNTIME_AND_PROCESS,
            STDIO,
        ],
        &[],
    );
    // The binary reads its arguments and prints; it times a range of seeds for its
    // seeds-per-second report, and a thread beside a sweep tells each minute which seed
    // runs since when: clocks no run reads. And it reads the recordings `--replay DIR`
    // names, whose bytes it hands to the library.
    assert_source_avoids(
        "sim/src/bin",
        None,
        &[
            CLOCK,
            RANDOMNESS,
            FILES_AND_NETWORK,
            &["tokio", "std::thread"],
        ],
        &[
            (
                "party-sim.rs",
                "use std::time::{Duration, Instant};",
                "the throughput and progress reports",
            ),
            (
                "party-sim.rs",
                "type Running = Mutex<(u64, Instant)>;",
                "the progress report: it reads the sweep, never steers it",
            ),
            (
                "party-sim.rs",
                "= (seed, Instant::now());",
                "the progress report: it reads the sweep, never steers it",
            ),
            (
                "party-sim.rs",
                "std::thread::scope(|scope| {",
                "the progress report's thread, beside the sweep",
            ),
            (
                "party-sim.rs",
                "let started = Instant::now();",
                "the throughput report",
            ),
            (
                "party-sim.rs",
                "std::fs::read_dir(dir)",
                "the recordings --replay names",
            ),
            (
                "party-sim.rs",
                "std::fs::read(&path)",
                "the recordings --replay names",
            ),
        ],
    );
}

/// The scanner itself: it sees through comments and literals and into grouped imports.
#[test]
fn the_source_scanner_finds_what_it_should_and_only_that() {
    let source = r##"
        // std::fs::read in a comment
        /* Instant::now() in /* a nested */ block */
        let s = "std::net::TcpStream in a string";
        let r = r#"tokio in a "raw" string"#;
        let c = '"'; let q = '\''; let l: &'static str = "x";
        use std::{collections::HashMap, fs};
        use std::time::{
            Duration,
            Instant as Clock,
        };
        let t = std :: env :: var("X");
        let ok = world.rand(0, 1) + instants + my_file;
        let r = rand::random::<u8>();
    "##;
    let found = forbidden_uses(
        source,
        &[CLOCK, RANDOMNESS, FILES_AND_NETWORK, RUNTIME_AND_PROCESS],
    );
    let found: Vec<(usize, &str)> = found.iter().map(|(n, p)| (*n, p.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (7, "std::fs"),
            (8, "Instant"),
            (10, "Instant"),
            (12, "std::env"),
            (14, "rand::")
        ]
    );
}
