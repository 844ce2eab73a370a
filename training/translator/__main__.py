"""One command for the whole translator: split + tokenizer, train, export, evaluate, model card.

    .venv/bin/python -m training.translator --minutes 100

Resumable: rerunning continues training from the last checkpoint in work/translator/ckpt
(delete work/translator to start over). Steps can also be run one by one:
prepare.py, train.py, export.py, evaluate.py --card, card.py.
"""
import argparse

from training.translator import card, evaluate, export, prepare, train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=100.0, help="training wall-clock budget")
    args = ap.parse_args()
    if not (prepare.paths.WORK / "spm.model").exists():
        prepare.main([])
    train.main(["--minutes", str(args.minutes)])
    export.main([])
    evaluate.main(["--split", "dev", "--beam", "1", "4", "--no-apertium", "--card"])
    evaluate.main(["--split", "test", "--beam", "1", "4", "--card"])
    card.main([])


if __name__ == "__main__":
    main()
