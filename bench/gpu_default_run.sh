set -uo pipefail
export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
M=/tmp/minilm; mkdir -p $M && cp .devcarry/minilm/*.json .devcarry/minilm/vocab.txt $M/
python3 -c "
from safetensors.torch import load_file, save_file
sd = load_file('.devcarry/minilm/model.bf16.safetensors')
save_file({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, '$M/model.safetensors')"
time python3 -m loraclf.cli train --config configs/default.yaml --model $M --train-file .devcarry/ag_news/train.csv --test-file .devcarry/ag_news/test.csv --out /tmp/runs/default-minilm train.progress=false
cp /tmp/runs/default-minilm/metrics.json $OUT/metrics.json; cp /tmp/runs/default-minilm/log.jsonl $OUT/log.jsonl
time python3 -m loraclf.cli evaluate /tmp/runs/default-minilm --data .devcarry/ag_news/test.csv --out $OUT/eval
