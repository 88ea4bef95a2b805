//! The plugin builders, with the real C compiler and cargo.

use std::panic::{self, AssertUnwindSafe};

use notifyd_testkit::{c_plugin, cargo_plugin, target_dir};

fn panic_message(run: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(run)).expect_err("should have panicked");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn a_c_plugin_is_compiled_once_against_the_abi_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("plugin.c");
    std::fs::write(
        &source,
        "#include \"notifyd_plugin.h\"\n\
         int notifyd_testkit_abi_major(void) { return NOTIFYD_ABI_MAJOR; }\n",
    )
    .expect("write C source");

    let library = c_plugin(&source, "notifyd_testkit_ok");

    assert_eq!(library, target_dir().join("notifyd-c-plugins/libnotifyd_testkit_ok.so"));
    let bytes = std::fs::read(&library).expect("read the library");
    assert_eq!(&bytes[..4], b"\x7fELF");
    let built_at = std::fs::metadata(&library).and_then(|meta| meta.modified());

    // The second call must not compile again: make that fail if it did.
    std::fs::write(&source, "this is not C").expect("overwrite C source");
    assert_eq!(c_plugin(&source, "notifyd_testkit_ok"), library);
    assert_eq!(std::fs::metadata(&library).and_then(|meta| meta.modified()).ok(), built_at.ok());
}

#[test]
fn a_c_compile_error_panics_with_the_compiler_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("broken.c");
    std::fs::write(&source, "int broken(void) { return undeclared_name; }\n").expect("write C source");

    let message = panic_message(|| {
        c_plugin(&source, "notifyd_testkit_broken");
    });

    assert!(message.contains("failed"), "{message}");
    assert!(message.contains("undeclared_name"), "{message}");
    assert!(!target_dir().join("notifyd-c-plugins/libnotifyd_testkit_broken.so").exists());
}

#[test]
fn reusing_a_c_plugin_name_for_another_source_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.c");
    let second = dir.path().join("second.c");
    std::fs::write(&first, "int first(void) { return 1; }\n").expect("write C source");
    std::fs::write(&second, "int second(void) { return 2; }\n").expect("write C source");
    c_plugin(&first, "notifyd_testkit_twice");

    let message = panic_message(|| {
        c_plugin(&second, "notifyd_testkit_twice");
    });

    assert!(message.contains("already built from another source"), "{message}");
}

#[test]
fn a_failing_cargo_build_panics_with_cargo_s_stderr() {
    let message = panic_message(|| {
        cargo_plugin("notifyd-testkit-no-such-package", "notifyd_nothing");
    });

    let (summary, stderr) = message.split_once('\n').unwrap_or((&message, ""));
    assert!(summary.contains("cargo build -p notifyd-testkit-no-such-package"), "{message}");
    assert!(summary.contains("failed"), "{message}");
    assert!(stderr.contains("notifyd-testkit-no-such-package"), "{message}");
}
