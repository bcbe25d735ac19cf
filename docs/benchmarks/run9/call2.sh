# call 2: keep GGUF part A; MPS overlap test; KIVI v2 kernel sweep (short); device tests but SmolLM2's; the 8B decode benchmark (engine, KIVI, int4, eviction)
source .dk/env.sh
mkdir -p /tmp/keep && cp .dka/part /tmp/keep/gga.part && echo "gguf part A kept"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 60 bash .dk/mps.sh 2>&1 | tee $OUT/mps.log
timeout 110 python3 benchmarks/kivi_kernel.py --variants engine v1-528 programs528 regs-free-528 --budget-s 80 --out $OUT/kivi_kernel_run9.json > $OUT/kivi-kernel-run9.log 2>&1; echo "kivi kernel rc=$?"
grep -E "^\| (bf16|kivi)|fastest" $OUT/kivi-kernel-run9.log
timeout 230 python3 -m pytest -m device tests/test_device.py -q -rA -s -k "not smollm2" -p no:cacheprovider > $OUT/device-tests-run9a.log 2>&1; echo "tests rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed|kept|agree" $OUT/device-tests-run9a.log | tail -40
timeout 215 python3 benchmarks/decode.py --model $L --contexts 4096 32768 131072 --paths fast:none fast:kivi4 fast:kivi2 int4:fast:none int4:fast:kivi2 fast:snapkv@2048 fast:snapkv+kivi4@2048 fast:snapkv@8192 fast:snapkv+kivi4@8192 fast:streamingllm@2048 --budget-s 185 --out $OUT/decode_8b_run9.json > $OUT/bench-8b-run9.log 2>&1; echo "bench rc=$?"
grep -E "^\|" $OUT/bench-8b-run9.log
