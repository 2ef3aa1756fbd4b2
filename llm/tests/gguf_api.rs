//! The GGUF module through its public API only, as a model loader outside the crate uses it:
//! build a small model file, write it to disk, map it back, and read weights and metadata.

use fedtune_llm::gguf::{GgufError, GgufFile, GgufWriter, Value};
use fedtune_llm::quant::GgmlType;

#[test]
fn write_file_then_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");

    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::from("llama"));
    w.add_kv("llama.block_count", Value::U32(2));
    w.add_kv("llama.rope.freq_base", Value::F32(10000.0));
    w.add_kv(
        "tokenizer.ggml.tokens",
        Value::Array(vec!["<s>".into(), "a".into(), "b".into()]),
    );
    w.add_kv(
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(3), Value::I32(1), Value::I32(1)]),
    );
    let emb: Vec<u8> = (0..3 * 4).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("token_embd.weight", &[4, 3], GgmlType::F32, emb.clone())
        .unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight",
        &[32, 4],
        GgmlType::Q8_0,
        vec![1; 4 * 34],
    )
    .unwrap();
    w.write_file(&path).unwrap();

    let file = GgufFile::open(&path).unwrap();
    let m = file.metadata();
    assert_eq!(m.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(m.get_u32("llama.block_count").unwrap(), Some(2));
    assert_eq!(m.get_f32("llama.rope.freq_base").unwrap(), Some(10000.0));
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap(),
        ["<s>", "a", "b"]
    );
    assert_eq!(
        m.get_i32_array("tokenizer.ggml.token_type")
            .unwrap()
            .unwrap(),
        [3, 1, 1]
    );
    assert!(matches!(
        m.get_u32("general.architecture"),
        Err(GgufError::WrongType { .. })
    ));

    let t = file.tensor("token_embd.weight").unwrap();
    assert_eq!((t.row_len(), t.n_rows()), (4, 3));
    assert_eq!(file.tensor_data(t), &emb[..]);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty, GgmlType::Q8_0);
    assert_eq!(q.n_bytes, 4 * 34);
    assert_eq!(q.offset % file.alignment(), 0);
    assert_eq!(
        file.tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["token_embd.weight", "blk.0.attn_q.weight"]
    );
}
