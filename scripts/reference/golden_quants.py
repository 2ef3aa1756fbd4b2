#!/usr/bin/env python3
"""Golden fixtures for fedtune's block formats (llm/src/quant), made by gguf-py.

gguf-py (the `gguf` package from llama.cpp) decodes every llama.cpp block format in numpy
and encodes the simple ones exactly as ggml's reference `quantize_row_*_ref` does. This
script asks it for the expected answers so llm/tests/quant_golden.rs can check fedtune's
Rust code bit for bit against a real reference rather than hand-written expectations.

What it writes, into llm/tests/fixtures/quant/ (replacing what is there):
  index.tsv            one line per case: case, type, op, n, input file, expected file
                       (tab-separated; lines starting with '#' are comments)
  <case>.in.bin        the input
  <case>.out.bin       gguf-py's answer
Ops:
  dequantize  input = raw blocks of `type` (n values); expected = n little-endian f32
  quantize    input = n little-endian f32;             expected = raw blocks of `type`
Cases:
  <type>_dequantize_random  seeded random blocks of every format gguf-py decodes among F16,
                            BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K. Code bytes are
                            raw random bits; f16 scale fields are finite random f16 of
                            sensible magnitude (raw random bits would be NaN/Inf often
                            enough to make the comparison meaningless), except a few blocks
                            with zero, subnormal and largest-finite scales.
  <type>_quantize_edges     for F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: random f32 plus edge
                            cases (all-zero block, one huge value, negative max, ties,
                            constant block, subnormal scale, scale overflowing f16, ...).
  <type>_dequantize_edges   gguf-py's decoding of its own <type>_quantize_edges output.
  q8_1_quantize_edges,      gguf-py 0.19.0 has no codec for the activation formats Q8_1 and
  q8_k_quantize_edges,      Q8_K, so these come from ggml's own C reference
  q8_k_dequantize_edges     (quantize_row_q8_1_ref, quantize_row_q8_K_ref, dequantize_row_q8_K)
                            in the libggml-base.so that llama-cpp-python built, called through
                            ctypes. (ggml has no dequantize_row_q8_1.) ggml leaves the bsums of
                            an all-zero Q8_K block unwritten; the buffer it writes into is
                            zeroed, so they read as 0, which is what they sum to.
The index's 7th column names the reference (gguf-py or ggml).

Run (the venv comes from scripts/reference/setup-llama.sh: gguf==0.19.0, llama-cpp-python):
  "${FEDTUNE_REF_VENV:-$HOME/.cache/fedtune/ref-venv}/bin/python" \
      scripts/reference/golden_quants.py [--out DIR] [--skip-ggml]
--skip-ggml leaves out the ggml cases (and then quant_golden.rs reports them missing).
Deterministic: the same gguf/numpy/ggml versions give the same bytes.
"""

import argparse
import ctypes
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20240611
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "llm" / "tests" / "fixtures" / "quant"

# (fedtune name, gguf type, blocks for the random case, offsets of f16 scale fields)
RANDOM_FORMATS = [
    ("q4_0", T.Q4_0, 6, [0]),
    ("q4_1", T.Q4_1, 6, [0, 2]),
    ("q5_0", T.Q5_0, 6, [0]),
    ("q5_1", T.Q5_1, 6, [0, 2]),
    ("q8_0", T.Q8_0, 6, [0]),
    ("q2_k", T.Q2_K, 4, [80, 82]),
    ("q3_k", T.Q3_K, 4, [108]),
    ("q4_k", T.Q4_K, 4, [0, 2]),
    ("q5_k", T.Q5_K, 4, [0, 2]),
    ("q6_k", T.Q6_K, 4, [208]),
]

QUANT_FORMATS = [
    ("q8_0", T.Q8_0),
    ("q4_0", T.Q4_0),
    ("q4_1", T.Q4_1),
    ("q5_0", T.Q5_0),
    ("q5_1", T.Q5_1),
]


