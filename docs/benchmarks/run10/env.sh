# sourced by every device call: carried wheels into /tmp/site (kept while the machine is warm), lcopt's sources
R=$PWD
export PYTHONUNBUFFERED=1 TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
for d in .dka .dkb/whl; do  # call A carries torchao in .dka, call B snakemake and the rest in .dkb/whl
  s=/tmp/site/.ok-${d//\//-}
  ls $d/*.whl >/dev/null 2>&1 && [ ! -f $s ] && { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $d/*.whl && touch $s || exit 1; }
done
export PYTHONPATH=$R/src:/tmp/site LCOPT_SHARED_ASSETS=$R/.dk/assets
for x in .dk/assets/models/*/tokenizer.json.xz .dk/assets/longbench/*.jsonl.xz; do [ -f "$x" ] && { [ -f "${x%.xz}" ] || xz -dk "$x"; }; done
M=.dk/assets/models; L=llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct
