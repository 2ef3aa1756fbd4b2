#!/usr/bin/env python3
"""Golden token ids from llama.cpp for Gemma 3 270M's tokenizer (262,144 SentencePiece pieces).

Loads the GGUF with llama-cpp-python (vocab only) and tokenizes with llama.cpp's
llama_tokenize (Llama.tokenize(text, add_bos=add_special, special=parse_special)):
- 250 Shakespeare utterances from shared/data/shakespeare/plays.jsonl (every 97th, at most
  600 characters: verse breaks, archaic spellings, stage directions);
- golden_tokens.py's PLAIN texts (Unicode, CJK, emoji, digits, punctuation, URLs);
- whitespace runs: spaces, newlines and tabs of 1..40 (Gemma has user-defined pieces for runs
  of up to 31), mixed, leading and trailing; HTML tags (user-defined pieces too);
- Gemma's special tokens (<bos>, <eos>, <start_of_turn>, <end_of_turn>, <pad>, <mask>,
  [multimodal], <start_of_image>, <unused0>) with special-token parsing on and off, with and
  without BOS.

Writes llm/tests/fixtures/tokenizer/gemma3.json: a list of
{"text", "add_special", "parse_special", "ids"}; llm/tests/tokenizer_gemma3.rs checks that
fedtune's tokenizer gives the same ids.

Run:  scripts/fetch-model.sh gemma3 && scripts/reference/setup-llama.sh && \
      ~/.cache/fedtune/ref-venv/bin/python scripts/reference/golden_tokens_gemma3.py
"""
import json
import os
import sys

import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_tokens import PLAIN, PLAYS_CANDIDATES  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "llm", "tests", "fixtures", "tokenizer", "gemma3.json")
CACHE = os.environ.get("FEDTUNE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fedtune"))
MODEL = os.path.join(CACHE, "models", "gemma-3-270m-q4_k_m.gguf")


def shakespeare(count=250, step=97, longest=600):
    path = next((p for p in PLAYS_CANDIDATES if os.path.exists(p)), None)
    if path is None:
        sys.exit("plays.jsonl not found (looked in: %s)" % ", ".join(PLAYS_CANDIDATES))
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % step:
                continue
            text = json.loads(line)["text"]
            if len(text) <= longest and text not in out:
                out.append(text)
            if len(out) == count:
                break
    return out


def whitespace():
    out = []
    for n in [1, 2, 3, 4, 7, 8, 15, 16, 30, 31, 32, 33, 40]:
        out += [" " * n, "a" + " " * n + "b", "\n" * n, "x" + "\n" * n, "\t" * n + "y"]
    out += [
        " \n \n ", "\n \n", " \t\n\r\n", "end.   \n\n   start", "   \t\t  \n\n\n\t ",
        "two  spaces  between  words", "trailing   ", "   leading", "\u2581already\u2581escaped",
        "<div><span>html</span></div>", "<table><tr><td>1</td></tr></table>", "<h1>Title</h1>\n<p>x</p>",
        "<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>", "</div></iframe></footer>",
        "```python\ndef f(x):\n    return x * 2\n```",
    ]
    return out


SPECIAL = [
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nhi<end_of_turn>",
    "text<eos>more text<eos>",
    "<pad><mask>[multimodal]<start_of_image><end_of_image>",
    "<unused0> and <unused99>",
    " <start_of_turn> spaced <end_of_turn> ",
    "<start_of_turn",
    "<bos>",
    "[multimodal] is user-defined",
]


def main():
    if not os.path.exists(MODEL):
        sys.exit("model not found: %s (run scripts/fetch-model.sh gemma3)" % MODEL)
    llm = llama_cpp.Llama(model_path=MODEL, vocab_only=True, verbose=False)
    cases = []

    def add(text, add_special, parse_special):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
        cases.append(dict(text=text, add_special=add_special, parse_special=parse_special, ids=list(ids)))

    for text in shakespeare() + PLAIN + whitespace():
        add(text, False, False)
    for text in ["Hello world", "", " leading space", PLAIN[6]]:
        add(text, True, False)
    for text in SPECIAL:
        for add_special, parse_special in [(False, False), (False, True), (True, True)]:
            add(text, add_special, parse_special)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()
