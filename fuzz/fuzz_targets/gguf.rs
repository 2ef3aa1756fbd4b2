//! Input: arbitrary bytes, parsed as a GGUF file. Runs what a model loader does with a file:
//! `GgufFile::from_bytes`, then every tensor's data and every typed metadata getter, then
//! writes the file again. Errors are fine; a panic, an abort (allocation from an unchecked
//! count, unbounded recursion) or a broken invariant is a finding.
#![no_main]

use fedtune_llm::gguf::{GgufFile, GgufWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    check(&file, data.len());
    // Whatever parses can be written again; what is written parses, and writing that again
    // gives the same bytes (the writer's layout is canonical).
    let bytes = rewrite(&file);
    let again = GgufFile::from_bytes(bytes.clone()).expect("a rewritten file parses");
    check(&again, bytes.len());
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in again.tensors().iter().zip(file.tensors()) {
        assert_eq!(
            (&a.name, &a.dims, a.ty, a.n_bytes),
            (&b.name, &b.dims, b.ty, b.n_bytes)
        );
        assert_eq!(again.tensor_data(a), file.tensor_data(b));
    }
    assert!(again
        .metadata()
        .iter()
        .map(|(k, _)| k)
        .eq(file.metadata().iter().map(|(k, _)| k)));
    assert_eq!(rewrite(&again), bytes);
});

fn check(file: &GgufFile, len: usize) {
    assert!(matches!(file.version(), 2 | 3));
    assert!(file.alignment().is_power_of_two());
    assert_eq!(file.data_offset() % file.alignment(), 0);
    assert_eq!(file.file_size(), len as u64);
    for t in file.tensors() {
        assert_eq!(
            file.tensor_data(t).len(),
            t.n_bytes,
            "tensor {} data",
            t.name
        );
        assert_eq!(t.offset % file.alignment(), 0);
        assert!(std::ptr::eq(
            file.tensor(&t.name).expect("tensor by name"),
            t
        ));
        let _ = (t.n_elements(), t.row_len(), t.n_rows());
    }
    let m = file.metadata();
    for (key, value) in m.iter() {
        assert!(std::ptr::eq(m.get(key).expect("key by name"), value));
        let _ = (
            m.get_str(key),
            m.get_u64(key),
            m.get_u32(key),
            m.get_i64(key),
        );
        let _ = (m.get_f32(key), m.get_bool(key));
        let _ = (
            m.get_str_array(key),
            m.get_f32_array(key),
            m.get_i32_array(key),
        );
        let _ = value.to_string();
    }
}

fn rewrite(file: &GgufFile) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata().iter() {
        w.add_kv(key, value.clone());
    }
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t).to_vec())
            .expect("a tensor that parsed can be written");
    }
    w.to_bytes().expect("a file that parsed can be written")
}
