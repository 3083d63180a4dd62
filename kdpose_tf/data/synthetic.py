"""Synthetic articulated people in COCO-17 layout: a small, learnable dataset for `kdpose demo`.

Each figure is a 2-D stick person with body proportions and joint angles drawn from human
ranges (torso lean, shoulder abduction 0-175 deg, elbow flexion 0-145 deg, hip 0-55 deg, knee
0-120 deg, limb foreshortening), seen roughly from the front (its left side on the image right
before the in-plane rotation), with a random scale, position and rotation. Limbs are tapered
polygons with rounded joints, the head an ellipse with eyes, nose and ears drawn at the face
keypoints, the clothes flat, striped or mottled, over gradient / noise backgrounds with shape
and stick clutter; random rectangles or ellipses occlude parts of the figure.

Visibility follows COCO: 2 where the joint's own body part is what is seen at its pixel, 1 where
something else (an occluder, another limb, another person) covers it, 0 (and [0, 0]) outside the
image. Boxes and areas come from each figure's own silhouette (area = OKS scale).

Output: `out_dir/images/NNNNNN.jpg` and `out_dir/annotations.json` (COCO keypoints), written
atomically, so `kdpose_tf.data.coco.read_coco(json_path, image_dir)` reads it.

Example:
>>> ann, images = generate_synthetic_dataset("/tmp/synth", num_images=50, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kdpose_tf.keypoints import COCO17
from kdpose_tf.utils.io import atomic_dir, write_json

# part ids inside one person's label map
TORSO, HEAD, L_UPPER_ARM, L_FOREARM, R_UPPER_ARM, R_FOREARM = 1, 2, 3, 4, 5, 6
L_THIGH, L_SHIN, R_THIGH, R_SHIN, NECK, FACE_MARK = 7, 8, 9, 10, 11, 12
OCCLUDER = 255
# which parts may be seen at each COCO-17 joint for it to count as visible (v = 2)
_JOINT_PARTS = (
    (HEAD, FACE_MARK), (HEAD, FACE_MARK), (HEAD, FACE_MARK), (HEAD, FACE_MARK), (HEAD, FACE_MARK),
    (TORSO, L_UPPER_ARM), (TORSO, R_UPPER_ARM), (L_UPPER_ARM, L_FOREARM), (R_UPPER_ARM, R_FOREARM),
    (L_FOREARM,), (R_FOREARM,), (TORSO, L_THIGH), (TORSO, R_THIGH), (L_THIGH, L_SHIN), (R_THIGH, R_SHIN),
    (L_SHIN,), (R_SHIN,),
)
# clothing groups: 0 shirt, 1 trousers, 2 skin, 3 face marks
_SHIRT, _PANTS, _SKIN, _MARK = 0, 1, 2, 3


def _unit(deg):
    r = np.deg2rad(deg)
    return np.array([np.sin(r), np.cos(r)])  # 0 deg = straight down (image y grows downward)


def _rot(points, deg, center):
    r = np.deg2rad(deg)
    m = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return (np.asarray(points) - center) @ m.T + center


def sample_pose(rng):
    """One plausible front-facing pose in body units (torso length 1, pelvis at the origin).

    Returns a dict: "keypoints" (17, 2) COCO-17 order, "neck", "head_center", "head_axes"
    (rx, ry), "head_angle" (deg), "widths" per limb, "arm_behind" (left, right) flags,
    "sleeves" ("long"/"short") and "legs" ("long"/"shorts").
    """
    kp = np.zeros((17, 2))
    lean = rng.normal(0, 8)
    down = _unit(lean)
    up = -down
    side = np.array([down[1], -down[0]])  # person's left = image +x when upright
    neck = up * 1.0
    sw = rng.uniform(0.55, 0.72) * rng.uniform(0.75, 1.0)  # shoulder width, narrowed by body yaw
    hw = sw * rng.uniform(0.55, 0.75)
    kp[5], kp[6] = neck + side * sw / 2 + down * 0.08, neck - side * sw / 2 + down * 0.08
    kp[11], kp[12] = side * hw / 2, -side * hw / 2
    # arms: angle from the torso's down direction, positive = away from the body
    for s, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        abduct = rng.uniform(-10, 175) if rng.random() < 0.5 else rng.uniform(5, 60)
        flex = rng.uniform(0, 145) * rng.choice([-1, 1], p=[0.7, 0.3])  # usually bends inward/up
        a1 = lean + s * abduct
        a2 = a1 + s * flex
        kp[el] = kp[sh] + _unit(a1) * rng.uniform(0.42, 0.52) * rng.uniform(0.7, 1.0)
        kp[wr] = kp[el] + _unit(a2) * rng.uniform(0.38, 0.46) * rng.uniform(0.7, 1.0)
    for s, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        abduct = rng.uniform(-12, 55) if rng.random() < 0.3 else rng.uniform(-5, 20)
        flex = rng.uniform(0, 120) * rng.choice([-1, 1]) if rng.random() < 0.5 else rng.uniform(-10, 10)
        a1 = lean * 0.3 + s * abduct
        kp[kn] = kp[hp] + _unit(a1) * rng.uniform(0.62, 0.72) * rng.uniform(0.75, 1.0)
        kp[an] = kp[kn] + _unit(a1 + flex) * rng.uniform(0.58, 0.66) * rng.uniform(0.75, 1.0)
    head_angle = lean + rng.normal(0, 10)
    hup = -_unit(head_angle)
    hside = np.array([-hup[1], hup[0]])
    rx, ry = rng.uniform(0.14, 0.18), rng.uniform(0.18, 0.22)
    center = neck + hup * (ry + rng.uniform(0.06, 0.12))
    yaw = rng.uniform(-0.35, 0.35)
    kp[0] = center + hside * (yaw * rx * 1.1) - hup * ry * 0.2  # nose
    kp[1] = center + hside * (rx * 0.38 + yaw * rx * 0.7) + hup * ry * 0.12  # left eye (image right)
    kp[2] = center - hside * (rx * 0.38 - yaw * rx * 0.7) + hup * ry * 0.12
    kp[3] = center + hside * rx * (0.98 - 0.1 * max(yaw, 0)) + hup * ry * 0.05  # left ear
    kp[4] = center - hside * rx * (0.98 + 0.1 * min(yaw, 0)) + hup * ry * 0.05
    thick = rng.uniform(0.85, 1.2)
    widths = {
        "upper_arm": (0.13 * thick, 0.11 * thick), "forearm": (0.1 * thick, 0.075 * thick),
        "thigh": (0.2 * thick, 0.15 * thick), "shin": (0.14 * thick, 0.1 * thick), "neck": 0.13 * thick,
    }
    return {
        "keypoints": kp, "neck": neck, "head_center": center, "head_axes": (rx, ry), "head_angle": head_angle,
        "widths": widths, "arm_behind": tuple(rng.random(2) < 0.2),
        "sleeves": "long" if rng.random() < 0.5 else "short", "legs": "long" if rng.random() < 0.7 else "shorts",
    }


def _limb(mask, a, b, wa, wb, part, shift=4):
    import cv2

    d = b - a
    n = np.hypot(*d)
    if n < 1e-6:
        return
    perp = np.array([-d[1], d[0]]) / n
    poly = np.array([a + perp * wa / 2, b + perp * wb / 2, b - perp * wb / 2, a - perp * wa / 2])
    cv2.fillConvexPoly(mask, np.round(poly * (1 << shift)).astype(np.int32), int(part), cv2.LINE_8, shift)
    for p, w in ((a, wa), (b, wb)):
        cv2.circle(mask, tuple(np.round(p * (1 << shift)).astype(int)), int(round(w / 2 * (1 << shift))),
                   int(part), -1, cv2.LINE_8, shift)


def _render_person(pose, size_hw, scale, angle, offset):
    """Draw one person's part-id map; returns (mask (H,W) uint8, keypoints (17,2) image px, aux)."""
    import cv2

    h, w = size_hw
    tf = lambda p: _rot(np.asarray(p) * scale, angle, np.zeros(2)) + offset  # noqa: E731
    kp = tf(pose["keypoints"])
    neck, head_c = tf(pose["neck"]), tf(pose["head_center"])
    wd = {k: (np.asarray(v) * scale) for k, v in pose["widths"].items()}
    mask = np.zeros((h, w), np.uint8)

    def arm(left):
        sh, el, wr = (5, 7, 9) if left else (6, 8, 10)
        up_id, fo_id = (L_UPPER_ARM, L_FOREARM) if left else (R_UPPER_ARM, R_FOREARM)
        _limb(mask, kp[sh], kp[el], *wd["upper_arm"], up_id)
        _limb(mask, kp[el], kp[wr], *wd["forearm"], fo_id)
        cv2.circle(mask, tuple(np.round(kp[wr]).astype(int)), max(1, int(wd["forearm"][1] * 0.75)), fo_id, -1)

    for left, behind in zip((True, False), pose["arm_behind"]):
        if behind:
            arm(left)
    for hp, kn, an, th, sh in ((11, 13, 15, L_THIGH, L_SHIN), (12, 14, 16, R_THIGH, R_SHIN)):
        _limb(mask, kp[hp], kp[kn], *wd["thigh"], th)
        _limb(mask, kp[kn], kp[an], *wd["shin"], sh)
        foot = kp[an] + (kp[an] - kp[kn]) * 0.08
        cv2.ellipse(mask, tuple(np.round(foot).astype(int)),
                    (max(1, int(wd["shin"][1] * 0.9)), max(1, int(wd["shin"][1] * 0.5))),
                    float(angle), 0, 360, int(sh), -1)
    # torso: shoulders and hips pushed outward so the joints lie inside it
    centre = kp[[5, 6, 11, 12]].mean(0)
    corners = kp[[5, 6, 12, 11]]
    corners = centre + (corners - centre) * 1.12
    cv2.fillConvexPoly(mask, np.round(corners * 16).astype(np.int32), TORSO, cv2.LINE_8, 4)
    _limb(mask, neck, head_c, wd["neck"], wd["neck"], NECK)
    rx, ry = (np.asarray(pose["head_axes"]) * scale)
    cv2.ellipse(mask, tuple(np.round(head_c * 16).astype(int)), (int(rx * 16), int(ry * 16)),
                float(pose["head_angle"] + angle), 0, 360, HEAD, -1, cv2.LINE_8, 4)
    r_eye = max(1, int(round(rx * 0.14)))
    for j in (1, 2):
        cv2.circle(mask, tuple(np.round(kp[j]).astype(int)), r_eye, FACE_MARK, -1)
    nose_a = kp[0] - (head_c - kp[0]) * 0.0
    cv2.circle(mask, tuple(np.round(nose_a).astype(int)), max(1, int(round(rx * 0.1))), FACE_MARK, -1)
    for j in (3, 4):
        cv2.ellipse(mask, tuple(np.round(kp[j]).astype(int)), (max(1, int(rx * 0.16)), max(1, int(ry * 0.25))),
                    float(pose["head_angle"] + angle), 0, 360, HEAD, -1)
    for left, behind in zip((True, False), pose["arm_behind"]):
        if not behind:
            arm(left)
    return mask, kp


