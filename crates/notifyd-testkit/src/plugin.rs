//! Builds provider plugins for tests: Rust cdylibs with cargo, C sources with
//! the system compiler. Each is built at most once per test process.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

/// The cargo profile the calling tests were built with, and so the one to
/// build plugins with: `debug` for `cargo test`, `release` for `cargo bench`
/// and `--release`.
const PROFILE_DIR: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

/// The workspace root, found at compile time from this crate's location
/// (`crates/notifyd-testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("notifyd-testkit lives two levels below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set (a relative one is
/// taken relative to the workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Builds the cdylib of workspace package `package` with
/// `cargo build --quiet -p <package>` (in the same profile as the calling
/// test) and returns the path of `lib<lib_name>.so` in the target directory.
///
/// Cargo runs at most once per package and process, however many tests ask
/// at the same time; `$CARGO` picks the cargo binary (cargo sets it for
/// tests), else `cargo` from `PATH`.
///
/// # Panics
///
/// If cargo fails (the message quotes its stderr) or the library is not where
/// it should be.
pub fn cargo_plugin(package: &str, lib_name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let library = target_dir().join(PROFILE_DIR).join(library_file(lib_name));
    // Held during the build, so that parallel tests wait for the first one.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if built.iter().any(|known| known == package) {
        return library;
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command.args(["build", "--quiet", "-p", package]).current_dir(workspace_root());
    if PROFILE_DIR == "release" {
        command.arg("--release");
    }
    let what = format!("cargo build -p {package} (cargo: {})", Path::new(&cargo).display());
    check_success(&what, command.output());
    assert!(
        library.is_file(),
        "{what} succeeded, but {} does not exist: is the library name {lib_name:?} right \
         and is its crate-type cdylib?",
        library.display()
    );
    built.push(package.to_owned());
    library
}

/// Compiles the C plugin `source` into
/// `<target>/notifyd-c-plugins/lib<lib_name>.so` and returns that path, with
/// `cc -std=c11 -Wall -Wextra -Werror -O1 -fPIC -shared -I<workspace>/include`
/// (`$CC` replaces `cc` if set), so `#include "notifyd_plugin.h"` works.
///
/// Compiles at most once per name and process. The library is written under
/// a temporary name and then renamed, so another test process loading the
/// same library never sees a half-written file.
///
/// # Panics
///
/// If compilation fails (the message quotes the compiler's output), or if the
/// same `lib_name` was already used for a different source in this process.
pub fn c_plugin(source: &Path, lib_name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

    let out_dir = target_dir().join("notifyd-c-plugins");
    let library = out_dir.join(library_file(lib_name));
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, known)) = built.iter().find(|(name, _)| name == lib_name) {
        assert_eq!(known, source, "c_plugin: {lib_name:?} was already built from another source");
        return library;
    }

    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("create {}: {e}", out_dir.display()));
    let partial = out_dir.join(format!(".{}.{}.partial", library_file(lib_name), std::process::id()));
    let compiler = std::env::var_os("CC").filter(|cc| !cc.is_empty()).unwrap_or_else(|| OsString::from("cc"));
    let mut command = Command::new(&compiler);
    command
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-fPIC", "-shared"])
        .arg(format!("-I{}", workspace_root().join("include").display()))
        .arg("-o")
        .arg(&partial)
        .arg(source);
    let what = format!("compiling {} with {}", source.display(), Path::new(&compiler).display());
    let output = command.output();
    if !matches!(&output, Ok(done) if done.status.success()) {
        // Whatever the compiler left behind is of no use.
        let _ = fs::remove_file(&partial);
    }
    check_success(&what, output);
    fs::rename(&partial, &library)
        .unwrap_or_else(|e| panic!("move {} to {}: {e}", partial.display(), library.display()));
    built.push((lib_name.to_owned(), source.to_owned()));
    library
}

/// `lib<name>.so` on Linux; the platform's spelling elsewhere.
fn library_file(lib_name: &str) -> String {
    format!("{DLL_PREFIX}{lib_name}{DLL_SUFFIX}")
}

/// Panics unless the command ran and succeeded, quoting its output.
fn check_success(what: &str, output: std::io::Result<Output>) {
    let output = output.unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest =
            fs::read_to_string(workspace_root().join("Cargo.toml")).expect("read the workspace Cargo.toml");
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert!(workspace_root().join("include/notifyd_plugin.h").is_file());
    }

    #[test]
    fn library_file_uses_the_platform_naming() {
        if cfg!(target_os = "linux") {
            assert_eq!(library_file("notifyd_x"), "libnotifyd_x.so");
        }
    }
}
