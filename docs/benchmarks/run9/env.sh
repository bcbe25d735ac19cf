# sourced by every device call: carried wheels into /tmp/site (kept while the machine is warm), lcopt's sources
R=$PWD
export PYTHONUNBUFFERED=1 TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -f /tmp/site/.ok ] || { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dk/whl/*.whl && touch /tmp/site/.ok; } || exit 1
export PYTHONPATH=$R/src:/tmp/site LCOPT_SHARED_ASSETS=$R/.dk/assets
for x in .dk/assets/models/*/tokenizer.json.xz .dk/assets/longbench/*.jsonl.xz; do [ -f "$x" ] && { [ -f "${x%.xz}" ] || xz -dk "$x"; }; done
M=.dk/assets/models; L=llama-3.1-8b=$M/meta-llama--Llama-3.1-8B-Instruct; N=mistral-nemo-12b=$M/mistralai--Mistral-Nemo-Instruct-2407
