//! Builds the WebAssembly components the tests load: the shipped plugins (`plugins/`), the test
//! guests (`tests/guests/`) and the Rust example plugins (`examples/plugins/`), each a cargo
//! workspace of its own, with a nested
//! `cargo build --release --target wasm32-wasip2`. Writes `$OUT_DIR/wasm_paths.rs` with one
//! constant per component holding the absolute path of its `.wasm` file.
//!
//! The nested builds use a target dir of their own next to this build's (e.g.
//! `target/debug/wasm`): sharing the outer target dir would wait forever on the lock the outer
//! cargo holds while it runs this script.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target the components are built for.
const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo (or the person running it) set that would change or break the
/// nested builds: target and target-dir overrides, flags meant for the host target, wrappers
/// (`cargo clippy` sets `RUSTC_WORKSPACE_WRAPPER`), and profile overrides that would replace
/// the size-tuned release profiles of the wasm workspaces.
const REMOVED_VARS: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    // What cargo sets for this build script only; stale values would leak into the nested
    // compilations (`option_env!("OUT_DIR")` and the like).
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
];

/// Prefixes of further variables removed for the same reasons.
const REMOVED_PREFIXES: &[&str] =
    &["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "CARGO_PROFILE_", "DEP_", "__CARGO"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("tests/ lives in the repository root").to_owned();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    for watched in ["plugins", "tests/guests", "examples/plugins", "plugin-sdk", "wit"] {
        watch(&root.join(watched));
    }
    println!("cargo:rerun-if-changed=build.rs");

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_target_installed(Path::new(&rustc));

    // `OUT_DIR` is `<target>/<profile>/build/<pkg>-<hash>/out`: three levels up is the profile
    // dir, whose `wasm` subdir survives changes of this package's hash (and so keeps the nested
    // builds incremental). Falls back to `OUT_DIR` itself if the layout ever differs.
    let wasm_target_dir =
        out_dir.ancestors().nth(3).map_or_else(|| out_dir.join("wasm"), |dir| dir.join("wasm"));

    let mut constants = BTreeMap::new();
    for workspace in ["plugins", "tests/guests", "examples/plugins"] {
        let workspace_dir = root.join(workspace);
        build(&workspace_dir, &wasm_target_dir);
        for (package, dir) in members(&workspace_dir) {
            let wasm = wasm_target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", package.replace('-', "_")));
            assert!(
                wasm.is_file(),
                "{}: built, but {} is missing (is `{package}` a workspace member with crate-type = [\"cdylib\"]?)",
                workspace_dir.display(),
                wasm.display(),
            );
            let constant = package.to_uppercase().replace('-', "_");
            let previous = constants.insert(constant.clone(), (package.clone(), dir, wasm));
            assert!(previous.is_none(), "two components map to the constant {constant}");
        }
    }

    fs::write(out_dir.join("wasm_paths.rs"), paths_source(&root, &constants))
        .expect("cannot write $OUT_DIR/wasm_paths.rs");
}

/// Fails with the fix if the standard library for [`TARGET`] is not installed.
fn check_target_installed(rustc: &Path) {
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", rustc.display()));
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let installed = output.status.success()
        && fs::read_dir(&libdir).is_ok_and(|mut entries| {
            entries.any(|entry| entry.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        });
    assert!(
        installed,
        "the {TARGET} target is not installed (no standard library in {}): run `rustup target add {TARGET}`",
        libdir.display(),
    );
}

/// Runs the nested release build of the cargo workspace in `workspace_dir`.
fn build(workspace_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_dir)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        if REMOVED_VARS.contains(&&*name) || REMOVED_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(&*name);
        }
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run cargo for {}: {error}", workspace_dir.display()));
    if !output.status.success() {
        panic!(
            "building {} for {TARGET} failed ({}).\n\
             If the error says the lock file needs updating, run `cargo build --release` in that \
             directory and commit its Cargo.lock.\n\
             --- stdout\n{}\n--- stderr\n{}",
            workspace_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// The packages of the workspace in `workspace_dir`: each subdirectory with a `Cargo.toml` (or,
/// for an example, a `rust/Cargo.toml` beside its other languages), by the package name it
/// declares.
fn members(workspace_dir: &Path) -> Vec<(String, PathBuf)> {
    let entries = fs::read_dir(workspace_dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", workspace_dir.display()));
    let mut members: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .map(|dir| if dir.join("rust/Cargo.toml").is_file() { dir.join("rust") } else { dir })
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| {
            let manifest = dir.join("Cargo.toml");
            let text = fs::read_to_string(&manifest)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", manifest.display()));
            (package_name(&text).unwrap_or_else(|| panic!("no package name in {}", manifest.display())), dir)
        })
        .collect();
    members.sort();
    members
}

/// The `name` of the `[package]` table of a manifest, read line by line: enough for the
/// manifests of this repository, without a TOML parser as a build dependency.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// The source of `wasm_paths.rs`.
fn paths_source(root: &Path, constants: &BTreeMap<String, (String, PathBuf, PathBuf)>) -> String {
    let mut source = String::from("// Generated by tests/build.rs.\n");
    let mut table = String::new();
    for (constant, (package, dir, wasm)) in constants {
        let dir = dir.strip_prefix(root).unwrap_or(dir);
        let wasm = wasm.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", wasm.display()));
        // `{:?}` writes a Rust string literal, escapes included.
        let _ = writeln!(
            source,
            "\n/// The `{package}` component (`{}`), built for {TARGET} in release.\npub const {constant}: &str = {wasm:?};",
            dir.display(),
        );
        let _ = writeln!(table, "    ({package:?}, {constant}),");
    }
    let _ = write!(
        source,
        "\n/// Every component above, by package name.\npub const ALL: &[(&str, &str)] = &[\n{table}];\n"
    );
    source
}

/// Asks cargo to rerun this script when a file that goes into the components changes: sources,
/// manifests, lock files, cargo configs and WIT files, not build outputs.
fn watch(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if name != "target" && (name == ".cargo" || !name.starts_with('.')) {
                watch(&path);
            }
        } else if name.ends_with(".rs")
            || name.ends_with(".wit")
            || name.ends_with(".toml")
            || name == "Cargo.lock"
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