def f32_from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def random_f16(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """Finite f16 values, random sign, magnitude log-uniform in [10**lo, 10**hi]."""
    mag = 10.0 ** rng.uniform(lo, hi, n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    out = (sign * mag).astype(np.float16)
    assert np.all(np.isfinite(out))
    return out


def random_blocks(rng, qtype, n_blocks, f16_offsets) -> np.ndarray:
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in f16_offsets:
        scales = random_f16(rng, n_blocks, -4.0, 0.0)
        # the last three blocks: zero (±0), subnormal, largest finite scales
        scales[-3] = np.float16(-0.0) if off == f16_offsets[-1] else np.float16(0.0)
        scales[-2] = np.uint16(0x0001 if off == f16_offsets[0] else 0x83FF).view(np.float16)
        scales[-1] = np.float16(65504.0) if off == f16_offsets[0] else np.float16(-65504.0)
        raw[:, off:off + 2] = scales.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    return raw


def edge_blocks(rng) -> np.ndarray:
    """13 blocks of 32 f32 values covering the quantizers' corner cases."""
    b = []
    b.append(rng.standard_normal(32) * 0.05)                # typical weights
    b.append(np.zeros(32))                                  # all zero
    x = rng.standard_normal(32) * 0.1; x[5] = 1e4; b.append(x)      # one huge value
    x = rng.standard_normal(32) * 0.1; x[17] = -3.0; b.append(x)    # negative max
    b.append(rng.uniform(-1.0, 1.0, 32))                    # uniform
    b.append(np.arange(32) / 2.0 - 8.0)                     # half-integers, max = -8
    b.append(np.full(32, 0.3))                              # constant (q4_1/q5_1: d = 0)
    b.append(rng.standard_normal(32) * 1e-6)                # subnormal f16 scale
    x = rng.standard_normal(32); x[0] = 1e6; b.append(x)    # scale overflows f16 (q4_0...)
    x = np.zeros(32); x[1::2] = -0.0; x[3] = 1e-3; x[8] = -2e-3; b.append(x)  # signed zeros
    x = rng.standard_normal(32) * 0.5; x[2] = 2.0; x[9] = -2.0; b.append(x)  # |max| tie
    x = np.array([127.0, -127.0] + [k + 0.5 for k in range(-15, 15)]); b.append(x)  # .5 ties
    b.append(rng.standard_normal(32) * 100.0)               # wide range
    out = np.concatenate(b).astype(np.float32)
    # keep the signed zeros (astype of -0.0 is -0.0 already; be explicit)
    out[9 * 32 + 1:10 * 32:2] = np.float32(-0.0)
    return out


def f16_edges(rng) -> np.ndarray:
    vals = (10.0 ** rng.uniform(-9.0, 5.5, 96)) * np.where(rng.random(96) < 0.5, -1.0, 1.0)
    specials = [
        0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, -65520.0, 1e10, -1e10,
        np.inf, -np.inf, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -26, 2.0 ** -14,
        2.0 ** -14 - 2.0 ** -25, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -11 + 2.0 ** -20,
        -(1 + 2.0 ** -11), 2048.0 + 1.0, 2048.0 + 3.0, 1e-8, 6e-8, 0.1, 1 / 3,
    ]
    out = np.concatenate([np.array(specials, dtype=np.float64), vals]).astype(np.float32)
    nans = f32_from_bits([0x7FC00000, 0xFFC00000])  # quiet NaNs only: payload handling of
    # signalling NaNs differs between numpy's software path and hardware converters
    return np.concatenate([out, nans])


def bf16_edges(rng) -> np.ndarray:
    specials = f32_from_bits([
        0x00000000, 0x80000000, 0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF,
        0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
        0x7FBFFFFF, 0xFFFFFFFF, 0x7FFF8000, 0x00000001, 0x00008000, 0x00018000, 0x80018000,
        0x007FFFFF, 0x00800000, 0x4B7FFFFF,
    ])
    raw_bits = rng.integers(0, 2 ** 32, size=40, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = (rng.standard_normal(64) * 10.0 ** rng.uniform(-3, 3, 64)).astype(np.float32)
    return np.concatenate([specials, raw_bits, values])


class Writer:
    def __init__(self, out: Path):
        self.out = out
        self.rows = []

    def case(self, name: str, ty: str, op: str, n: int, inp: bytes, expected: bytes,
             reference: str = "gguf-py"):
        (self.out / f"{name}.in.bin").write_bytes(inp)
        (self.out / f"{name}.out.bin").write_bytes(expected)
        self.rows.append((name, ty, op, str(n), f"{name}.in.bin", f"{name}.out.bin", reference))

    def finish(self):
        lines = [
            "# Golden fixtures for llm/src/quant, generated by scripts/reference/golden_quants.py",
            f"# gguf {dist_version('gguf')} numpy {np.__version__} "
            f"llama-cpp-python {dist_version('llama_cpp_python')} seed {SEED}",
            "# case\ttype\top\tn\tinput\texpected\treference",
            "# dequantize: input = raw blocks, expected = n f32 (LE); "
            "quantize: input = n f32 (LE), expected = raw blocks",
        ]
        lines += ["\t".join(r) for r in self.rows]
        (self.out / "index.tsv").write_text("\n".join(lines) + "\n")


def dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def load_ggml() -> ctypes.CDLL:
    """libggml-base.so from the installed llama-cpp-python (not imported: no model loading)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        sys.exit("llama-cpp-python is not installed: run scripts/reference/setup-llama.sh "
                 "or pass --skip-ggml")
    lib = ctypes.CDLL(str(Path(spec.origin).parent / "lib" / "libggml-base.so"))
    f32p, voidp = ctypes.POINTER(ctypes.c_float), ctypes.c_void_p
    for name, args in [
        ("quantize_row_q8_1_ref", [f32p, voidp, ctypes.c_int64]),
        ("quantize_row_q8_K_ref", [f32p, voidp, ctypes.c_int64]),
        ("dequantize_row_q8_K", [voidp, f32p, ctypes.c_int64]),
    ]:
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = None
    return lib


def ggml_quantize(lib, fn_name: str, x: np.ndarray, row_bytes: int) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = ctypes.create_string_buffer(row_bytes)  # zeroed
    getattr(lib, fn_name)(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out, x.size)
    return out.raw


def ggml_dequantize(lib, fn_name: str, q: bytes, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    buf = ctypes.create_string_buffer(q, len(q))
    getattr(lib, fn_name)(buf, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
    return out


def q8k_edges(rng) -> np.ndarray:
    """6 blocks of 256 f32 values for Q8_K's quantizer."""
    b = []
    b.append(rng.standard_normal(256) * 0.05)
    b.append(np.zeros(256))
    x = rng.standard_normal(256); x[100] = -40.0; b.append(x)          # negative max
    x = rng.standard_normal(256) * 0.1; x[3] = 1e4; b.append(x)        # one huge value
    # max = -127 → iscale = 1: half-integers exercise round-half-to-even
    x = np.concatenate([[-127.0, 127.0], np.arange(-63, 64) + 0.5, np.arange(-63, 64) / 4.0])
    b.append(x)
    b.append(rng.standard_normal(256) * 1e-30)                          # tiny magnitudes
    return np.concatenate(b).astype(np.float32)


def le_f32(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--skip-ggml", action="store_true", help="leave out the Q8_1/Q8_K cases")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.bin")) + list(out.glob("index.tsv")):
        old.unlink()

    rng = np.random.default_rng(SEED)
    w = Writer(out)

    # --- dequantize: random raw data -------------------------------------------------------
    h = random_f16(rng, 48, -6.0, 4.5).view(np.uint16)
    specials = np.array([0x0000, 0x8000, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                         0x0001, 0x8001, 0x03FF, 0x0400, 0x7E00, 0xFE00, 0x7E01, 0x7FFF],
                        dtype=np.uint16)
    f16_raw = np.concatenate([specials, h]).astype("<u2")
    dec = quants.dequantize(f16_raw.view(np.float16).reshape(1, -1), T.F16)
    w.case("f16_dequantize_random", "f16", "dequantize", f16_raw.size, f16_raw.tobytes(), le_f32(dec))

    bf16_raw = rng.integers(0, 2 ** 16, size=64, dtype=np.uint32).astype("<u2")
    bf16_raw[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001]
    dec = quants.dequantize(bf16_raw.view(np.uint8).reshape(1, -1), T.BF16)
    w.case("bf16_dequantize_random", "bf16", "dequantize", bf16_raw.size, bf16_raw.tobytes(), le_f32(dec))

    for name, qtype, n_blocks, offsets in RANDOM_FORMATS:
        raw = random_blocks(rng, qtype, n_blocks, offsets)
        dec = quants.dequantize(raw.reshape(1, -1), qtype)
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        assert dec.size == n_blocks * block_size
        w.case(f"{name}_dequantize_random", name, "dequantize", dec.size, raw.tobytes(), le_f32(dec))

    # --- quantize: f32 inputs with edge cases ---------------------------------------------
    # Overflow to inf is one of the edge cases, so numpy's overflow warnings are expected.
    np.seterr(over="ignore", invalid="ignore")

    x = f16_edges(rng)
    q = quants.quantize(x.reshape(1, -1), T.F16)
    w.case("f16_quantize_edges", "f16", "quantize", x.size, le_f32(x), q.astype("<f2").tobytes())
    dec = quants.dequantize(q, T.F16)
    w.case("f16_dequantize_edges", "f16", "dequantize", x.size, q.astype("<f2").tobytes(), le_f32(dec))

    x = bf16_edges(rng)
    q = quants.quantize(x.reshape(1, -1), T.BF16)
    w.case("bf16_quantize_edges", "bf16", "quantize", x.size, le_f32(x), q.tobytes())
    dec = quants.dequantize(q, T.BF16)
    w.case("bf16_dequantize_edges", "bf16", "dequantize", x.size, q.tobytes(), le_f32(dec))

    edges = edge_blocks(rng)
    for name, qtype in QUANT_FORMATS:
        q = quants.quantize(edges.reshape(1, -1), qtype)
        w.case(f"{name}_quantize_edges", name, "quantize", edges.size, le_f32(edges), q.tobytes())
        dec = quants.dequantize(q, qtype)  # an inf scale times code 0 is NaN: compared by bits
        w.case(f"{name}_dequantize_edges", name, "dequantize", edges.size, q.tobytes(), le_f32(dec))

    # --- activation formats, from ggml's C reference -------------------------------------
    if not args.skip_ggml:
        lib = load_ggml()
        q = ggml_quantize(lib, "quantize_row_q8_1_ref", edges, edges.size // 32 * 36)
        w.case("q8_1_quantize_edges", "q8_1", "quantize", edges.size, le_f32(edges), q, "ggml")
        x = q8k_edges(rng)
        q = ggml_quantize(lib, "quantize_row_q8_K_ref", x, x.size // 256 * 292)
        w.case("q8_k_quantize_edges", "q8_k", "quantize", x.size, le_f32(x), q, "ggml")
        dec = ggml_dequantize(lib, "dequantize_row_q8_K", q, x.size)
        w.case("q8_k_dequantize_edges", "q8_k", "dequantize", x.size, q, le_f32(dec), "ggml")

    w.finish()
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(w.rows)} cases, {total} bytes, to {os.path.relpath(out, Path.cwd())}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