def _random_color(rng, lo=20, hi=235):
    return rng.integers(lo, hi, size=3).astype(np.float32)


def _texture(rng, h, w, base):
    """An (h, w, 3) float32 texture around `base`: flat, striped or mottled, with a soft shading ramp."""
    import cv2

    kind = rng.choice(["flat", "stripes", "mottled"], p=[0.4, 0.3, 0.3])
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = base
    if kind == "stripes":
        period = rng.uniform(4, 14)
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = (np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0).astype(np.float32)
        tex += wave[..., None] * (_random_color(rng) - base) * rng.uniform(0.4, 0.9)
    elif kind == "mottled":
        small = rng.normal(0, 30, size=(max(2, h // 12), max(2, w // 12), 3)).astype(np.float32)
        tex += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None] * rng.uniform(-20, 20)
    return tex + ramp + rng.normal(0, 4, size=(h, w, 1)).astype(np.float32)


def _background(rng, h, w, clutter):
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(theta) + yy * np.sin(theta)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = _random_color(rng)[None, None] * (1 - t[..., None]) + _random_color(rng)[None, None] * t[..., None]
    g = int(rng.integers(3, 9))
    img += cv2.resize(rng.normal(0, 25, size=(g, g, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(img)
    for _ in range(int(rng.poisson(clutter))):
        color = tuple(float(c) for c in _random_color(rng, 0, 255))
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        kind = rng.integers(0, 5)
        size = int(rng.uniform(0.04, 0.25) * max(h, w))
        if kind == 0:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p, q, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, p, size // 2 + 1, color, -1 if rng.random() < 0.6 else 2, cv2.LINE_AA)
        elif kind == 2:
            cv2.rectangle(img, p, (p[0] + size, p[1] + int(size * rng.uniform(0.3, 2))), color, -1)
        elif kind == 3:
            cv2.ellipse(img, p, (size // 2 + 1, size // 4 + 1), float(rng.uniform(0, 180)), 0, 360, color, -1,
                        cv2.LINE_AA)
        else:  # a stray limb-like stick, so thick bars alone do not mean "person"
            q = np.array(p) + _unit(rng.uniform(0, 360)) * size * 1.5
            m = np.zeros((h, w), np.uint8)
            _limb(m, np.array(p, float), q, size * 0.25, size * 0.18, 1)
            img[m > 0] = color
    return img


def render_scene(rng, image_size=(192, 192), people_per_image=1, occluder_prob=0.3, clutter=6):
    """Render one synthetic image.

    Returns:
        image uint8 RGB (H, W, 3), background uint8 RGB (the same scene without people and
        occluders) and a list of people, each a dict with "keypoints" (17, 2) (0 where v = 0),
        "visibility" (17,) in {0, 1, 2}, "bbox" [x, y, w, h] and "area".
    """
    h, w = image_size
    background = _background(rng, h, w, clutter)
    ids = np.zeros((h, w), np.uint8)
    textures = {}
    people = []
    for p in range(people_per_image):
        pose = sample_pose(rng)
        angle = rng.normal(0, 15) if rng.random() < 0.85 else rng.uniform(-60, 60)
        unit_kp = _rot(np.concatenate([pose["keypoints"], pose["head_center"][None] - [0, 0.2]]),
                       angle, np.zeros(2))
        lo, hi = unit_kp.min(0) - 0.15, unit_kp.max(0) + 0.15
        extent = hi - lo
        frac = rng.uniform(0.5, 0.88) / (1 + 0.35 * (people_per_image - 1))
        scale = min(frac * h / extent[1], 0.95 * w / extent[0])
        size = extent * scale
        slack = np.maximum(np.array([w, h]) - size, 0)
        margin = size * 0.2 if rng.random() < 0.15 else np.zeros(2)  # sometimes partly out of the image
        top_left = -margin + rng.random(2) * (slack + 2 * margin)
        offset = top_left - lo * scale
        mask, kp = _render_person(pose, (h, w), scale, angle, offset)
        own = mask > 0
        if not own.any():
            continue
        ids[own] = (p * 16 + mask[own]).astype(np.uint8)
        skin = np.array(rng.choice([[230, 190, 160], [200, 150, 110], [150, 100, 70], [95, 65, 45]]), np.float32)
        skin += rng.normal(0, 10, 3).astype(np.float32)
        textures[p] = [_texture(rng, h, w, _random_color(rng)), _texture(rng, h, w, _random_color(rng)),
                       np.clip(skin + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.float32),
                       np.full((h, w, 3), rng.uniform(10, 60), np.float32)]
        ys, xs = np.nonzero(own)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        people.append({"index": p, "kp": kp, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                       "area": float(own.sum()), "pose": pose})
    n_occ = int(rng.random() < occluder_prob) + int(rng.random() < occluder_prob * 0.3)
    occ_tex = _texture(rng, h, w, _random_color(rng))
    for _ in range(n_occ if people else 0):
        import cv2

        x, y, bw, bh = people[int(rng.integers(len(people)))]["bbox"]
        ow, oh = bw * rng.uniform(0.3, 0.9), bh * rng.uniform(0.12, 0.35)
        cx, cy = x + rng.uniform(0, bw), y + rng.uniform(0, bh)
        if rng.random() < 0.7:
            cv2.rectangle(ids, (int(cx - ow / 2), int(cy - oh / 2)), (int(cx + ow / 2), int(cy + oh / 2)), OCCLUDER, -1)
        else:
            cv2.ellipse(ids, (int(cx), int(cy)), (int(ow / 2) + 1, int(oh / 2) + 1), float(rng.uniform(0, 180)),
                        0, 360, OCCLUDER, -1)
    image = background.copy()
    group_of = {TORSO: _SHIRT, L_UPPER_ARM: _SHIRT, R_UPPER_ARM: _SHIRT, L_THIGH: _PANTS, R_THIGH: _PANTS,
                HEAD: _SKIN, NECK: _SKIN, FACE_MARK: _MARK}
    for person in people:
        p, pose = person["index"], person["pose"]
        groups = dict(group_of)
        groups.update({L_FOREARM: _SHIRT if pose["sleeves"] == "long" else _SKIN,
                       R_FOREARM: _SHIRT if pose["sleeves"] == "long" else _SKIN,
                       L_SHIN: _PANTS if pose["legs"] == "long" else _SKIN,
                       R_SHIN: _PANTS if pose["legs"] == "long" else _SKIN})
        for part, g in groups.items():
            sel = ids == p * 16 + part
            image[sel] = textures[p][g][sel]
    occ = ids == OCCLUDER
    image[occ] = occ_tex[occ]
    out = []
    for person in people:
        p, kp = person["index"], person["kp"]
        vis = np.zeros(17, np.int64)
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
        for j in np.nonzero(inside)[0]:
            x, y = int(round(kp[j, 0])), int(round(kp[j, 1]))
            vis[j] = 2 if ids[y, x] in {p * 16 + part for part in _JOINT_PARTS[j]} else 1
        if (vis > 0).sum() < 3:
            continue
        out.append({"keypoints": np.where(vis[:, None] > 0, kp, 0.0), "visibility": vis,
                    "bbox": person["bbox"], "area": person["area"]})
    if rng.random() < 0.5:
        import cv2

        image = cv2.GaussianBlur(image, (3, 3), 0)
    to_u8 = lambda a: np.clip(a, 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(image), to_u8(background), out


def _check_args(num_images, image_size, people_per_image, occluder_prob, jpeg_quality):
    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if h < 32 or w < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size!r}")
    if not isinstance(people_per_image, (int, np.integer)) or not 1 <= people_per_image <= 8:
        raise ValueError(f"people_per_image must be an int in [1, 8], got {people_per_image!r}")
    if not 0 <= occluder_prob <= 1:
        raise ValueError(f"occluder_prob must be in [0, 1], got {occluder_prob!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality!r}")
    return h, w


def generate_synthetic_dataset(out_dir, num_images=600, image_size=(192, 192), seed=0, people_per_image=1,
                               occluder_prob=0.3, clutter=6, jpeg_quality=90, progress=True):
    """Write a synthetic COCO-17 keypoint dataset of stick-figure people.

    Args:
        out_dir: folder to create; holds `images/` and `annotations.json` (replaced atomically).
        num_images: number of images. Default 600.
        image_size: (height, width) of every image. Default (192, 192).
        seed: random seed; the same seed gives byte-identical output. Default 0.
        people_per_image: figures per image (1-8). Default 1.
        occluder_prob: probability of an occluding shape over a figure. Default 0.3.
        clutter: mean number of background shapes. Default 6.
        jpeg_quality: JPEG quality. Default 90.
        progress: tqdm bar. Default True.

    Returns:
        (annotation_json_path, image_dir) as Paths.
    """
    import cv2
    from tqdm.auto import tqdm

    h, w = _check_args(num_images, image_size, people_per_image, occluder_prob, jpeg_quality)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    images, annotations = [], []
    with atomic_dir(image_dir) as tmp:
        for i in tqdm(range(num_images), desc="synthetic", unit="img", disable=not progress):
            rng = np.random.default_rng([seed, i])
            image, _, people = render_scene(rng, (h, w), people_per_image, occluder_prob, clutter)
            name = f"{i + 1:06d}.jpg"
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for synthetic image {name}")
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(buf.tobytes())
            images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            for person in people:
                trip = np.concatenate([person["keypoints"], person["visibility"][:, None]], 1)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                    "bbox": [round(v, 2) for v in person["bbox"]], "area": person["area"],
                    "num_keypoints": int((person["visibility"] > 0).sum()),
                    "keypoints": [round(float(v), 2) if k % 3 != 2 else int(v) for k, v in enumerate(trip.ravel())],
                })
    dataset = {
        "info": {"description": "kdpose_tf synthetic stick-figure people", "seed": int(seed),
                 "image_size": [h, w], "num_images": int(num_images)},
        "images": images,
        "annotations": annotations,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17.names),
            "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton],
        }],
    }
    ann_path = write_json(out_dir / "annotations.json", dataset, indent=None)
    return Path(ann_path), image_dir
