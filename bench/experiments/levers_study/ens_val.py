"""Validation accuracy of single runs and of their probability-averaged ensembles (protocol split)."""
import itertools, sys, numpy as np
from loraclf.config import load_config
from loraclf.data import load_splits
from loraclf.inference import Classifier
runs = sys.argv[1:]
cfg = load_config(f"{runs[0]}/config.yaml")
splits = load_splits(cfg.data, cfg.train.seed)
val = splits.validation
y = np.array(val.labels)
P = {}
for r in runs:
    clf = Classifier.from_run_dir(r, device="cpu")
    P[r] = clf.predict_proba(val.texts)
    print(f"{r}: val {100*(P[r].argmax(1)==y).mean():.2f}", flush=True)
for k in range(2, len(runs)+1):
    for combo in itertools.combinations(runs, k):
        p = sum(P[r] for r in combo) / k
        print(f"ensemble {' + '.join(combo)}: {100*(p.argmax(1)==y).mean():.2f}")
np.savez("val_probs.npz", y=y, **{r.replace('/','_'): P[r] for r in runs})
