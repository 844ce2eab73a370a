#!/usr/bin/env bash
# The full translator run of issue 13 (see training/translator/PLAN.md). From the repository root:
#
#   nohup bash training/translator/full_run.sh > work/translator/full_run.out 2>&1 &
#   tail -f work/translator/train.log
#
# Resumable: rerun the same line after an interruption. Data preparation runs only when its
# outputs are missing (it is deterministic); training continues from work/translator/ckpt and
# counts the minutes already spent (state.json). Nothing under models/ is touched: the model is
# exported to work/translator/export/, evaluated there (with Apertium on the same sentences),
# and moved into models/translator/<version>/ by hand once checked
# (mv work/translator/export models/translator/<version>; the version is in its metadata.json).
#
# Environment: MINUTES (training budget, default 135), THREADS (default 2), W (work directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
W=${W:-work/translator}
MINUTES=${MINUTES:-135}
THREADS=${THREADS:-2}
EXPORT=$W/export
mkdir -p "$W"
export TRANSLATOR_WORK=$W

stamp() { echo "$(date +%H:%M:%S) full_run: $*"; }

if ! command -v apertium >/dev/null || ! command -v lt-print >/dev/null || ! command -v lt-proc >/dev/null; then
  stamp "installing apertium-eng-spa lttoolbox-dev (Debian)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq apertium-eng-spa lttoolbox-dev >/dev/null
fi

# 1. Data (about 2 minutes; skipped when present)
if [ ! -s "$W/spm.model" ] || [ ! -s "$W/test.rare.tsv" ]; then
  stamp "prepare: grouped split, SentencePiece 4000 with <dict> and placeholders"
  $PY -m training.translator.prepare --work "$W" --vocab 4000 --symbols
fi
if [ ! -s "$W/lexicon.tsv" ]; then
  stamp "lexicon: apertium-eng-spa bilingual dictionary"
  $PY -m training.translator.lexicon --out "$W/lexicon.tsv"
fi
if [ ! -s "$W/gettext.iso.tsv" ]; then
  stamp "gettext: iso-codes catalogue (countries, languages, currencies)"
  $PY -m training.translator.gettext_pairs --only-packages iso-codes --out "$W/gettext.iso.tsv"
fi
sha256sum "$W"/{train,dev,test,dev.rare,test.rare}.tsv > "$W/split.sha256"

# 2. Training (MINUTES of wall clock, checkpoints every 5 minutes, resumable)
stamp "train: $MINUTES minutes on $THREADS threads"
$PY -m training.translator.train --work "$W" --minutes "$MINUTES" --threads "$THREADS" \
  --precision float32 --d-model 192 --heads 4 --ff 768 --enc-layers 6 --dec-layers 3 \
  --dropout 0.2 --smoothing 0.1 --tokens 2048 --lr 1e-3 --warmup 800 \
  --ema 0.999 --snapshots 6 --ckpt-minutes 5 \
  --sp-alpha 0.3 --sp-alpha-target 0.5 --sp-nbest -1 \
  --lexicon "$W/lexicon.tsv" "$W/gettext.iso.tsv" --lexicon-weight 0.3 --lexicon-tag \
  --placeholders --placeholder-keep-names 0.8

# 3. Export (average of the last 3 EMA snapshots, float16) into the staging directory
stamp "export to $EXPORT"
rm -rf "$EXPORT"
$PY -m training.translator.export --work "$W" --out "$EXPORT" --average 3

# 4. Evaluation: ours (greedy, beam 4) and Apertium on exactly the same sentences
stamp "evaluate dev, dev.rare, test, test.rare"
$PY -m training.translator.evaluate --work "$W" --model-dir "$EXPORT" --threads "$THREADS" \
  --split dev dev.rare --beam 1 4 --card --hyp-dir "$W/hyp" --json "$W/eval_dev.json"
$PY -m training.translator.evaluate --work "$W" --model-dir "$EXPORT" --threads "$THREADS" \
  --split test test.rare --beam 1 4 --card --hyp-dir "$W/hyp" --json "$W/eval_test.json"

# 5. Pass-through with and without passthrough.py (serving uses it)
$PY -m training.translator.passthrough_baseline --model-dir "$EXPORT" --json "$W/passthrough_raw.json" | grep examples
$PY -m training.translator.passthrough_baseline --model-dir "$EXPORT" --protect --json "$W/passthrough_protect.json" | grep examples

# 6. The low-confidence threshold, calibrated on dev (test only reported), and the model card
$PY -m training.translator.calibrate --work "$W" --model-dir "$EXPORT" --threads "$THREADS" --card
$PY -m training.translator.card --work "$W" --model-dir "$EXPORT"

stamp "done: version $($PY -c "import json;print(json.load(open('$EXPORT/metadata.json'))['version'])") in $EXPORT"
