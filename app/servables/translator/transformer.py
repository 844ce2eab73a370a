"""Encoder-decoder Transformer shared by training and serving.

The architecture (pre-layer-norm, tied embeddings, sinusoidal positions) is defined once here.
Training (training/translator/train.py) calls the model on padded batches; serving
(the translator servable, model.py) uses :class:`Decoder`, which wraps the same layers in ``tf.function``
incremental decoders with a key/value cache: greedy search and beam search with length
normalisation, batched, stopping when every row has produced end-of-sentence.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import keras

PAD, UNK, BOS, EOS = 0, 1, 2, 3
NEG = -1e9


def positional_table(max_len: int, d_model: int) -> np.ndarray:
    pos = np.arange(max_len)[:, None]
    i = np.arange(d_model // 2)[None, :]
    angle = pos / np.power(10000.0, 2 * i / d_model)
    table = np.zeros((max_len, d_model), np.float32)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return table


class Attention(keras.layers.Layer):
    def __init__(self, d_model, heads, dropout, **kw):
        super().__init__(**kw)
        self.d_model, self.heads, self.dh = d_model, heads, d_model // heads
        self.q = keras.layers.Dense(d_model, name="q")
        self.k = keras.layers.Dense(d_model, name="k")
        self.v = keras.layers.Dense(d_model, name="v")
        self.o = keras.layers.Dense(d_model, name="o")
        self.drop = keras.layers.Dropout(dropout)

    def split(self, x):  # [B, T, d] -> [B, h, T, dh]
        b = tf.shape(x)[0]
        return tf.transpose(tf.reshape(x, [b, -1, self.heads, self.dh]), [0, 2, 1, 3])

    def attend(self, q, k, v, bias, training=False):
        w = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self.dh))
        if bias is not None:
            w = w + tf.cast(bias, w.dtype)
        w = self.drop(tf.nn.softmax(w, axis=-1), training=training)
        out = tf.transpose(tf.matmul(w, v), [0, 2, 1, 3])
        return self.o(tf.reshape(out, [tf.shape(out)[0], -1, self.d_model]))

    def call(self, x, memory, bias, training=False):
        return self.attend(self.split(self.q(x)), self.split(self.k(memory)),
                           self.split(self.v(memory)), bias, training)


class FeedForward(keras.layers.Layer):
    def __init__(self, d_model, ff, dropout, **kw):
        super().__init__(**kw)
        self.w1 = keras.layers.Dense(ff, activation="relu", name="w1")
        self.w2 = keras.layers.Dense(d_model, name="w2")
        self.drop = keras.layers.Dropout(dropout)

    def call(self, x, training=False):
        return self.w2(self.drop(self.w1(x), training=training))


class EncoderLayer(keras.layers.Layer):
    def __init__(self, d_model, heads, ff, dropout, **kw):
        super().__init__(**kw)
        self.ln1 = keras.layers.LayerNormalization(epsilon=1e-6, name="ln1")
        self.att = Attention(d_model, heads, dropout, name="att")
        self.ln2 = keras.layers.LayerNormalization(epsilon=1e-6, name="ln2")
        self.ffn = FeedForward(d_model, ff, dropout, name="ffn")
        self.drop = keras.layers.Dropout(dropout)

    def call(self, x, bias, training=False):
        h = self.ln1(x)
        x = x + self.drop(self.att(h, h, bias, training=training), training=training)
        return x + self.drop(self.ffn(self.ln2(x), training=training), training=training)


class DecoderLayer(keras.layers.Layer):
    def __init__(self, d_model, heads, ff, dropout, **kw):
        super().__init__(**kw)
        self.ln1 = keras.layers.LayerNormalization(epsilon=1e-6, name="ln1")
        self.self_att = Attention(d_model, heads, dropout, name="self_att")
        self.ln2 = keras.layers.LayerNormalization(epsilon=1e-6, name="ln2")
        self.cross = Attention(d_model, heads, dropout, name="cross")
        self.ln3 = keras.layers.LayerNormalization(epsilon=1e-6, name="ln3")
        self.ffn = FeedForward(d_model, ff, dropout, name="ffn")
        self.drop = keras.layers.Dropout(dropout)

    def call(self, x, enc, self_bias, src_bias, training=False):
        h = self.ln1(x)
        x = x + self.drop(self.self_att(h, h, self_bias, training=training), training=training)
        x = x + self.drop(self.cross(self.ln2(x), enc, src_bias, training=training), training=training)
        return x + self.drop(self.ffn(self.ln3(x), training=training), training=training)


class Transformer(keras.Model):
    """Pre-LN encoder-decoder with one embedding matrix shared by source, target and output."""

    def __init__(self, vocab_size, d_model=256, heads=4, ff=1024, enc_layers=3, dec_layers=3,
                 dropout=0.1, max_len=512, **kw):
        super().__init__(**kw)
        self.config = dict(vocab_size=vocab_size, d_model=d_model, heads=heads, ff=ff,
                           enc_layers=enc_layers, dec_layers=dec_layers, dropout=dropout,
                           max_len=max_len)
        self.d_model = d_model
        self.emb = keras.layers.Embedding(
            vocab_size, d_model, name="emb",
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d_model ** -0.5))
        self.pos = tf.constant(positional_table(max_len, d_model))
        self.enc_layers = [EncoderLayer(d_model, heads, ff, dropout, name=f"enc{i}")
                           for i in range(enc_layers)]
        self.dec_layers = [DecoderLayer(d_model, heads, ff, dropout, name=f"dec{i}")
                           for i in range(dec_layers)]
        self.enc_ln = keras.layers.LayerNormalization(epsilon=1e-6, name="enc_ln")
        self.dec_ln = keras.layers.LayerNormalization(epsilon=1e-6, name="dec_ln")
        self.drop = keras.layers.Dropout(dropout)

    def embed(self, ids, offset=0):
        t = tf.shape(ids)[1]
        x = self.emb(ids)
        return x * math.sqrt(self.d_model) + tf.cast(self.pos[offset:offset + t], x.dtype)

    def encode(self, src, training=False):
        src_bias = tf.cast(tf.equal(src, PAD), tf.float32)[:, None, None, :] * NEG
        x = self.drop(self.embed(src), training=training)
        for layer in self.enc_layers:
            x = layer(x, src_bias, training=training)
        return self.enc_ln(x), src_bias

    def logits(self, x):
        x = self.dec_ln(x)
        return tf.matmul(x, tf.cast(self.emb.embeddings, x.dtype), transpose_b=True)

    def decode(self, tgt_in, enc, src_bias, training=False):
        t = tf.shape(tgt_in)[1]
        causal = (1.0 - tf.linalg.band_part(tf.ones([t, t]), -1, 0))[None, None] * NEG
        x = self.drop(self.embed(tgt_in), training=training)
        for layer in self.dec_layers:
            x = layer(x, enc, causal, src_bias, training=training)
        return self.logits(x)

    def call(self, inputs, training=False):
        src, tgt_in = inputs
        enc, src_bias = self.encode(src, training=training)
        return self.decode(tgt_in, enc, src_bias, training=training)

    def build_weights(self):
        """Create all variables by running a tiny batch (needed before loading weights)."""
        self((tf.ones([1, 2], tf.int32), tf.ones([1, 2], tf.int32)))
        return self


def length_penalty(length, alpha):
    """GNMT length normalisation ((5 + len) / 6) ** alpha."""
    return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


class Decoder:
    """Batched incremental decoding over a trained :class:`Transformer` (inference only)."""

    def __init__(self, model: Transformer):
        self.m = model
        self._beam = {}
        # max_len is per row: a row stops at its own limit, so its output never depends on the
        # other rows of the batch (the same as decoding it alone)
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
        self.greedy = tf.function(self._greedy, input_signature=spec, autograph=False)
        # Never emit padding, unknown or begin-of-sentence tokens.
        suppress = np.zeros(model.config["vocab_size"], np.float32)
        suppress[[PAD, UNK, BOS]] = NEG
        self.suppress = tf.constant(suppress)
        self.f = self._fuse()

    def _start(self, src, rows):
        """Encode src, repeat each row `rows` times, precompute cross-attention keys/values."""
        enc, src_bias = self.m.encode(src)
        enc = tf.repeat(enc, rows, axis=0)
        src_bias = tf.repeat(src_bias, rows, axis=0)
        cross = [(l.cross.split(l.cross.k(enc)), l.cross.split(l.cross.v(enc)))
                 for l in self.m.dec_layers]
        n = tf.shape(enc)[0]
        a = self.m.dec_layers[0].self_att
        empty = tf.zeros([n, a.heads, 0, a.dh])
        caches = [(empty, empty) for _ in self.m.dec_layers]
        return cross, src_bias, caches

    def _fuse(self):
        """Inference constants: q/k/v kernels fused, attention scale folded into q, 2-D matmuls.

        A decoding step then runs ~50 ops per layer on [rows, d] tensors instead of the Keras
        layers' 3-D path. Built once, after the weights are loaded."""
        m = self.m
        dh = m.dec_layers[0].self_att.dh
        scale = 1.0 / math.sqrt(dh)
        c = lambda v: tf.constant(v.numpy() if hasattr(v, "numpy") else v)  # noqa: E731
        layers = []
        for l in m.dec_layers:
            a, x = l.self_att, l.cross
            layers.append(dict(
                ln1=(c(l.ln1.gamma), c(l.ln1.beta)),
                wqkv=c(np.concatenate([a.q.kernel.numpy() * scale, a.k.kernel.numpy(), a.v.kernel.numpy()], 1)),
                bqkv=c(np.concatenate([a.q.bias.numpy() * scale, a.k.bias.numpy(), a.v.bias.numpy()])),
                wo=c(a.o.kernel), bo=c(a.o.bias),
                ln2=(c(l.ln2.gamma), c(l.ln2.beta)),
                wq=c(x.q.kernel.numpy() * scale), bq=c(x.q.bias.numpy() * scale),
                wco=c(x.o.kernel), bco=c(x.o.bias),
                ln3=(c(l.ln3.gamma), c(l.ln3.beta)),
                w1=c(l.ffn.w1.kernel), b1=c(l.ffn.w1.bias), w2=c(l.ffn.w2.kernel), b2=c(l.ffn.w2.bias)))
        emb = m.emb.embeddings.numpy()
        return dict(layers=layers, emb=c(emb * math.sqrt(m.d_model)), emb_t=c(emb.T.copy()),
                    ln=(c(m.dec_ln.gamma), c(m.dec_ln.beta)), pos=m.pos)

    @staticmethod
    def _ln(x, gb):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-6) * gb[0] + gb[1]

    def _step(self, tok, t, caches, cross, src_bias):
        """One position for every row: tok [N] -> logits [N, V], caches grown by one."""
        f, heads = self.f, self.m.config["heads"]
        d = self.m.d_model
        n = tf.shape(tok)[0]
        x = tf.gather(f["emb"], tok) + f["pos"][t]
        new = []
        for p, (ck, cv), (xk, xv) in zip(f["layers"], caches, cross):
            q, k, v = tf.split(tf.matmul(self._ln(x, p["ln1"]), p["wqkv"]) + p["bqkv"], 3, axis=1)
            ck = tf.concat([ck, tf.reshape(k, [n, heads, 1, -1])], axis=2)
            cv = tf.concat([cv, tf.reshape(v, [n, heads, 1, -1])], axis=2)
            w = tf.nn.softmax(tf.matmul(tf.reshape(q, [n, heads, 1, -1]), ck, transpose_b=True))
            x = x + tf.matmul(tf.reshape(tf.matmul(w, cv), [n, d]), p["wo"]) + p["bo"]
            q = tf.matmul(self._ln(x, p["ln2"]), p["wq"]) + p["bq"]
            w = tf.nn.softmax(tf.matmul(tf.reshape(q, [n, heads, 1, -1]), xk, transpose_b=True) + src_bias)
            x = x + tf.matmul(tf.reshape(tf.matmul(w, xv), [n, d]), p["wco"]) + p["bco"]
            h = tf.nn.relu(tf.matmul(self._ln(x, p["ln3"]), p["w1"]) + p["b1"])
            x = x + tf.matmul(h, p["w2"]) + p["b2"]
            new.append((ck, cv))
        return tf.matmul(self._ln(x, f["ln"]), f["emb_t"]) + self.suppress, new

    def _cache_shapes(self):
        a = self.m.dec_layers[0].self_att
        s = tf.TensorShape([None, a.heads, None, a.dh])
        return [(s, s) for _ in self.m.dec_layers]

    def _greedy(self, src, max_len):
        b = tf.shape(src)[0]
        cross, src_bias, caches = self._start(src, 1)

        longest = tf.reduce_max(max_len)

        def cond(t, tok, done, logp, length, out, caches):
            return tf.logical_and(t < longest, tf.logical_not(tf.reduce_all(done)))

        def body(t, tok, done, logp, length, out, caches):
            logits, caches = self._step(tok, t, caches, cross, src_bias)
            best = tf.argmax(logits, -1, output_type=tf.int32)
            step_logp = tf.gather(tf.nn.log_softmax(logits), best, batch_dims=1)
            logp = logp + tf.where(done, 0.0, step_logp)
            length = length + tf.where(done, 0, 1)
            nxt = tf.where(done, PAD, best)
            done = tf.logical_or(done, tf.logical_or(tf.equal(nxt, EOS), t + 1 >= max_len))
            return t + 1, nxt, done, logp, length, out.write(t, nxt), caches

        init = (tf.constant(0), tf.fill([b], BOS), tf.zeros([b], tf.bool), tf.zeros([b]),
                tf.zeros([b], tf.int32), tf.TensorArray(tf.int32, size=0, dynamic_size=True), caches)
        shapes = (tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None]),
                  tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape(None),
                  self._cache_shapes())
        _, _, _, logp, length, out, _ = tf.while_loop(cond, body, init, shape_invariants=shapes)
        return tf.reshape(tf.transpose(out.stack()), [b, -1]), logp / tf.cast(tf.maximum(length, 1), tf.float32)

    def beam(self, k: int):
        """The tf.function beam search of width k: fn(src [B,S] int32, max_len [B], alpha) -> (ids [B,T],
        mean log-probability per token of the chosen hypothesis [B], its end token included)."""
        if k not in self._beam:
            spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([], tf.float32)]
            self._beam[k] = tf.function(lambda s, m, a: self._beam_search(s, m, a, k),
                                        input_signature=spec, autograph=False)
        return self._beam[k]

    def _beam_search(self, src, max_len, alpha, k):
        b = tf.shape(src)[0]
        vocab = self.m.config["vocab_size"]
        cross, src_bias, caches = self._start(src, k)
        # Only beam 0 is live at the start, so the first step does not pick k copies.
        scores = tf.tile(tf.constant([[0.0] + [NEG] * (k - 1)]), [b, 1])
        # A finished beam may only continue with PAD, at no cost.
        pad_row = tf.one_hot(PAD, vocab, on_value=0.0, off_value=NEG)
        base = (tf.range(b) * k)[:, None]

        longest = tf.reduce_max(max_len)

        def cond(t, tok, scores, lengths, done, seqs, caches):
            return tf.logical_and(t < longest, tf.logical_not(tf.reduce_all(done)))

        def body(t, tok, scores, lengths, done, seqs, caches):
            logits, caches = self._step(tok, t, caches, cross, src_bias)
            logp = tf.reshape(tf.nn.log_softmax(logits), [b, k, vocab])
            logp = tf.where(done[:, :, None], pad_row[None, None, :], logp)
            raw = scores[:, :, None] + logp
            cand_len = tf.where(done, lengths, t + 1)
            norm = raw / length_penalty(cand_len, alpha)[:, :, None]
            _, idx = tf.math.top_k(tf.reshape(norm, [b, k * vocab]), k)
            beam_idx, nxt = idx // vocab, idx % vocab
            scores = tf.gather(tf.reshape(raw, [b, k * vocab]), idx, batch_dims=1)
            lengths = tf.gather(cand_len, beam_idx, batch_dims=1)
            done = tf.logical_or(tf.gather(done, beam_idx, batch_dims=1), tf.equal(nxt, EOS))
            done = tf.logical_or(done, (t + 1 >= max_len)[:, None])  # this row's own limit
            seqs = tf.concat([tf.gather(seqs, beam_idx, batch_dims=1), nxt[:, :, None]], axis=2)
            rows = tf.reshape(base + beam_idx, [-1])
            caches = [(tf.gather(ck, rows), tf.gather(cv, rows)) for ck, cv in caches]
            return t + 1, tf.reshape(nxt, [-1]), scores, lengths, done, seqs, caches

        init = (tf.constant(0), tf.fill([b * k], BOS), scores, tf.zeros([b, k], tf.int32),
                tf.zeros([b, k], tf.bool), tf.zeros([b, k, 0], tf.int32), caches)
        shapes = (tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None, k]),
                  tf.TensorShape([None, k]), tf.TensorShape([None, k]),
                  tf.TensorShape([None, k, None]), self._cache_shapes())
        _, _, scores, lengths, _, seqs, _ = tf.while_loop(cond, body, init,
                                                         shape_invariants=shapes)
        best = tf.argmax(scores / length_penalty(lengths, alpha), axis=1, output_type=tf.int32)
        mean_logp = (tf.gather(scores, best, batch_dims=1)
                     / tf.cast(tf.maximum(tf.gather(lengths, best, batch_dims=1), 1), tf.float32))
        return tf.gather(seqs, best, batch_dims=1), mean_logp
