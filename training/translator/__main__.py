"""One command for the whole translator: split + tokenizer, train, export, evaluate, model card.

    .venv/bin/python -m training.translator --minutes 100 [--prepare-args "..."] [train.py flags]

Resumable: rerunning continues training from the last checkpoint in work/translator/ckpt
(delete work/translator to start over). Steps can also be run one by one:
prepare.py, train.py, export.py, evaluate.py --card, card.py. Flags this command does not know
go to train.py unchanged (e.g. --sp-alpha 0.5 --ema 0.999 --enc-layers 6); --prepare-args is
split like a shell line and given to prepare.py, which runs only if work/spm.model is missing.
See training/translator/PLAN.md for the full run.
"""
import argparse
import shlex

from training.translator import card, evaluate, export, paths, prepare, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=100.0, help="training wall-clock budget")
    ap.add_argument("--work", default=str(paths.WORK))
    ap.add_argument("--out", default=None, help="model version directory to export to "
                                                 "(default: the served one)")
    ap.add_argument("--prepare-args", default="", help="flags for prepare.py, as one string")
    ap.add_argument("--average", default="5", help="snapshots export.py averages")
    args, train_args = ap.parse_known_args(argv)
    work = ["--work", args.work]
    if not (prepare.Path(args.work) / "spm.model").exists():
        prepare.main(work + shlex.split(args.prepare_args))
    train.main(work + ["--minutes", str(args.minutes)] + train_args)
    out = ["--out", args.out] if args.out else []
    model = ["--model-dir", args.out] if args.out else []
    export.main(work + out + ["--average", args.average])
    evaluate.main(work + model + ["--split", "dev", "dev.rare", "--beam", "1", "4", "--card"])
    evaluate.main(work + model + ["--split", "test", "test.rare", "--beam", "1", "4", "--card"])
    card.main(work + model)


if __name__ == "__main__":
    main()
