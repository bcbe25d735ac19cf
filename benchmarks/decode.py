"""Decode and prefill speed of lcopt's engines, transformers' own paths and torchao's int4 against the GPU's
rooflines: the command line of `lcopt.decode_benchmark` (its docstring, or `--help`, says what it measures).

  python benchmarks/decode.py --model llama-3.1-8b=path/to/config_dir --contexts 4096 32768 131072 \\
      --paths fast:none fast:kivi4 hf-static int4:fast:none torchao4:hf-compiled --out decode.json

lcopt must be importable (`make setup`, or PYTHONPATH=src from the repository's root).
"""

from lcopt.decode_benchmark import main

if __name__ == "__main__":
    main()
