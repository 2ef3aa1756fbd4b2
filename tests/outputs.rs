//! Outputs never destroy what their path pointed to: special files are refused (and left as
//! they were), links are written through, and the refusal is one line naming the path once.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedtune");

fn quantize_to(out: &std::path::Path) -> std::process::Output {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tiny-shakespeare.gguf");
    Command::new(BIN)
        .args(["quantize", model])
        .arg(out)
        .args(["--type", "q8_0"])
        .output()
        .expect("fedtune runs")
}

#[cfg(unix)]
#[test]
fn a_special_file_given_as_output_is_refused_and_kept() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.gguf");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = quantize_to(&fifo);
    assert!(!out.status.success(), "writing over a named pipe must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert_eq!(line.matches("named pipe").count(), 1, "cause once: {line}");
    assert_eq!(
        line.matches(&*fifo.to_string_lossy()).count(),
        1,
        "path once: {line}"
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[cfg(unix)]
#[test]
fn a_link_given_as_output_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model-q8.gguf");
    let link = dir.path().join("latest.gguf");
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = quantize_to(&link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(&std::fs::read(&target).unwrap()[..4], b"GGUF");
}
