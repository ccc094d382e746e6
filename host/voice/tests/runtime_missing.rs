//! A process that has not loaded ONNX Runtime yet gets a clear error, not a
//! panic, for a missing or broken library (its own test binary: the library
//! loads once per process).

use std::path::Path;

use sandpiper_voice::runtime::environment;

fn error_for(path: &Path) -> String {
    match environment(path) {
        Ok(_) => panic!("{} loaded as ONNX Runtime", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_or_broken_library_is_a_clear_error() {
    let msg = error_for(Path::new("/nonexistent/libonnxruntime.so"));
    assert!(
        msg.contains("does not exist") && msg.contains("onnxruntime==1.32.0"),
        "{msg}"
    );

    // A file that is not a shared library: dlopen fails inside ort.
    let dir = std::env::temp_dir().join(format!("sandpiper-voice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bogus = dir.join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a library").unwrap();
    let msg = error_for(&bogus);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        msg.contains("cannot load ONNX Runtime") && msg.contains("pip install"),
        "{msg}"
    );
}
