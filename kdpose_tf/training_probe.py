"""A linear probe for the joints an imported model did not predict: their head channels fitted in closed form
before fine-tuning (the first half of LP-FT, Kumar et al., "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR 2022).

An imported COCO-17 network retargeted to LSP-14 (`retarget_keypoints`) keeps the final 1x1 conv of its 12
limb joints and gets randomly initialised channels for LSP's neck and head top. Fine-tuned at the small
learning rate the pretrained joints need (2e-4), those two channels do not catch up: a PP-TinyPose 256x192
fine-tuned 5 epochs on LSP put both joints on the middle of the head (LSP test neck PCK@0.2 21.5 %, head
top 78.4 %, against 86-94 % for the limbs), and its students inherited the neck. Since the head is linear
in the feature it reads, the channels that minimise the heatmap MSE for the current features have a
closed form: ridge regression of the joints' target heatmaps on the feature vectors of labelled crops,

    [w_k; b_k] = argmin sum_{crops n labelling k, cells p} (w_k . f_np + b_k - H_knp)^2 + ridge * |w_k|^2

solved from the (C+1) x (C+1) normal equations accumulated batch by batch (memory does not grow with the
number of crops). The limb channels are left as they are. Plain crops, no augmentation: the probe is a
deterministic function of the model and the people.

Example:
>>> model = import_pose_model("pp_tinypose_256x192", keypoint_set="lsp14")      # doctest: +SKIP
>>> probe_new_joints(model, samples, ("neck", "head_top"))                       # doctest: +SKIP
{'neck': 412, 'head_top': 409}
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from kdpose_tf.data.pipeline import PoseBatches
from kdpose_tf.keypoints import get_keypoint_set


def _feature_model(model):
    """A function images -> the feature the head's final conv reads, for a plain 1x1 `HeatmapHead`."""
    head = model.head
    if getattr(head, "final_kernel", None) != 1 or getattr(head, "tail_layers", None):
        raise ValueError(f"probe_new_joints: {model.name} needs a plain 1x1 HeatmapHead (an imported model); "
                         f"received {type(head).__name__} with final_kernel={getattr(head, 'final_kernel', None)}")

    def features(images):
        feats = model.backbone(images, training=False)
        if model.neck is not None:
            return model.neck(feats)[model.feature_level]
        return feats[model.feature_level]

    return features


def probe_new_joints(model, samples, joints, count=512, ridge=1e-2, batch_size=16, seed=0, progress=True):
    """Fit the final-conv channels of `joints` by ridge regression on labelled crops of `samples` (module doc).

    Args:
        model: a `PoseEstimator` with a plain 1x1 `HeatmapHead` (an imported model); changed in place.
        samples: `PoseSample`s in the model's keypoint set; the first `count` of a seeded shuffle that label
            at least one of `joints` are used.
        joints: joint names (or indices) of the model's keypoint set to fit, e.g. ("neck", "head_top").
        count: crops to fit on (default 512).
        ridge: weight of the L2 penalty on the kernel, relative to the mean diagonal of the feature
            covariance (default 1e-2).
        batch_size: crops per forward pass (default 16).
        seed: of the shuffle (default 0).
        progress: show a tqdm bar (default True).

    Returns:
        {joint name: number of crops that labelled it}. A joint no crop labels is left as it was (0).
    """
    ks = get_keypoint_set(model.keypoint_set)
    names = [ks.names[j] if isinstance(j, (int, np.integer)) else j for j in joints]
    unknown = [n for n in names if n not in ks.names]
    if not names or unknown:
        raise ValueError(f"probe_new_joints: joints must be names of {ks.name} ({list(ks.names)}); received "
                         f"{list(joints)!r}")
    if not (isinstance(count, int) and count > 0) or not ridge > 0:
        raise ValueError(f"probe_new_joints: count must be a positive int and ridge > 0; received count={count!r}, "
                         f"ridge={ridge!r}")
    index = [ks.names.index(n) for n in names]
    order = np.random.default_rng(seed).permutation(len(samples))
    chosen = [samples[i] for i in order if any(samples[i].visibility[j] > 0 for j in index)][:count]
    if not chosen:
        return {n: 0 for n in names}
    features = _feature_model(model)
    batches = PoseBatches(chosen, model.codec, ks, batch_size=batch_size, training=False, shuffle=False)
    # per joint: the (C+1)^2 normal matrix, its (C+1) right side and the crops that labelled it
    normal, right, seen = [0.0] * len(index), [0.0] * len(index), [0] * len(index)
    bar = tqdm(total=len(chosen), desc="probe new joints", unit="person", disable=not progress, leave=False)
    try:
        for b in range(len(batches)):
            images, targets = batches[b]
            f = np.asarray(features(np.asarray(images, np.float32)), np.float64)  # (B, h, w, C)
            heatmaps, weights = np.asarray(targets["heatmaps"]), np.asarray(targets["target_weight"])
            if f.shape[1:3] != heatmaps.shape[1:3]:
                raise ValueError(f"probe_new_joints: the head's feature is {f.shape[1:3]}, the codec's heatmaps "
                                 f"{heatmaps.shape[1:3]}; the head must be a 1x1 conv on the heatmap grid")
            x = np.concatenate([f, np.ones(f.shape[:3] + (1,))], -1)
            for i, j in enumerate(index):
                keep = weights[:, j] > 0
                if not keep.any():
                    continue
                xs = x[keep].reshape(-1, x.shape[-1])
                ys = heatmaps[keep][..., j].reshape(-1).astype(np.float64)
                normal[i] = normal[i] + xs.T @ xs
                right[i] = right[i] + xs.T @ ys
                seen[i] += int(keep.sum())
            bar.update(len(images))
    finally:
        bar.close()
    kernel, bias = model.head.final_conv.get_weights()
    for i, j in enumerate(index):
        if seen[i] == 0:
            continue
        a = normal[i]
        c = a.shape[0] - 1
        penalty = ridge * np.trace(a[:c, :c]) / c
        solution = np.linalg.solve(a + np.diag([penalty] * c + [0.0]), right[i])
        kernel[0, 0, :, j], bias[j] = solution[:c], solution[c]
    model.head.final_conv.set_weights([kernel, bias])
    return dict(zip(names, seen))
