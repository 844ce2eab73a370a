"""Train the English->Spanish Transformer on the splits written by prepare.py.

Fixed seed, fixed padded shapes (length buckets, each compiled once with XLA), label smoothing,
linear warm-up then cosine decay over the wall-clock budget, a
checkpoint every few minutes (resumable: rerun the same command), dev loss/accuracy in the log,
and weight snapshots over the last part of training for checkpoint averaging (export.py).

Small-data options, all off (or at the shipped model's values) by default, so that the default
command reproduces the shipped model's recipe:

  --sp-alpha A [--sp-nbest N] [--sp-alpha-target A]
        SentencePiece subword sampling (unigram "BPE-dropout"): every epoch the training pairs
        are re-segmented with sp.encode(enable_sampling=True, alpha=A, nbest_size=N); the target
        side uses --sp-alpha-target (default: the same A; 0 = off). Dev is never sampled.
        With nbest -1, A=0.1 makes sequences ~1.8x longer and A=0.5 ~1.03x (measured, 8k vocab).
  --ema D
        exponential moving average of the weights (decay D, e.g. 0.999), updated inside the
        compiled step; snapshots (and so export.py) then hold the averaged weights.
  --enc-layers / --dec-layers, --dropout, --smoothing, --d-model, --ff, --heads (as before).
  --lexicon FILE [FILE...] --lexicon-weight W [--lexicon-tag]
        extra pairs (lexicon.py, gettext_pairs.py): each shown W times per epoch on average;
        with --lexicon-tag their source starts with the <dict> piece (prepare.py --symbols).
  --placeholders [--placeholder-keep-names P]
        passthrough.protect_pair on every training pair, fresh each epoch: numbers, URLs, names
        ... that the Spanish copies verbatim become the same placeholder on both sides, so the
        model learns to copy placeholders (serving: passthrough.protect / restore). Needs
        prepare.py --symbols.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from training.translator import paths

BUCKETS = (10, 14, 18, 24, 32, 48, 64)


def read_tsv(path: Path) -> list[tuple[str, str]]:
    return [tuple(row.split("\t")[:2]) for row in path.read_text(encoding="utf-8").splitlines() if row]


def encode_file(sp, path: Path, max_len: int):
    src, tgt = [], []
    for row in path.read_text(encoding="utf-8").splitlines():
        en, es = row.split("\t")
        s, t = sp.encode(en), sp.encode(es)
        if len(s) + 1 <= max_len and len(t) + 1 <= max_len:
            src.append(s)
            tgt.append(t)
    return src, tgt


def encode_pairs(sp, pairs, max_len: int, alpha: float = 0.0, alpha_target: float = 0.0,
                 nbest: int = -1, prefix: list[bool] | None = None, tag_id: int | None = None):
    """Token ids of (English, Spanish) pairs, optionally with subword sampling and a tag piece
    in front of the sources marked in `prefix`; pairs over max_len are dropped."""
    def enc(texts, a):
        if a > 0:
            return sp.encode(list(texts), enable_sampling=True, alpha=a, nbest_size=nbest)
        return sp.encode(list(texts))
    srcs = enc((en for en, _ in pairs), alpha)
    tgts = enc((es for _, es in pairs), alpha_target)
    src, tgt = [], []
    for k, (s, t) in enumerate(zip(srcs, tgts)):
        if prefix is not None and prefix[k]:
            s = [tag_id] + s
        if len(s) + 1 <= max_len and len(t) + 1 <= max_len:
            src.append(s)
            tgt.append(t)
    return src, tgt


def make_batches(src, tgt, tokens: int, rng: np.random.Generator):
    """Group pairs into fixed-shape batches: (src [B,L], tgt_in [B,L], tgt_out [B,L])."""
    from app.servables.translator.transformer import BOS, EOS
    need = np.array([max(len(s), len(t)) + 1 for s, t in zip(src, tgt)])
    bucket = np.searchsorted(BUCKETS, need)
    out = []
    for bi, length in enumerate(BUCKETS):
        idx = np.flatnonzero(bucket == bi)
        rng.shuffle(idx)
        size = max(8, tokens // length // 8 * 8)
        for start in range(0, len(idx), size):
            chunk = idx[start:start + size]
            if len(chunk) < size // 4:  # drop a tiny tail rather than compile a new shape
                continue
            a = np.zeros((size, length), np.int32)
            b = np.zeros((size, length), np.int32)
            c = np.zeros((size, length), np.int32)
            for r, i in enumerate(chunk):
                s, t = src[i], tgt[i]
                a[r, :len(s) + 1] = s + [EOS]
                b[r, :len(t) + 1] = [BOS] + t
                c[r, :len(t) + 1] = t + [EOS]
            out.append((a, b, c))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def build_optimizer(model, learning_rate):
    """Adam as trained. `learning_rate` is a callable, so the optimizer holds no learning-rate
    variable: checkpoints only restore into an optimizer built the same way (export.py)."""
    import keras
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.98,
                                      epsilon=1e-9, clipnorm=1.0)
    optimizer.build(model.trainable_variables)
    return optimizer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=paths.WORK)
    ap.add_argument("--minutes", type=float, default=90.0, help="wall-clock budget for training")
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=768)
    ap.add_argument("--enc-layers", type=int, default=3)
    ap.add_argument("--dec-layers", type=int, default=3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--tokens", type=int, default=2048, help="padded tokens per batch")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=800)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["bfloat16", "float32"], default="bfloat16",
                    help="compute dtype (weights stay float32); the shipped model used bfloat16. Measured "
                         "later on the idle machine: float32 507 ms, bfloat16 559 ms per 2,048-token step")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--snapshots", type=int, default=6, help="weight snapshots kept for averaging")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (tests)")
    ap.add_argument("--sp-alpha", type=float, default=0.0,
                    help="subword sampling smoothing for the source (0 = off, the shipped model)")
    ap.add_argument("--sp-alpha-target", type=float, default=None,
                    help="subword sampling for the target (default: --sp-alpha; 0 = off)")
    ap.add_argument("--sp-nbest", type=int, default=-1, help="subword sampling nbest_size")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0 = off)")
    ap.add_argument("--lexicon", type=Path, nargs="*", default=[],
                    help="extra pair files (TSV English<TAB>Spanish...): lexicon.tsv, gettext.tsv")
    ap.add_argument("--lexicon-weight", type=float, default=0.2,
                    help="times each extra pair is shown per epoch, on average")
    ap.add_argument("--lexicon-tag", action="store_true",
                    help="prefix extra pairs' sources with the <dict> piece (prepare.py --symbols)")
    ap.add_argument("--lexicon-max-rows", type=int, default=0, help="cap per file (0 = all)")
    ap.add_argument("--placeholders", action="store_true",
                    help="teach copying of pass-through placeholders (prepare.py --symbols)")
    ap.add_argument("--placeholder-keep-names", type=float, default=0.8,
                    help="probability that the frequent names (Tom, Mary, John) stay as words")
    ap.add_argument("--init-from", type=Path,
                    help="start from an exported model dir (e.g. models/translator) instead of "
                         "random weights; its config.json and spm.model must match")
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import sentencepiece as spm
    from app.servables.translator.transformer import PAD, Transformer

    keras.utils.set_random_seed(args.seed)
    if args.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    work = args.work
    ckpt_dir, snap_dir = work / "ckpt", work / "snapshots"
    snap_dir.mkdir(parents=True, exist_ok=True)
    log = open(work / "train.log", "a", buffering=1)

    def say(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log.write(line + "\n")

    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    alpha_t = args.sp_alpha if args.sp_alpha_target is None else args.sp_alpha_target
    tag_id = None
    if args.lexicon_tag or args.placeholders:
        from app.servables.translator import passthrough
        from training.translator.lexicon_data import DICT_TAG
        need = ([DICT_TAG] if args.lexicon_tag else []) + (passthrough.PLACEHOLDERS if args.placeholders else [])
        missing = [p for p in need if sp.piece_to_id(p) == sp.unk_id()]
        if missing:
            raise SystemExit(f"spm.model has no piece for {missing[:3]}: run prepare.py --symbols")
        tag_id = sp.piece_to_id(DICT_TAG) if args.lexicon_tag else None
    extra = []
    if args.lexicon:
        from training.translator import lexicon_data
        extra = lexicon_data.read_pairs(args.lexicon, args.lexicon_max_rows)
        say(f"extra pairs {len(extra)} from {', '.join(map(str, args.lexicon))}, weight "
            f"{args.lexicon_weight}{', tagged' if args.lexicon_tag else ''}")
    dynamic = bool(args.sp_alpha > 0 or alpha_t > 0 or extra or args.placeholders)
    corpus = read_tsv(work / "train.tsv")
    if dynamic:
        src, tgt = encode_pairs(sp, corpus, BUCKETS[-1])  # for the log only; epochs re-encode
    else:
        src, tgt = encode_file(sp, work / "train.tsv", BUCKETS[-1])  # the shipped recipe
    dsrc, dtgt = encode_file(sp, work / "dev.tsv", BUCKETS[-1])
    say(f"train pairs {len(src)}, dev pairs {len(dsrc)}")

    def epoch_data(epoch_no: int):
        """This epoch's (src, tgt): the fixed encoding, or a fresh sample of everything."""
        if not dynamic:
            return src, tgt
        import random as _random
        r = _random.Random(args.seed * 1000 + epoch_no)
        pairs = corpus
        if args.placeholders:
            from app.servables.translator import passthrough
            pairs = [passthrough.protect_pair(en, es, r, args.placeholder_keep_names)[:2]
                     for en, es in corpus]
        tagged = [False] * len(pairs)
        if extra:
            from training.translator import lexicon_data
            idx = lexicon_data.sample_indices(len(extra), args.lexicon_weight,
                                              np.random.default_rng(args.seed * 1000 + epoch_no))
            pairs = pairs + [extra[i] for i in idx]
            tagged = tagged + [bool(args.lexicon_tag)] * len(idx)
        t0 = time.time()
        out = encode_pairs(sp, pairs, BUCKETS[-1], args.sp_alpha, alpha_t, args.sp_nbest,
                           tagged if tag_id is not None else None, tag_id)
        say(f"epoch {epoch_no} data: {len(out[0])} pairs ({len(pairs) - len(corpus)} extra), "
            f"{sum(map(len, out[0])) / max(1, len(out[0])):.1f} source tokens/pair, "
            f"encoded in {time.time() - t0:.1f} s")
        return out
    dev_batches = make_batches(dsrc, dtgt, args.tokens, np.random.default_rng(0))

    config = dict(vocab_size=sp.get_piece_size(), d_model=args.d_model, heads=args.heads,
                  ff=args.ff, enc_layers=args.enc_layers, dec_layers=args.dec_layers,
                  dropout=args.dropout)
    (work / "config.json").write_text(json.dumps(config, indent=1))
    recipe = {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
              for k, v in vars(args).items()}
    (work / "train_args.json").write_text(json.dumps(recipe, indent=1))
    model = Transformer(**config).build_weights()
    say(f"parameters: {model.count_params():,}")

    state_path = work / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    progress = tf.Variable(0.0, dtype=tf.float32, trainable=False)  # share of the time budget

    def lr_at(s, p):
        """Linear warm-up over steps, then cosine decay to 5% over the wall-clock budget."""
        warm = tf.minimum(tf.cast(s, tf.float32) / args.warmup, 1.0)
        cosine = 0.05 + 0.95 * 0.5 * (1.0 + tf.cos(math.pi * tf.clip_by_value(p, 0.0, 1.0)))
        return args.lr * warm * cosine

    optimizer = build_optimizer(model, lambda: lr_at(step, progress))
    ema = None
    if args.ema > 0:
        ema = tf.Module()
        ema.vars = [tf.Variable(v.numpy(), trainable=False, name="ema") for v in model.weights]
        ema_decay = tf.constant(args.ema, tf.float32)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                               **({"ema": ema} if ema is not None else {}))
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=2)
    if args.init_from and not manager.latest_checkpoint:
        with np.load(args.init_from / "weights.npz") as data:
            if [str(n) for n in data["names"]] != [v.path for v in model.weights]:
                raise SystemExit(f"{args.init_from} does not match this architecture")
            model.set_weights([data[f"w{i:03d}"].astype(np.float32) for i in range(len(model.weights))])
        say(f"initialised from {args.init_from}")
    if ema is not None and not manager.latest_checkpoint:
        for e, v in zip(ema.vars, model.weights):  # start the average at the initial weights
            e.assign(v)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        say(f"resumed from {manager.latest_checkpoint} at step {int(step)}")

    eps = args.smoothing

    def loss_fn(logits, target):
        logits = tf.cast(logits, tf.float32)
        mask = tf.cast(tf.not_equal(target, PAD), tf.float32)
        lse = tf.reduce_logsumexp(logits, -1)
        gold = tf.gather(logits, target, batch_dims=2)
        nll = lse - gold
        smooth = lse - tf.reduce_mean(logits, -1)
        loss = (1 - eps) * nll + eps * smooth
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), target), tf.float32)
        n = tf.reduce_sum(mask)
        return tf.reduce_sum(loss * mask) / n, tf.reduce_sum(nll * mask), tf.reduce_sum(correct * mask), n

    @tf.function(jit_compile=True, autograph=False)  # no AutoGraph: it re-reads this file
    def train_step(a, b, c):
        with tf.GradientTape() as tape:
            logits = model((a, b), training=True)
            loss, _, _, _ = loss_fn(logits, c)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)
        if ema is not None:
            # Warm-up of the decay (as tf.train.ExponentialMovingAverage with num_updates):
            # early on the average follows the weights closely.
            s = tf.cast(step, tf.float32)
            d = tf.minimum(ema_decay, (1.0 + s) / (10.0 + s))
            for e, v in zip(ema.vars, model.weights):
                e.assign(d * e + (1.0 - d) * tf.cast(v.value, tf.float32))
        return loss

    @tf.function(jit_compile=True, autograph=False)
    def eval_step(a, b, c):
        _, nll, correct, n = loss_fn(model((a, b), training=False), c)
        return nll, correct, n

    def dev_eval():
        def run():
            tot = np.zeros(3)
            for a, b, c in dev_batches:
                tot += np.array([float(x) for x in eval_step(a, b, c)])
            return tot[0] / tot[2], tot[1] / tot[2]
        result = run()
        if ema is not None:  # also score the averaged weights (what export.py ships)
            current = [v.numpy() for v in model.weights]
            for v, e in zip(model.weights, ema.vars):
                v.assign(e.numpy())
            el, ea = run()
            for v, c in zip(model.weights, current):
                v.assign(c)
            say(f"dev with EMA weights: nll {el:.3f} token acc {ea:.3f}")
        return result

    budget = args.minutes * 60.0
    spent = float(state.get("seconds", 0.0))
    epoch = int(state.get("epoch", 0))
    rng = np.random.default_rng(args.seed + epoch)
    start = time.time()
    last_ckpt = last_snap = time.time()
    window, window_t = [], time.time()

    def save_state():
        manager.save(checkpoint_number=int(step))
        state.update(seconds=spent + time.time() - start, epoch=epoch, step=int(step))
        state_path.write_text(json.dumps(state, indent=1))

    def snapshot():
        path = snap_dir / f"step{int(step):07d}.npz"
        np.savez(path, *[v.numpy() for v in (ema.vars if ema is not None else model.weights)])
        for old in sorted(snap_dir.glob("step*.npz"))[:-args.snapshots]:
            old.unlink()
        say(f"snapshot {path.name}")

    batches_per_epoch = None
    done = False
    while not done:
        esrc, etgt = epoch_data(epoch)
        batches = make_batches(esrc, etgt, args.tokens, rng)
        batches_per_epoch = len(batches)
        for a, b, c in batches:
            progress.assign((spent + time.time() - start) / budget)
            loss = float(train_step(a, b, c))
            window.append(loss)
            elapsed = spent + time.time() - start
            s = int(step)
            if s % 100 == 0:
                dt = (time.time() - window_t) / len(window)
                say(f"epoch {epoch} step {s} loss {np.mean(window):.3f} "
                    f"lr {float(lr_at(step, progress)):.2e} {dt * 1000:.0f} ms/step "
                    f"elapsed {elapsed / 60:.1f}/{args.minutes:.0f} min")
                window, window_t = [], time.time()
            if elapsed >= 0.85 * budget and time.time() - last_snap >= budget / 40:
                snapshot()
                last_snap = time.time()
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save_state()
                last_ckpt = time.time()
            if elapsed >= budget or (args.max_steps and s >= args.max_steps):
                done = True
                break
        else:
            epoch += 1
            rng = np.random.default_rng(args.seed + epoch)
            dl, da = dev_eval()
            say(f"end of epoch {epoch}: dev nll {dl:.3f} dev token acc {da:.3f} "
                f"({batches_per_epoch} batches)")
    dl, da = dev_eval()
    say(f"finished at step {int(step)}: dev nll {dl:.3f} dev token acc {da:.3f}")
    snapshot()
    save_state()


if __name__ == "__main__":
    main()
