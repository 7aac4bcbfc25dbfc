#!/usr/bin/env bash
# One prepared GPU session (run on a CUDA machine from the repo root; see README "Benchmarks").
#   MINILM_DIR: a MiniLM model dir (or model.bf16.safetensors + tokenizer files, restored to fp32 here)
#   AG_DIR:     AG News train.csv/test.csv (original layout)
#   OUT:        where results go
# It runs: (1) bench/train_speed.py with a RoBERTa-base-sized model, (2) the default preset on all training
# rows (single-GPU throughput), (3) the sweep of LoRA settings on MiniLM behind configs/default.yaml,
# (4) the study's seed.yaml preset on all training rows.
set -uo pipefail
MINILM_DIR=${MINILM_DIR:-.devcarry/minilm}
AG_DIR=${AG_DIR:-.devcarry/ag_news}
OUT=${OUT:-/tmp/out}; export OUT
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"

# MiniLM: restore fp32 weights when only the bf16 copy travelled (the device has no network).
MODEL=/tmp/minilm
mkdir -p $MODEL && cp "$MINILM_DIR"/*.json "$MINILM_DIR"/vocab.txt $MODEL/
if [ -f "$MINILM_DIR/model.safetensors" ]; then cp "$MINILM_DIR/model.safetensors" $MODEL/; else
$PY - "$MINILM_DIR" $MODEL <<'PYEOF'
import sys, torch
from safetensors.torch import load_file, save_file
sd = load_file(sys.argv[1] + "/model.bf16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, sys.argv[2] + "/model.safetensors")
PYEOF
fi

# Subsets: the MiniLM test's 3,000 rows (every 3rd) and the first 1,000 test rows.
$PY - "$AG_DIR" <<'PYEOF'
import csv, sys
rows = list(csv.reader(open(sys.argv[1] + "/train.csv", newline="", encoding="utf-8")))
csv.writer(open("/tmp/ag3k.csv", "w", newline=""), quoting=csv.QUOTE_ALL).writerows(rows[::3][:3000])
test = list(csv.reader(open(sys.argv[1] + "/test.csv", newline="", encoding="utf-8")))
csv.writer(open("/tmp/agtest1k.csv", "w", newline=""), quoting=csv.QUOTE_ALL).writerows(test[:1000])
PYEOF

summ() { $PY - "$1" "$2" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[2] + "/metrics.json"))
keys = ["val_accuracy", "test_accuracy", "test_macro_f1", "train_seconds", "step_seconds", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb", "precision", "trainable_params", "global_step"]
row = {"name": sys.argv[1], **{k: m.get(k) for k in keys}}
print("RESULT", json.dumps(row))
import os; open(os.environ["OUT"] + "/gpu_runs.jsonl", "a").write(json.dumps(row) + "\n")
PYEOF
}
run() {  # name, then loraclf train arguments
  local name=$1; shift
  $PY -m loraclf.cli train --model $MODEL --out /tmp/runs/$name --overwrite train.progress=false "$@" > /tmp/$name.log 2>&1 \
    && summ $name /tmp/runs/$name || { echo "FAILED $name"; tail -5 /tmp/$name.log; }
}

# (1) Speed: baseline (HF Trainer + PEFT, fp16) vs loraclf, RoBERTa-base-sized random model.
if [ -f bench/train_speed.py ]; then
  timeout ${BENCH_TIMEOUT:-200} $PY bench/train_speed.py --model random-roberta-base --tokenizer $MODEL --device cuda \
    --rows ${BENCH_ROWS:-3000} --eval-rows 2000 --skip-memory --data-dir "$AG_DIR" --json "$OUT/train_speed_cuda.json" || echo "bench failed"
fi

# (2) The default preset on all 10,429 training rows (90/10 split) and the full 7,600-row test set.
run full_default --config configs/default.yaml --train-file "$AG_DIR/train.csv" --test-file "$AG_DIR/test.csv"
cp /tmp/runs/full_default/metrics.json "$OUT/full_default_metrics.json" 2>/dev/null


# (3) The sweep behind configs/default.yaml: 1 epoch over the test's 3,000 rows, scored on 1,000 test rows.
# default.yaml already trains the pooler, so the pooler comparison it cites is the run without it.
D="--config configs/default.yaml --train-file /tmp/ag3k.csv --test-file /tmp/agtest1k.csv --epochs 1"
run sw_default $D
run sw_lr5e-4 $D train.lr=5e-4
run sw_lr2e-3 $D train.lr=2e-3
run sw_qkvd $D "lora.target_modules=[query,key,value,dense]"
run sw_no_pooler $D "lora.modules_to_save=[]"
run sw_seed --config configs/seed.yaml --train-file /tmp/ag3k.csv --test-file /tmp/agtest1k.csv --epochs 1 model.max_length=128

# (4) The study's preset on all training rows.
run full_seed --config configs/seed.yaml --train-file "$AG_DIR/train.csv" --test-file "$AG_DIR/test.csv"
