#!/usr/bin/env python3
"""Golden token ids from llama.cpp for SmolLM2-135M-Instruct's tokenizer.

Loads the GGUF with llama-cpp-python (vocab only) and tokenizes a fixed set of texts with
llama.cpp's llama_tokenize (Llama.tokenize(text, add_bos=add_special, special=parse_special)):
Shakespeare from shared/data/shakespeare/plays.jsonl (archaic spellings, apostrophes, verse line
breaks), Unicode (accents, combining marks, CJK, emoji), runs of spaces/tabs/newlines,
leading/trailing spaces, digits and long numbers, punctuation runs, chat-template special tokens
with special-token parsing on and off, and the empty string.

The same vocabulary is also tokenized under other pre-tokenizers: for each name in OTHER_PRES
a vocab-only copy of the GGUF with that tokenizer.ggml.pre is written (gguf-py) to a temporary
directory and loaded by llama.cpp; those cases carry a "pre" field.

SentencePiece ("llama" vocabularies) is checked on a vocabulary derived from SmolLM2's by a
fixed rule that the Rust test repeats (spm_from_bpe): <unk>, <s>, </s>, the 256 <0xNN> byte
tokens, then every normal SmolLM2 token whose bytes are valid UTF-8, spaces written as U+2581,
first occurrence kept, score = -(SmolLM2 id). Those cases carry "vocab": "spm".

Writes llm/tests/fixtures/tokenizer/smollm2.json: a list of
{"text", "add_special", "parse_special", "ids"[, "pre" | "vocab"]}; llm/tests/tokenizer_smollm2.rs
checks that fedtune's tokenizer gives the same ids.

Run:  scripts/fetch-model.sh && scripts/reference/setup-llama.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_tokens.py
"""
import json
import os
import sys
import tempfile

import gguf
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "llm", "tests", "fixtures", "tokenizer", "smollm2.json")
MODEL = os.path.join(os.path.expanduser("~"), ".cache", "fedtune", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
PLAYS_CANDIDATES = [
    os.path.join(ROOT, "..", "shared", "data", "shakespeare", "plays.jsonl"),
    "/work/shared/data/shakespeare/plays.jsonl",
]


def shakespeare():
    """A few utterances picked by content, in file order (deterministic)."""
    path = next((p for p in PLAYS_CANDIDATES if os.path.exists(p)), None)
    if path is None:
        sys.exit("plays.jsonl not found (looked in: %s)" % ", ".join(PLAYS_CANDIDATES))
    wanted = [
        lambda t: t == "Who's there?",
        lambda t: "'tis" in t and "\n" in t,
        lambda t: "'Tis" in t and len(t) < 200,
        lambda t: "o'er" in t and "\n" in t,
        lambda t: "[" in t and "]_" in t,  # stage directions in brackets and underscores
        lambda t: "thou" in t and "thee" in t and t.count("\n") >= 3,
        lambda t: ";" in t and "!" in t and "?" in t and len(t) > 300,
        lambda t: "--" in t,
        lambda t: "&" in t or "æ" in t.lower() or "é" in t,
    ]
    found = [None] * len(wanted)
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            for i, pred in enumerate(wanted):
                if found[i] is None and pred(text) and text not in found:
                    found[i] = text
            if all(x is not None for x in found):
                break
    return [t for t in found if t is not None]


PLAIN = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  leading and trailing  ",
    "Thou art more lovely and more temperate:\nRough winds do shake the darling buds of May,\n",
    "'Tis nobler in the mind to suffer; o'er the hills, ne'er, th' army's, I'll, you're, we've, he'd, I'M",
    "Who's there?\nNay, answer me: stand, and unfold yourself.",
    "spaces   between    words\t\ttabs\t \t mixed\n\n\nnewlines\r\nCRLF\r\n",
    "\n",
    "\n\n",
    "    indented code:\n        return x\n",
    "a\u00a0non-breaking\u2003em-space\u3000ideographic space",
    "café naïve façade résumé Ångström Øre smörgåsbord",
    "combining: e\u0301 a\u0308 n\u0303",
    "日本語のテキストと中文字符，한국어도。",
    "emoji 🎉🚀👍🏽 👨‍👩‍👧 ❤️ done",
    "Ελληνικά και Русский текст, עברית, العربية",
    "digits 0 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-11-25 0x1F",
    "9876543210987654321098765432109876543210",
    "½ ² ③ ٣ ۴ Ⅻ",
    "punctuation!!! ??? ... --- ;;; ::: (((nested))) [brackets] {braces} <angles>",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "\"quoted\" 'single' «guillemets» “curly” ‘apostrophes’",
    "mixed123abc ABC123 a1b2c3 test_case CamelCase snake_case",
    "https://example.com/path?q=1&r=2#frag user@example.com",
    "<|im_start|> looks special but is plain text here <|im_end|>",
    "<|endoftext|>",
    "<repo_name>fedtune<file_sep>src/main.rs",
    "\t",
    "a",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
]

SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|> user \n spaced <|im_end|> \n",
    "text<|endoftext|>more text<|endoftext|>",
    "<|im_end|><|im_end|><|im_start|>",
    "<|im_start|",
    "<repo_name>fedtune<file_sep>src/main.rs",
]


# Pre-tokenizer families to check besides the file's own "smollm" (one name per family).
OTHER_PRES = ["gpt-2", "default", "llama-bpe", "qwen2", "falcon", "dbrx"]


def vocab_copy(src, pre, path):
    """Writes the metadata of `src` (no tensors) to `path` with tokenizer.ggml.pre = pre."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(path, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        value = pre if name == "tokenizer.ggml.pre" else field.contents()
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def byte_decoder():
    """GPT-2's byte-level alphabet, character -> byte."""
    direct = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    moved = [b for b in range(256) if b not in direct]
    table = {chr(b): b for b in direct}
    table.update({chr(256 + k): b for k, b in enumerate(moved)})
    return table


def spm_from_bpe(tokens, types):
    """The SentencePiece vocabulary derived from a byte-level one (see the module doc)."""
    dec = byte_decoder()
    out = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    out += [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
    seen = {t for t, _, _ in out}
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty != 1:
            continue
        try:
            text = bytes(dec[c] for c in tok).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue
        text = text.replace(" ", "\u2581")
        if text in seen:
            continue
        seen.add(text)
        out.append((text, float(-i), 1))
    return out


def spm_copy(src, path):
    """A vocab-only GGUF with the SentencePiece vocabulary derived from `src`'s."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(path, arch)
    for name, field in reader.fields.items():
        if name.startswith(("GGUF.", "tokenizer.")) or name in ("general.architecture", arch + ".vocab_size"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    vocab = spm_from_bpe(reader.fields["tokenizer.ggml.tokens"].contents(),
                         reader.fields["tokenizer.ggml.token_type"].contents())
    writer.add_tokenizer_model("llama")
    writer.add_token_list([t for t, _, _ in vocab])
    writer.add_token_scores([s for _, s, _ in vocab])
    writer.add_token_types([ty for _, _, ty in vocab])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    if not os.path.exists(MODEL):
        sys.exit("model not found: %s (run scripts/fetch-model.sh)" % MODEL)
    llm = llama_cpp.Llama(model_path=MODEL, vocab_only=True, verbose=False)

    cases = []

    def add(text, add_special, parse_special):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
        cases.append(dict(text=text, add_special=add_special, parse_special=parse_special, ids=list(ids)))

    for text in shakespeare() + PLAIN:
        add(text, False, False)
    for text in ["Hello world", "", "<|im_start|>user\nhi<|im_end|>"]:
        add(text, True, False)
        add(text, True, True)
    for text in SPECIAL:
        add(text, False, True)
        add(text, False, False)

    with tempfile.TemporaryDirectory() as tmp:
        for pre in OTHER_PRES:
            path = os.path.join(tmp, "vocab-%s.gguf" % pre)
            vocab_copy(MODEL, pre, path)
            other = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            for text in shakespeare()[:3] + PLAIN:
                ids = other.tokenize(text.encode("utf-8"), add_bos=False, special=False)
                cases.append(dict(text=text, add_special=False, parse_special=False, ids=list(ids), pre=pre))
            del other

        path = os.path.join(tmp, "vocab-spm.gguf")
        spm_copy(MODEL, path)
        spm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        for text in shakespeare()[:3] + PLAIN + ["<s>Hello</s> world", "</s><s>", " <s> x"]:
            for add_special, parse_special in [(False, False), (True, False), (True, True)]:
                ids = spm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
                cases.append(dict(text=text, add_special=add_special, parse_special=parse_special,
                                  ids=list(ids), vocab="spm"))
        del spm

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()
