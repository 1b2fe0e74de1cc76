"""Near-duplicate quality: recall per transform and false positives, weakly vs imagehash.

Eval set = every offline real photo (JPEG q95). Training copies = each photo under each
transform. Recall of a transform = fraction of photos whose transformed copy matches its own
original. False positives = (eval image a, training copy of a different image b) pairs that
match, over all transforms of b. imagehash: plain phash, d <= 10. weakly: phash against the eval
image's variants at DEFAULT_RADIUS. Also prints the curve over radii.

    .venv/bin/python benchmarks/dedup_quality.py [--with-tiles] [--with-lfw]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402
from real_photos import lfw_faces, quadrant_tiles, real_photos  # noqa: E402

from pipeline.dedup import DEFAULT_RADIUS, eval_variants  # noqa: E402
from pipeline.phash import phash  # noqa: E402


def jpeg(img: Image.Image, q: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _resize(img, s):
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)


def _crop_centre(img, f):
    w, h = img.size
    dx, dy = round(w * f / 2), round(h * f / 2)
    return img.crop((dx, dy, w - dx, h - dy))


def _crop_corner(img, f, corner):
    w, h = img.size
    cw, ch = round(w * (1 - f)), round(h * (1 - f))
    x = 0 if corner in (0, 2) else w - cw
    y = 0 if corner in (0, 1) else h - ch
    return img.crop((x, y, x + cw, y + ch))


def _border(img, f, fill):
    return ImageOps.expand(
        img.convert("RGB"), border=max(1, round(f * (img.width + img.height) / 2)), fill=fill
    )


def _text(img, i):
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(8, out.height // 12)
    font = ImageFont.load_default(size=size)
    draw.text(
        (out.width // 20, out.height - 2 * size), f"@user{i} #weakly", fill="white", font=font
    )
    draw.text((out.width // 20, size // 2), "SAMPLE", fill="yellow", font=font)
    return out


# name -> (function(img, i) -> encoded bytes, goal recall); goals from the issue.
TRANSFORMS = {
    "jpeg_q30": (lambda im, i: jpeg(im, 30), 0.95),
    "resize_0.5x": (lambda im, i: jpeg(_resize(im, 0.5)), 0.95),
    "resize_2x": (lambda im, i: jpeg(_resize(im, 2.0)), 0.95),
    "crop_centre_5%": (lambda im, i: jpeg(_crop_centre(im, 0.05)), 0.95),
    "crop_centre_10%": (lambda im, i: jpeg(_crop_centre(im, 0.10)), 0.95),
    "crop_corner_10%": (lambda im, i: jpeg(_crop_corner(im, 0.10, i % 4)), 0.85),
    "border_5%_black": (lambda im, i: jpeg(_border(im, 0.05, "black")), 0.95),
    "border_5%_grey": (lambda im, i: jpeg(_border(im, 0.05, (128, 128, 128))), None),
    "brightness_1.3": (lambda im, i: jpeg(ImageEnhance.Brightness(im).enhance(1.3)), 0.95),
    "greyscale": (lambda im, i: jpeg(im.convert("L")), 0.95),
    "hflip": (lambda im, i: jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), 0.95),
    "rot90": (lambda im, i: jpeg(im.transpose(Image.Transpose.ROTATE_90)), 0.95),
    "text_overlay": (lambda im, i: jpeg(_text(im, i)), 0.85),
    "rotate_5deg": (lambda im, i: jpeg(im.rotate(5, resample=Image.BICUBIC)), None),
}


def _ih(data: bytes) -> int:
    return int(str(imagehash.phash(Image.open(io.BytesIO(data)))), 16)


def evaluate(images, radii):
    n = len(images)
    eval_bytes = [jpeg(im, 95) for _, im in images]
    ih_eval = np.array([_ih(b) for b in eval_bytes], dtype=np.uint64)
    var_h, var_owner = [], []
    for k, b in enumerate(eval_bytes):
        h, _ = eval_variants(b)
        var_h.append(h)
        var_owner.append(np.full(len(h), k))
    var_h, var_owner = np.concatenate(var_h), np.concatenate(var_owner)
    parents = np.array([name.split("/q")[0] for name, _ in images])  # tiles share a parent
    related = parents[:, None] == parents[None, :]  # same photo or tiles of one photo
    res = {}
    for tname, (fn, goal) in TRANSFORMS.items():
        q_bytes = [fn(im, i) for i, (_, im) in enumerate(images)]
        q_ours = np.array([phash(b) for b in q_bytes], dtype=np.uint64)
        q_ih = np.array([_ih(b) for b in q_bytes], dtype=np.uint64)
        # ours: min distance from each query to each eval image's variants -> (query, eval)
        d = np.bitwise_count(q_ours[:, None] ^ var_h[None, :])
        ours = np.full((n, n), 64, dtype=np.int64)
        for k in range(n):
            ours[:, k] = d[:, var_owner == k].min(axis=1)
        ih = np.bitwise_count(q_ih[:, None] ^ ih_eval[None, :]).astype(np.int64)
        res[tname] = (ours, ih, goal)
    return res, related


def report(title, res, related, radii, radius):
    n = related.shape[0]
    neg = ~related
    print(f"\n== {title}: {n} images, {int(neg.sum())} unrelated (eval, query) pairs per transform")
    print(f"{'transform':18s} {'imagehash r10':>14s} {'weakly r' + str(radius):>12s}  goal")
    fp_ours = fp_ih = tot = 0
    misses = []
    for tname, (ours, ih, goal) in res.items():
        r_ih = (np.diag(ih) <= 10).mean()
        r_ours = (np.diag(ours) <= radius).mean()
        flag = "" if goal is None else ("ok" if r_ours >= goal else f"MISSED (goal {goal})")
        print(f"{tname:18s} {r_ih:14.3f} {r_ours:12.3f}  {flag}")
        if goal is not None and r_ours < goal:
            misses.append(tname)
        fp_ours += int((ours[neg] <= radius).sum())
        fp_ih += int((ih[neg] <= 10).sum())
        tot += int(neg.sum())
    print(
        f"false positives: imagehash r10 {fp_ih}/{tot} = {fp_ih / tot:.2e}; "
        f"weakly r{radius} {fp_ours}/{tot} = {fp_ours / tot:.2e}; "
        f"ratio weakly/imagehash = {fp_ours / max(fp_ih, 1):.2f}"
        + (" (imagehash had 0: ratio vs 1)" if fp_ih == 0 else "")
    )
    print("curve (weakly): radius, min recall over goal transforms, mean recall, FP rate")
    goal_t = [t for t, (_, _, g) in res.items() if g is not None]
    for r in radii:
        recalls = [(np.diag(res[t][0]) <= r).mean() for t in goal_t]
        fp = sum(int((res[t][0][neg] <= r).sum()) for t in res) / tot
        print(f"  r={r:2d}  min {min(recalls):.3f}  mean {np.mean(recalls):.3f}  FP {fp:.2e}")
    print("curve (imagehash): radius, min recall, mean recall, FP rate")
    for r in radii:
        recalls = [(np.diag(res[t][1]) <= r).mean() for t in goal_t]
        fp = sum(int((res[t][1][neg] <= r).sum()) for t in res) / tot
        print(f"  r={r:2d}  min {min(recalls):.3f}  mean {np.mean(recalls):.3f}  FP {fp:.2e}")
    return misses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radius", type=int, default=DEFAULT_RADIUS)
    ap.add_argument("--with-tiles", action="store_true", help="add quadrant tiles (labelled)")
    ap.add_argument("--with-lfw", action="store_true", help="add 200 25x25 lfw faces")
    args = ap.parse_args()
    radii = list(range(4, 17, 2))
    photos = real_photos()
    res, related = evaluate(photos, radii)
    report("real photos", res, related, radii, args.radius)
    if args.with_tiles:
        imgs = photos + quadrant_tiles(photos)
        res, related = evaluate(imgs, radii)
        report(
            "real photos + quadrant tiles of them (tiles are crops, not photos)",
            res,
            related,
            radii,
            args.radius,
        )
    if args.with_lfw:
        res, related = evaluate(lfw_faces(), radii)
        report("lfw_subset faces (25x25 real photos)", res, related, radii, args.radius)
    return 0


if __name__ == "__main__":
    sys.exit(main())
