#!/usr/bin/env python3
"""Reference values for the multi-label losses and metrics.

Writes tests/fixtures/multilabel_reference.json:
  losses:  logits/targets/pos_weight and the mean losses from PyTorch (BCEWithLogitsLoss,
           with and without pos_weight), focal loss by torchvision's sigmoid_focal_loss
           formula, and ASL by the formula of Ridnik et al.'s reference code (mean reduction)
  metrics: probabilities/targets and scikit-learn's metrics (zero_division=0) at two thresholds

Run: python scripts/make_head_fixtures.py
"""
import json
import os

import numpy as np
import torch
from sklearn.metrics import (f1_score, hamming_loss, precision_recall_fscore_support,
                             precision_score, recall_score)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def focal(logits, y, gamma, alpha):
    # torchvision.ops.sigmoid_focal_loss, reduction="mean"
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha is not None and alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean()


def asl(logits, y, gamma_neg, gamma_pos, clip, eps=1e-8):
    # AsymmetricLoss.forward from the ASL reference code, mean instead of sum
    xs_pos = torch.sigmoid(logits)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        g = gamma_pos * y + gamma_neg * (1 - y)
        loss = loss * torch.pow(1 - pt, g)
    return -loss.mean()


def losses():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64) * 3
    logits[0, 0], logits[1, 1], logits[2, 2] = 40.0, -40.0, 0.0
    y = (torch.rand(6, 7, generator=g) < 0.35).double()
    pw = torch.rand(7, generator=g, dtype=torch.float64) * 5 + 0.5
    bce = torch.nn.BCEWithLogitsLoss()
    return {
        "logits": logits.tolist(), "targets": y.tolist(), "pos_weight": pw.tolist(),
        "bce": bce(logits, y).item(),
        "bce_pos_weight": torch.nn.BCEWithLogitsLoss(pos_weight=pw)(logits, y).item(),
        "focal_g2": focal(logits, y, 2.0, None).item(),
        "focal_g2_a025": focal(logits, y, 2.0, 0.25).item(),
        "asl_default": asl(logits, y, 4.0, 0.0, 0.05).item(),
        "asl_g1_g2_noclip": asl(logits, y, 2.0, 1.0, 0.0).item(),
    }


def metrics():
    rng = np.random.default_rng(5)
    n, l = 40, 6
    y = (rng.random((n, l)) < 0.3).astype(int)
    y[0] = 0            # an example with no labels
    y[:, 5] = 0         # a label with no positives
    probs = np.clip(y * 0.35 + rng.random((n, l)) * 0.7, 0, 1)
    out = {"probs": probs.tolist(), "targets": y.tolist(), "at": []}
    for t in (0.5, 0.3):
        pred = (probs >= t).astype(int)
        kw = dict(zero_division=0)
        p, r, f, s = precision_recall_fscore_support(y, pred, average=None, **kw)
        entry = {"threshold": t}
        for avg in ("micro", "macro", "samples"):
            entry[f"{avg}_precision"] = precision_score(y, pred, average=avg, **kw)
            entry[f"{avg}_recall"] = recall_score(y, pred, average=avg, **kw)
            entry[f"{avg}_f1"] = f1_score(y, pred, average=avg, **kw)
        entry["hamming_loss"] = hamming_loss(y, pred)
        entry["subset_accuracy"] = float((y == pred).all(1).mean())
        entry["per_label"] = {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(),
                              "support": s.tolist()}
        out["at"].append(entry)
    return out


if __name__ == "__main__":
    with open(os.path.join(OUT, "multilabel_reference.json"), "w") as f:
        json.dump({"losses": losses(), "metrics": metrics()}, f, indent=1)
    print("written", os.path.join(OUT, "multilabel_reference.json"))
